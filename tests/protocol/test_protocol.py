"""Every message kind round-trips, and every malformed frame becomes one ProtocolError naming the fault."""
from __future__ import annotations

import copy
import dataclasses

import msgpack
import pytest

from zmqgrid import fields
from zmqgrid import protocol as p
from zmqgrid.errors import ProtocolError
import os
import time

from zmqgrid.projects.messages import ProjectChunk, ProjectData, ProjectFetch, ProjectPush
from zmqgrid.model import compact_spec, factor_batch, new_task_id, validate_batch, validate_task_spec

SAMPLES = [
    p.Register(device_id="w1", name="W 1", hostname="host", os="Linux", python_version="3.11.7",
               python_executable="/usr/bin/python3", tags=["gpu"], concurrency=3, credit=5, running=[("a", 1)],
               outbox=[], pid=42, version="0.1"),
    p.RegisterAck("inc", 8001, 8002, 1.0, 5.0, [("a", 1)]),
    p.Tasks([{"id": "a", "attempt": 1, "kind": "shell", "command": "true"}], [("b", 1)]),
    p.Results([{"id": "a", "attempt": 1, "state": "done"}], 1, [("b", 1)]),
    p.ResultAck([("a", 1)]),
    p.Heartbeat(device_id="w1", incarnation="inc", seq=7, running=[("a", 1)], held=[], metrics={"cpu_percent": 1.5},
                sent_at=1700000000.0, commands=[3, 4]),
    p.Beacon("inc", 1700000000.0),
    p.Submit(1, [{"kind": "shell", "command": "true"}], True),
    p.Submit(1, [{"id": "a", "args": [1]}], False, {"kind": "python", "function": "m:f"}),
    p.Submit(1, [{"kind": "shell", "command": "true"}], True, {}, True),
    p.SubmitAcks([[1, ["a"]], [2, ["b", "c"]]]),
    p.Query(2, "tasks", {"state": "done"}),
    p.Control(3, "cancel", {"ids": ["a"]}),
    p.Reply(4, {"ids": ["a"]}),
    p.Error(5, "bad_request", "no"),
    p.Finished([{"id": "a", "state": "done"}]),
    p.Command(7, "drain", {}),
    p.Output([("a", 1, "stdout", "line\n")]),
    ProjectPush(8, "myspider", "ab" * 32, 10240, 3),
    ProjectChunk(9, 1, 0, b"\x00tar bytes"),
    ProjectFetch(10, "ab" * 32, 1 << 20, 1 << 20),
    ProjectData(10, "ab" * 32, 1 << 20, 3 << 20, b"\x00tar bytes"),
]


def test_every_kind_has_a_sample_here():
    assert {type(m) for m in SAMPLES} == set(p.KINDS.values())


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: type(m).__name__)
def test_each_message_round_trips_through_its_frames(msg):
    frames = msg.encode()
    assert len(frames) == 2 and frames[0] == bytes([p.VERSION]) + type(msg).KIND
    assert p.decode(frames) == msg
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(msg, dataclasses.fields(msg)[0].name, None)


@pytest.mark.parametrize("kind", [p.Register, p.Heartbeat])
def test_messages_of_many_fields_are_built_with_keywords_only(kind):
    # Register's 14 fields (Heartbeat's 8) hold runs of the same types: a value in the wrong place would still fit
    sample = next(m for m in SAMPLES if type(m) is kind)
    with pytest.raises(TypeError):
        kind(*(getattr(sample, name) for name in kind._names))
    assert p.decode(sample.encode()) == kind(**{name: getattr(sample, name) for name in kind._names})


def with_field(msg: p.Message, name: str, value) -> list[bytes]:
    """The frames of `msg` with the wire value of field `name` replaced by `value`."""
    header, body = msg.encode()
    values = msgpack.unpackb(body)
    values[type(msg)._names.index(name)] = value
    return [header, msgpack.packb(values)]


def sample(kind: type) -> p.Message:
    return next(m for m in SAMPLES if type(m) is kind)


@pytest.mark.parametrize("kind, name", [(p.Register, "running"), (p.Register, "outbox"), (p.RegisterAck, "cancel"),
                                        (p.Tasks, "acks"), (p.Results, "started"), (p.ResultAck, "keys"),
                                        (p.Heartbeat, "running"), (p.Heartbeat, "held")])
def test_task_attempt_pairs_decode_as_tuples_a_set_takes_as_they_are(kind, name):
    # Given [task id, attempt] pairs on the wire, an id of letters and digits and one of the other characters
    frames = with_field(sample(kind), name, [["t1", 1], ["a.b:c-d_e", 1 << 31]])

    # When decoded, then each is a (str, int) tuple: a handler puts them in a set or dict as they come
    keys = getattr(p.decode(frames), name)
    assert keys == [("t1", 1), ("a.b:c-d_e", 1 << 31)] and all(type(key) is tuple for key in keys)
    assert set(keys) == {("t1", 1), ("a.b:c-d_e", 1 << 31)}


def test_output_chunks_decode_as_tuples():
    frames = with_field(sample(p.Output), "chunks", [["t1", 1, "stdout", "a\n"], ["t.2", 3, "stderr", ""]])
    chunks = p.decode(frames).chunks
    assert chunks == [("t1", 1, "stdout", "a\n"), ("t.2", 3, "stderr", "")]
    assert all(type(chunk) is tuple for chunk in chunks)


def test_a_register_weight_sent_as_an_integer_decodes_as_a_float():
    weight = p.decode(with_field(sample(p.Register), "weight", 2)).weight
    assert weight == 2.0 and type(weight) is float


def test_optional_trailing_fields_may_be_left_out():
    assert p.decode([b"\x01S", msgpack.packb([9, []])]) == p.Submit(9, [], False)
    # A Submit without a shared part keeps to the three fields a master before `common` accepts.
    assert msgpack.unpackb(p.Submit(9, [], True).encode()[1]) == [9, [], True]
    # batch_acks needs the fifth field, so `common` goes too, empty when there is none.
    assert msgpack.unpackb(p.Submit(9, [], True, {}, True).encode()[1]) == [9, [], True, {}, True]


@pytest.mark.parametrize("line", [[1], [1, "a"], ["1", ["a"]], [True, ["a"]], "1:a", [1, ["a"], 2]])
def test_a_malformed_submit_acks_line_is_one_protocol_error(line):
    msg = p.decode([b"\x01K", msgpack.packb([[[7, ["x"]], line]])])
    with pytest.raises(ProtocolError, match=r"SubmitAcks: each line must be \[req_id, \[ids\]\]"):
        msg.pairs()


@pytest.mark.parametrize("frames, reason", [
    ([b"\x01S"], "expected 2 frames"),
    ([b"\x01S", b"", b""], "expected 2 frames"),
    ([b"", msgpack.packb([1, []])], "header must be 2 bytes"),
    ([b"\x02S", msgpack.packb([1, []])], "protocol version 2"),
    ([b"\x01?", msgpack.packb([1, []])], "unknown message kind"),
    ([b"\x01S", b"\xc1\xc1garbage"], "not valid msgpack"),
    ([b"\x01S", msgpack.packb({"req_id": 1})], "must be an array"),
    ([b"\x01S", msgpack.packb([1])], "expected 2..5 fields"),
    ([b"\x01S", msgpack.packb([1, [], True, {}, True, "extra"])], "expected 2..5 fields"),
    ([b"\x01S", msgpack.packb([1, [], True, {}, "yes"])], "Submit.batch_acks: expected true or false, got 'yes'"),
    ([b"\x01K", msgpack.packb([{"1": ["a"]}])], "SubmitAcks.acks: expected a list of at most"),
    ([b"\x01S", msgpack.packb([1, [], True, "common"])], "Submit.common: expected a map of at most 64 keys"),
    ([b"\x01S", msgpack.packb(["1", []])], "Submit.req_id: expected an integer .*, got '1'"),
    ([b"\x01S", msgpack.packb([True, []])], "Submit.req_id: expected an integer .*, got True"),
    ([b"\x01S", msgpack.packb([1, "tasks"])], "Submit.tasks: expected a list of at most"),
    ([b"\x01C", msgpack.packb([1])], "unknown message kind b'C'"),   # no worker sends Credit: credit rides Results
])
def test_malformed_frames_raise_one_protocol_error_naming_the_fault(frames, reason):
    with pytest.raises(ProtocolError, match=reason):
        p.decode(frames)


@pytest.mark.parametrize("spec, reason", [
    ("not a dict", "must be an object"),
    ({"kind": "ssh", "command": "x"}, "kind 'ssh' is unknown"),
    ({"kind": "shell"}, "'command' is required"),
    ({"kind": "shell", "command": "   "}, "is empty"),
    ({"kind": "shell", "command": [1, 2]}, "list must hold"),
    ({"kind": "python", "function": "no_colon"}, "must look like"),
    ({"kind": "python", "function": "m:f", "kwargs": []}, "'kwargs' must be an object"),
    ({"kind": "shell", "command": "x", "id": "has space"}, "is not allowed"),
    ({"kind": "shell", "command": "x", "timeout": -1}, "must be > 0"),
    ({"kind": "shell", "command": "x", "retries": -1}, "must be >= 0"),
    ({"kind": "shell", "command": "x", "priority": True}, "must be an integer"),
    ({"kind": "shell", "command": "x", "env": {"A": 1}}, "map strings to strings"),
    ({"kind": "script", "source": "x" * (1 << 20 + 1)}, "larger than"),
])
def test_bad_task_specs_are_refused_with_the_field_named(spec, reason):
    with pytest.raises(ProtocolError, match=reason):
        validate_task_spec(spec)


def test_a_valid_spec_is_normalised_with_defaults():
    spec = validate_task_spec({"kind": "python", "function": "pkg.mod:fn", "args": [1]})
    assert spec["id"] and spec["priority"] == 0 and spec["kwargs"] == {} and spec["tags"] == []
    assert spec["timeout"] is None and spec["retries"] is None and spec["name"] == "pkg.mod:fn"


@pytest.mark.parametrize("spec", [
    {"kind": "python", "function": "pkg.mod:f"},
    {"kind": "python", "function": "pkg.mod:f", "args": [0, None, False], "kwargs": {"a": None}, "priority": -3,
     "tags": ["gpu"], "timeout": 2.5, "retries": 0, "retry_backoff": 0, "name": "mine", "device": "w1"},
    {"kind": "shell", "command": ["echo", "hi"], "cwd": "/tmp", "env": {"A": ""}, "limit_key": "site",
     "limit_concurrency": 1, "limit_per_minute": 60, "all": True, "group": "g"},
    {"kind": "script", "source": "print(1)", "filename": "s.py", "args": ["x"]},
    {"kind": "script", "source": "print(1)"},
])
def test_a_compact_spec_validates_back_to_the_same_task(spec):
    full = validate_task_spec({"id": "t1", **spec})
    small = compact_spec(full)
    assert validate_task_spec(small) == full
    assert all(v is not None for v in small.values()) and len(small) <= len(full)


COMMONS = [
    {"kind": "python", "function": "pkg.mod:f"},
    {"kind": "python", "function": "pkg.mod:f", "args": [9], "kwargs": {"k": 1}, "timeout": 3, "tags": ["gpu"],
     "priority": 5, "retries": 0, "name": "mine", "limit_key": "site", "limit_concurrency": 2},
    {"kind": "python", "function": "pkg.mod:f", "all": True},
    {"kind": "shell", "command": "echo hi", "env": {"A": "1"}},
    {"kind": "script", "source": "print(1)", "args": ["a"]},
]
TASKS = [{"id": "t1"}, {"id": "t2", "args": [1, [2]]}, {"id": "t3", "kwargs": {"x": None}},
         {"id": "t4", "args": (), "kwargs": {}}, {"id": "t5", "args": None}, {"id": "t6", "timeout": 7.5},
         {"id": "t7", "priority": -1, "args": [3]}, {"id": "t8", "tags": ["x"]}]


@pytest.mark.parametrize("common", COMMONS, ids=lambda c: f"{c['kind']}-{len(c)}")
def test_a_submit_with_common_gives_the_specs_of_its_merged_tasks(common):
    """The fast path (items of only id/args/kwargs checked alone) must give exactly what validating each merged task
    whole gives, for every kind and option; items with other keys take the whole path."""
    tasks = TASKS if common["kind"] == "python" else [{"id": "t1"}, {"id": "t2", "args": ["x"]}, {"id": "t6", "timeout": 7.5}]
    merged = [validate_task_spec({**common, **task}) for task in tasks]
    assert validate_batch(tasks, common) == merged
    assert validate_batch([{**common, **t} for t in tasks]) == merged   # no common: as before


@pytest.mark.parametrize("common, task, reason", [
    ({"kind": "python", "function": "m:f"}, {"id": "has space"}, "is not allowed"),
    ({"kind": "python", "function": "m:f"}, {"id": "a", "args": "abc"}, "'args' must be a list"),
    ({"kind": "python", "function": "m:f"}, {"id": "a", "kwargs": {1: 2}}, "string keys"),
    ({"kind": "python", "function": "m:f"}, {"id": "a", "kwargs": [1]}, "'kwargs' must be an object"),
    ({"kind": "python", "function": "m:f"}, "not a dict", "must be an object"),
    ({"kind": "python", "function": "m:f"}, {"id": "a", "timeout": -1}, "must be > 0"),
    ({"kind": "python", "function": "no_colon"}, {"id": "a"}, "must look like"),
    ({"kind": "python"}, {"id": "a", "args": [1]}, "'function'"),
    ({"kind": "ssh"}, {"id": "a"}, "kind 'ssh' is unknown"),
])
def test_a_bad_common_or_task_is_refused_naming_the_field(common, task, reason):
    with pytest.raises(ProtocolError, match=reason):
        validate_batch([{"id": "ok"}, task], common)


@pytest.mark.parametrize("common, tasks", [
    ({"kind": "python"}, [{"id": "a", "function": "m:f"}, {"id": "b", "function": "m:g", "args": [1]}]),
    ({"kind": "python", "function": "m:f", "id": "shared"}, [{"id": "a"}, {"args": [2]}]),
    ({"kind": "python", "function": "m:f", "id": None}, [{"id": "a"}]),
    ({"kind": "bogus"}, [{"id": "a", "kind": "shell", "command": "true"}]),
    ({"kind": "bogus"}, []),
], ids=["function-in-tasks", "id-in-common", "id-none", "kind-overridden", "no-tasks"])
def test_a_common_that_is_no_task_alone_is_judged_merged_into_each_task(common, tasks):
    """The rule is task i = {**common, **tasks[i]}: a shared part that only the tasks complete is accepted exactly
    when the merged specs are."""
    merged = [validate_task_spec({**common, **task}) for task in tasks]
    assert validate_batch(tasks, common) == merged


def test_a_batch_of_calls_is_factored_and_anything_else_is_sent_whole():
    calls = [compact_spec(validate_task_spec({"id": f"t{i}", "kind": "python", "function": "m:f", "args": [i],
                                              "timeout": 5})) for i in range(3)]
    common, tasks = factor_batch(calls)
    assert common == {"kind": "python", "function": "m:f", "timeout": 5}
    assert tasks == [{"id": f"t{i}", "args": [i]} for i in range(3)]
    assert [{**common, **t} for t in tasks] == calls
    mixed = calls + [dict(calls[0], id="t9", timeout=6)]
    shells = [{"id": "s1", "kind": "shell", "command": "x"}, {"id": "s2", "kind": "shell", "command": "x"}]
    missing = calls[:2] + [{k: v for k, v in calls[2].items() if k != "timeout"}]
    for specs in (mixed, shells, missing, calls[:1], [], [calls[0], "junk"]):
        assert factor_batch(specs) == ({}, specs)


def test_new_task_ids_sort_by_creation_and_do_not_repeat():
    ids = [new_task_id() for _ in range(100_000)]
    assert len(set(ids)) == len(ids) and all(len(i) == 24 and int(i, 16) >= 0 for i in ids)
    assert int(ids[0][:8], 16) == pytest.approx(time.time(), abs=5)
    # Within one process the ids of one second are consecutive (so inserts append); across seconds they grow.
    assert sum(a < b for a, b in zip(ids, ids[1:])) >= len(ids) - 3   # the 24-bit counter may wrap once


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX")
def test_a_forked_child_draws_its_own_id_source():
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(write, new_task_id().encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child, mine = os.read(read, 64).decode(), new_task_id()
    os.close(read)
    os.close(write)
    assert child[14:] != mine[14:]


# ------------------------------------------------------------------ the schema: every field's bounds, at decode

def nested(depth: int) -> list:
    """`depth` lists, one inside the other."""
    value: list = []
    for _ in range(depth - 1):
        value = [value]
    return value


NAN, INF = float("nan"), float("inf")
BASE = {   # a valid message of every kind a peer sends to the master; the table changes one value in it
    "Register": p.Register(device_id="w1", name="w 1", hostname="host", os="Linux", python_version="3.11.7",
                           python_executable="/usr/bin/python3", tags=["gpu"], concurrency=2, credit=3,
                           running=[["a", 1]], outbox=[], pid=42, version="0.1", weight=1.0,
                           python_envs=[["py39", "3.9.18", "/opt/py39/bin/python"]]),
    "Results": p.Results([{"id": "t1", "attempt": 1, "state": "done", "exit_code": 0, "value": [1], "error": None,
                           "stdout": "o", "stderr": "", "started_at": 1.7e9}], 1, [["b", 1]]),
    "Output": p.Output([["t1", 1, "stdout", "line\n"]]),
    "Heartbeat": p.Heartbeat(device_id="w1", incarnation="inc", seq=7, running=[["a", 1]], held=[],
                             metrics={"cpu_percent": 1.5, "hostname": "h"}, sent_at=1.7e9, commands=[3]),
    "Submit": p.Submit(1, [{"kind": "shell", "command": "true"}], True, {"kind": "shell"}, True),
    "Query": p.Query(2, "tasks", {"state": "done", "limit": 10}),
    "Control": p.Control(3, "cancel", {"ids": ["a"]}),
    "ProjectPush": ProjectPush(4, "myspider", "0f" * 32, 10240, 3),
    "ProjectChunk": ProjectChunk(5, 1, 0, b"tar"),
}
KEYS_OK = [[], [["t", 1]], [["t" * 64, 1 << 31]]]
KEYS_BAD = [[["t"]], [["t", 0]], [["t", (1 << 31) + 1]], [["a b", 1]], [["t\n", 1]], [[1, 1]], [["t", 1, 2]], ["t"],
            "t", None]
LINE_BAD = ["a\nb", "a\x1b[31mb", "a\rb", "a\x00b", "a\x85b", 1, None, b"bytes"]
METRIC_KEYS = 64
BOUNDS = [   # (kind, path to the value, accepted, refused)
    ("Register", ("device_id",), ["a", "x" * 64, "A-z_0.9:x"], ["", "x" * 65, "a b", "a/b", "é", *LINE_BAD]),
    ("Register", ("name",), ["", "n" * 128, "W 1 é"], ["n" * 129, *LINE_BAD]),
    ("Register", ("hostname",), ["", "h" * 255], ["h" * 256, "h" * 9_000_000, *LINE_BAD]),
    ("Register", ("os",), ["o" * 255], ["o" * 256, *LINE_BAD]),
    ("Register", ("python_version",), ["v" * 255], ["v" * 256, *LINE_BAD]),
    ("Register", ("python_executable",), ["/p" * 2048], ["/p" * 2049, *LINE_BAD]),
    ("Register", ("tags",), [[], ["t" * 64], ["t"] * 64, ["no-kind:shell"]],
     [["t"] * 65, ["t" * 65], [""], ["a\tb"], [1], "gpu", None, [["gpu"]]]),
    ("Register", ("concurrency",), [1, 4096], [0, 4097, -1, 2 ** 63, 2 ** 64 - 1, True, 1.0, "2", None]),
    ("Register", ("credit",), [0, 1 << 20], [-1, (1 << 20) + 1, 2 ** 63, False, 0.5]),
    ("Register", ("running",), KEYS_OK, KEYS_BAD),
    ("Register", ("outbox",), KEYS_OK, KEYS_BAD),
    ("Register", ("pid",), [0, 1 << 31], [-1, (1 << 31) + 1, 2 ** 63, 2 ** 64 - 1, "1"]),
    ("Register", ("version",), ["", "v" * 64], ["v" * 65, *LINE_BAD]),
    ("Register", ("weight",), [1e-6, 1, 1e6], [0, -1.0, 1e6 + 1, NAN, INF, -INF, "1", True]),
    ("Register", ("python_envs",), [[], [["py39", "3.9.18", "/opt/py39/bin/python"]] * 16, [["p" * 48, "", "/p"]]],
     [[["py39", "3.9", "/p"]] * 17, [["p" * 49, "3.9", "/p"]], [["py 39", "3.9", "/p"]], [["-py", "3.9", "/p"]],
     [["py39", "v" * 65, "/p"]], [["py39", "3.9\x1b[31m", "/p"]], [["py39", "3.9", "/p\n"]], [["py39", "3.9"]],
     [["py39", "3.9", "/p", "x"]], [{"py39": "3.9"}], "py39", None]),
    ("Results", ("results",), [[]], ["x", [1], [{}], [None], {"id": "t1"}]),
    ("Results", ("results", 0, "id"), ["t" * 64], ["", "t" * 65, "a b", "t\n", 1, None]),
    ("Results", ("results", 0, "attempt"), [1, 1 << 31], [0, -1, (1 << 31) + 1, 2 ** 63, 1.0, "1", None]),
    ("Results", ("results", 0, "state"), ["done", "failed", "timed_out", "cancelled"],
     ["lost", "running", "queued", "", 1, ["done"], None]),
    ("Results", ("results", 0, "exit_code"), [None, 0, -(2 ** 63), 2 ** 63 - 1],
     [2 ** 63, 2 ** 64 - 1, 1.5, "0", True, {"code": 1}]),
    ("Results", ("results", 0, "started_at"), [None, 0, 0.5, 1.7e9, 1e11], [-1, 1e11 + 1, NAN, INF, "t", [1.0]]),
    ("Results", ("results", 0, "stdout"), [None, "", "x" * 100_000, "\x1b[1mbold\n"], [1, b"x", ["x"]]),
    ("Results", ("results", 0, "stderr"), [None, "", "\r\n"], [1, {"x": 1}]),
    ("Results", ("results", 0, "error"),
     [None, {}, {"type": "E", "message": "m" * 16_384, "traceback": "t" * 262_144}, {"message": "line\nline"}],
     [{"type": "E" * 257}, {"type": "a\nb"}, {"message": "m" * 16_385}, {"traceback": "t" * 262_145},
      {"message": {"nested": 1}}, {"message": nested(1000)}, nested(1000), "boom", [], {str(i): "" for i in range(9)}]),
    ("Results", ("results", 0, "value"), [None, 1, -1.5, NAN, "s", b"b", {"a": [1, {"b": None}]}, nested(32),
                                          {1: "int key"}], [nested(33), nested(1000), {"a": nested(32)}]),
    ("Results", ("results", 0, "unknown_key"), ["dropped", nested(1000)], []),
    ("Results", ("credit",), [0, 1 << 20], [-1, 2 ** 63]),
    ("Results", ("started",), KEYS_OK, KEYS_BAD),
    ("Results", ("leaving",), [True, False], [1, "yes", None]),
    ("Results", ("returned",), KEYS_OK, KEYS_BAD),
    ("Output", ("chunks",), [[], [["t", 1, "stderr", ""]], [["t", 1, "stdout", "x"]] * 16_384],
     [[["t", 1, "stdin", "x"]], [["t", 0, "stdout", "x"]], [["t", 1, "stdout", 1]], [["t", 1, "stdout"]],
      [["a b", 1, "stdout", "x"]], [["t", 1, "stdout", "x"]] * 16_385, "x"]),
    ("Heartbeat", ("device_id",), ["w" * 64], ["", "w" * 65, "w 1", *LINE_BAD]),
    ("Heartbeat", ("incarnation",), ["", "i" * 64], ["i" * 65, *LINE_BAD]),
    ("Heartbeat", ("seq",), [0, 2 ** 63 - 1], [-1, 2 ** 63, 1.0, "1"]),
    ("Heartbeat", ("running",), KEYS_OK, KEYS_BAD),
    ("Heartbeat", ("held",), KEYS_OK, KEYS_BAD),
    ("Heartbeat", ("metrics",), [{}, {"cpu_percent": 0}, {"cpu_percent": 100.0, "load_1m": 1e6}, {"junk": [1]},
                                 {"cpu_count": 2, "memory_total_mb": 1 << 40, "hostname": "h" * 255},
                                 {"prefetch": 0, "prefetch_adaptive": True}, {"prefetch": 1 << 20}],
     [{"cpu_percent": "x"}, {"cpu_percent": [1.0]}, {"cpu_percent": NAN}, {"cpu_percent": 100.1},
      {"cpu_percent": -1}, {"memory_percent": INF}, {"load_1m": -0.1}, {"cpu_count": 1.5}, {"hostname": "h" * 256},
      {"os": "a\nb"}, {f"k{i}": 0 for i in range(METRIC_KEYS + 1)}, {"prefetch": -1}, {"prefetch": (1 << 20) + 1},
      {"prefetch": 1.5}, {"prefetch_adaptive": 1}, [], None]),
    ("Heartbeat", ("sent_at",), [0, 1.7e9], [-1, NAN, INF, 1e12, "now"]),
    ("Heartbeat", ("commands",), [[], [0, 2 ** 63 - 1], [1] * 1024], [[-1], [1.5], [True], [1] * 1025, [2 ** 63]]),
    ("Heartbeat", ("projects",), [None, [], [["0f" * 32, "cached", "ready", 0, ""]] * 64,
                                  [["af" * 32, "failed", "unknown", 2 ** 63 - 1, "r" * 200]]],
     [[["0f" * 32, "cached", "ready", 0, ""]] * 65, [["0F" * 32, "cached", "ready", 0, ""]],
      [["0f" * 32, "gone", "ready", 0, ""]], [["0f" * 32, "cached", "lost", 0, ""]],
      [["0f" * 32, "cached", "ready", -1, ""]], [["0f" * 32, "cached", "ready", 0, "r" * 201]],
      [["0f" * 32, "cached", "ready", 0, "a\nforged"]], [["0f" * 32, "cached", "ready", 0]], {}]),
    ("Submit", ("req_id",), [0, -(2 ** 63), 2 ** 63 - 1], [2 ** 63, True, "1", 1.0, None]),
    ("Submit", ("tasks",), [[], [{}, "a spec is checked by validate_task_spec"], [{"args": nested(31)}]],
     ["x", {}, None, [{"args": nested(32)}], [{"kwargs": {"a": nested(1000)}}]]),
    ("Submit", ("notify",), [True, False], [1, "yes", None]),
    ("Submit", ("common",), [{}, {"k" * 64: [1]}, {"args": nested(32)}],
     [{"k" * 65: 1}, {1: 2}, {"": 1}, {f"k{i}": 1 for i in range(65)}, {"args": nested(33)}, [], None]),
    ("Submit", ("batch_acks",), [True, False], [0, "true"]),
    ("Query", ("req_id",), [0, 2 ** 63 - 1], [2 ** 63, "1"]),
    ("Query", ("what",), ["status", "w" * 32, "secrets"], ["w" * 33, *LINE_BAD]),
    ("Query", ("params",), [{}, {"limit": 0, "offset": 1 << 62}, {"limit": None}, {"id": "any text"},
                            {"attempt": 1 << 31, "stdout_from": 0, "stderr_from": 1 << 62},
                            {"future": "x" * 4096}, {"future": 2 ** 63 - 1}, {"future": -1.5}],
     [{"limit": -1}, {"limit": "1"}, {"limit": (1 << 31) + 1}, {"offset": (1 << 62) + 1}, {"attempt": True},
      {"stdout_from": -1}, {"id": "a\nb"}, {"id": "i" * 65}, {"state": "s" * 33}, {"device": ["w1"]},
      {"future": [1]}, {"future": {"a": 1}}, {"future": "x" * 4097}, {"future": NAN}, {"future": 2 ** 63},
      {"future\n": 1}, {1: 1}, {f"k{i}": 1 for i in range(33)}, [], None]),
    ("Control", ("req_id",), [1], [2 ** 64 - 1]),
    ("Control", ("action",), ["cancel", "explode"], ["a" * 33, *LINE_BAD]),
    ("Control", ("params",), [{}, {"ids": ["a"] * 10_000}, {"devices": ["w1"]}, {"state": "queued", "tag": "gpu"},
                              {"op": "sync", "name": "p", "tags": ["gpu"] * 32, "rebuild": True},
                              {"op": "add", "name": "n", "cron": "* * * * *", "missed": "skip",
                               "spec": {"anything": [1]}}],
     [{"ids": ["a"] * 10_001}, {"ids": ["a b"]}, {"ids": "abc"}, {"ids": [1]}, {"devices": [1]},
      {"devices": ["w" * 65]}, {"cron": "c" * 257}, {"name": "a\nb"}, {"tag": ["gpu"]}, {"future": [1]},
      {"tags": ["gpu"] * 33}, {"tags": [""]}, {"tags": "gpu"},
      {"spec": {"args": nested(1000)}}]),
    ("ProjectPush", ("req_id",), [0, 2 ** 63 - 1], [2 ** 63, "1"]),
    ("ProjectPush", ("name",), ["a", "my-spider_2.x", "A" * 64], ["", "-a", ".a", "a/b", "a b", "a@b", "A" * 65,
                                                                 "../x", *LINE_BAD]),
    ("ProjectPush", ("version",), ["0" * 64, "af" * 32], ["0" * 63, "0" * 65, "AF" * 32, "g" * 64, 1, None]),
    ("ProjectPush", ("size",), [0, 1 << 40], [-1, (1 << 40) + 1, 1.0, "1", None]),
    ("ProjectPush", ("files",), [0, 1 << 31], [-1, (1 << 31) + 1, "1"]),
    ("ProjectChunk", ("req_id",), [1], [2 ** 63]),
    ("ProjectChunk", ("upload",), [1, 2 ** 63 - 1], [0, -1, 2 ** 63, "1", None]),
    ("ProjectChunk", ("offset",), [0, 1 << 40], [-1, (1 << 40) + 1, 0.5]),
    ("ProjectChunk", ("data",), [b"", b"x" * (1 << 20)], [b"x" * ((1 << 20) + 1), "text", [1], None, 1]),
]


def replaced(kind: str, path: tuple, value) -> list[bytes]:
    """The frames of BASE[kind] with the value at `path` (field name, then list indexes and map keys) replaced."""
    msg = BASE[kind]
    fields = [copy.deepcopy(getattr(msg, name)) for name in msg._names]
    index = msg._names.index(path[0])
    if len(path) == 1:
        fields[index] = value
    else:
        target = fields[index]
        for step in path[1:-1]:
            target = target[step]
        target[path[-1]] = value
    return [msg._header, msgpack.packb(fields, use_bin_type=True)]


def bound_cases(accepted: bool) -> list:
    return [pytest.param(kind, path, value, id=f"{kind}.{'.'.join(map(str, path))}-{n}")
            for kind, path, ok, bad in BOUNDS for n, value in enumerate(ok if accepted else bad)]


@pytest.mark.parametrize("kind, path, value", bound_cases(accepted=True))
def test_a_value_within_its_fields_bounds_decodes(kind, path, value):
    msg = p.decode(replaced(kind, path, value))
    assert type(msg).__name__ == kind


@pytest.mark.parametrize("kind, path, value", bound_cases(accepted=False))
def test_a_value_past_its_fields_bounds_is_one_protocol_error_naming_message_and_field(kind, path, value):
    with pytest.raises(ProtocolError) as refused:
        p.decode(replaced(kind, path, value))
    text = str(refused.value)
    where = path[0] + "".join(f"[{s}]" if isinstance(s, int) else f".{s}" for s in path[1:])
    assert text.startswith(f"{kind}.{where}"), text
    assert ": expected " in text and ", got " in text and len(text) < 1200 and "\n" not in text


def test_the_table_covers_every_field_of_every_message_a_peer_sends_the_master():
    covered = {(kind, path[0]) for kind, path, _, _ in BOUNDS}
    assert covered == {(kind, f.name) for kind, msg in BASE.items() for f in type(msg).FIELDS}


def test_unknown_keys_of_results_and_metrics_are_dropped_at_decode():
    results = p.decode(replaced("Results", ("results", 0, "finished_at"), 1.0))
    assert "finished_at" not in results.results[0] and results.results[0]["id"] == "t1"
    beat = p.decode(replaced("Heartbeat", ("metrics", "clock_offset_s"), [1]))
    assert beat.metrics == {"cpu_percent": 1.5, "hostname": "h"}


def test_the_schema_can_be_walked_field_by_field():
    """What the hostile-value fuzzer relies on: every kind lists its fields with a spec each, in wire order."""
    for cls in p.KINDS.values():
        assert tuple(f.name for f in cls.FIELDS) == cls._names == tuple(f.name for f in dataclasses.fields(cls))
        for f in cls.FIELDS:
            assert isinstance(f.spec, fields.Spec) and f.spec.describe()
            assert all(isinstance(child, fields.Spec) for child in f.spec.children().values())
    assert set(p.RESULT.children()) >= {"id", "attempt", "state", "exit_code", "error", "value"}
    assert p.Results.FIELDS[0].spec.children()["item"] is p.RESULT
    paths = {path: spec for path, spec in fields.walk(p.Results.FIELDS[0].spec)}
    assert paths[("item", "error", "message")].max_len == p.MAX_ERROR_MESSAGE
    assert paths[("item", "attempt")].lo == 1 and isinstance(paths[("item", "value")], fields.Value)
    assert set(fields.walk(p.Query.FIELDS[2].spec)) >= {(("*",), p.SCALAR)}


def test_results_leave_out_returned_when_there_is_none_and_carry_it_when_there_is():
    # A master older than returns reads four fields; a worker sends the fifth only when it hands tasks back.
    assert len(msgpack.unpackb(p.Results([], 1, []).encode()[1])) == 4
    back = p.decode(p.Results([], 0, [], returned=[["t1", 2]]).encode())
    assert back.returned == [("t1", 2)] and back.leaving is False
