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

from . import hostile

pytestmark = [pytest.mark.timeout(600), pytest.mark.open_wire]

CHECK_EVERY = 40   # cases between the liveness and bystander checks


def test_every_field_of_every_message_survives_every_hostile_value(tmp_path):
    run = hostile.HostileRun(tmp_path)
    try:
        cases = hostile.all_cases(run.fz.messages())
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
