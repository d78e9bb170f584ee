"""The master SIGKILLed after acknowledging submissions, restarted on the same file: all of them complete."""
from __future__ import annotations

import signal

import pytest

from zmqgrid.client import build_spec

from ..helpers import assert_none_lost, db_counts, wait_until

pytestmark = pytest.mark.timeout(240)


def test_500_acknowledged_tasks_survive_a_master_sigkill_and_all_complete(harness):
    # Given a master and two workers, and 500 tasks whose submission the master acknowledged
    harness.start_master()
    harness.start_worker("w1", concurrency=4)
    harness.start_worker("w2", concurrency=4)
    client = harness.client()
    harness.wait_online(client, "w1", "w2")
    ids = client.submit([build_spec(python="tests.tasks:sleep", args=[0.02]) for _ in range(500)])
    assert len(set(ids)) == 500

    # When the master is killed mid-run and started again on the same ledger
    wait_until(lambda: db_counts(harness.db).get("done", 0) >= 20, 30, "some tasks done before the kill")
    harness.kill(harness.master, signal.SIGKILL)
    done_before = db_counts(harness.db).get("done", 0)
    assert done_before < 500, "the kill came mid-run"
    harness.start_master()

    # Then the workers re-register, and every acknowledged task completes exactly once in the ledger
    harness.wait_online(client, "w1", "w2", timeout_s=30)
    results = client.wait(ids, timeout_s=90)
    assert {r["state"] for r in results.values()} == {"done"}
    assert db_counts(harness.db) == {"done": 500}


def test_2000_tasks_survive_three_master_sigkills(harness):
    # Given two workers and 2,000 acknowledged tasks
    harness.start_master()
    harness.start_worker("w1", concurrency=4)
    harness.start_worker("w2", concurrency=4)
    client = harness.client(timeout_s=20)
    harness.wait_online(client, "w1", "w2")
    ids = client.submit([build_spec(python="tests.tasks:sleep", args=[0.01]) for _ in range(2000)])

    # When the master is SIGKILLed three times mid-run, each time restarted on the same file
    for target in (300, 900, 1500):
        wait_until(lambda: db_counts(harness.db).get("done", 0) >= target, 90, f"{target} tasks done")
        harness.kill(harness.master, signal.SIGKILL)
        harness.start_master()

    # Then every task completes exactly once in the ledger
    results = client.wait(ids, timeout_s=150)
    assert len(results) == 2000
    counts = assert_none_lost(harness.db, ids)
    assert counts["done"] == 2000, counts
