"""Hostile values in valid messages against a real master (README, "Fuzzing"; docs/architecture.md, Threat model).

Every field of every message kind a peer can send, at the top and nested (a result's error text, a task's env
value, a heartbeat's cpu_percent), gets each value of tests/hostile.py: the wrong type, 2^63, -1, NaN, a value
nested 1,000 deep, 10 MB of text and control characters. The sender is a raw DEALER registered as worker `fz1`
holding a task really dispatched to it, so hostile results, output and heartbeats reach the code that acts on a
live attempt. Beside it a real worker runs a bystander's tasks, which both can take (so dispatch picks between
two workers by their heartbeat metrics).

After every few cases the master is alive and answers, and the bystander's tasks are acknowledged and done; at
the end the ledger passes SQLite's integrity check and holds no value beyond its bounds, the master's log holds
no traceback, failed commit, raw control character or forged line, and its memory stayed bounded.
The long run is `python tools/fuzz_long.py --hostile`.
"""
from __future__ import annotations

import time

import pytest

from zmqgrid import fields
from zmqgrid import protocol as p
from zmqgrid.master.handlers import Handlers
from zmqgrid.model import SPEC_KEYS

from . import hostile

pytestmark = [pytest.mark.timeout(600), pytest.mark.open_wire]

CHECK_EVERY = 40   # cases between the liveness and bystander checks


SHARDS = 3   # the cases in three parts, each against a master of its own: three processes of the suite share them


@pytest.mark.parametrize("shard", range(SHARDS))
def test_every_field_of_every_message_survives_every_hostile_value(tmp_path, shard):
    run = hostile.HostileRun(tmp_path)
    try:
        cases = hostile.all_cases(run.fz.messages())[shard::SHARDS]
        started = time.monotonic()
        for n, case in enumerate(cases, 1):
            run.send([case])
            if n % CHECK_EVERY == 0 or n == len(cases):
                problem = run.check()
                assert problem is None, f"after {case} (case {n} of {len(cases)}): {problem}"
        grew = run.rss_growth_mib()
        print(f"\nhostile values: {len(cases)} cases in {time.monotonic() - started:.1f}s, master RSS +{grew:.0f} MiB")
        assert grew < 300
    finally:
        run.close()
    assert run.findings() == []


# What the master answers (handlers.handle_query, handle_control): each gets a message of its own in the fuzzer.
QUERIES = {"status", "devices", "tasks", "task", "logs", "schedules", "projects"}
ACTIONS = {"cancel", "watch", "requeue", "drain", "resume", "shutdown", "reload", "schedule", "project"}
# A task spec's keys on the wire: the options of build_spec and what each kind carries.
TASK_KEYS = set(SPEC_KEYS) | {"kind", "command", "source", "filename", "function"}


def filled(spec: fields.Spec, value, path: tuple = ()):
    """The roles (fields.walk's paths) that `value` gives a value to, as tests/hostile.paths walks it: a list's
    first item only, a map's keys by name or as "*" for a Record's other keys."""
    yield path
    if isinstance(spec, fields.List) and isinstance(value, list) and value:
        yield from filled(spec.item, value[0], (*path, "item"))
    elif isinstance(spec, fields.Tuple) and isinstance(value, list):
        for i, (item_spec, item) in enumerate(zip(spec.items, value)):
            yield from filled(item_spec, item, (*path, str(i)))
    elif isinstance(spec, fields.Record) and isinstance(value, dict):
        for key, item in value.items():
            if key in spec.fields:
                yield from filled(spec.fields[key], item, (*path, key))
            elif spec.extra is not None:
                yield from filled(spec.extra, item, (*path, "*"))


def test_the_fuzzers_messages_give_every_field_of_the_schema_a_value():
    """Every field of every kind the master takes from a peer, nested ones included (a Record's other keys as one
    "*"; the keys themselves are not values), every query and action it answers and every task spec key are in
    tests/hostile.base_messages, so the hostile values reach them all."""
    messages = hostile.base_messages("fz1", "incarnation")
    taken = {cls for cls in p.KINDS.values() if hasattr(Handlers, "handle_" + cls.__name__.lower())} | {p.Heartbeat}
    missing = []
    for cls in sorted(taken, key=lambda c: c.__name__):
        mine = [msg for msg in messages.values() if type(msg) is cls]
        given = {(f.name, *role) for msg in mine for f in cls.FIELDS for role in filled(f.spec, getattr(msg, f.name))}
        missing += [f"{cls.__name__}.{'.'.join((f.name, *role))}" for f in cls.FIELDS
                    for role, _ in fields.walk(f.spec) if role[-1:] != ("*key",) and (f.name, *role) not in given]
    assert missing == [], f"fields no hostile value reaches: {missing}"
    assert QUERIES - {m.what for m in messages.values() if isinstance(m, p.Query)} == set()
    assert ACTIONS - {m.action for m in messages.values() if isinstance(m, p.Control)} == set()
    specs = [spec for m in messages.values() if isinstance(m, p.Submit) for spec in (m.tasks[0], m.common)]
    specs += [m.params["spec"] for m in messages.values() if isinstance(m, p.Control) and "spec" in m.params]
    assert TASK_KEYS - {key for spec in specs for key in spec} == set()
