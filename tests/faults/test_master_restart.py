"""The master SIGKILLed after acknowledging submissions, restarted on the same file: all of them complete."""
from __future__ import annotations

import signal

import pytest

from zmqgrid.client import build_spec

from ..helpers import db_counts, wait_until

pytestmark = pytest.mark.timeout(120)


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
