"""A worker SIGKILLed while it runs tasks: its tasks are re-queued and finished elsewhere, none lost."""
from __future__ import annotations

import signal

import pytest

from zmqgrid.client import build_spec

from ..helpers import db_counts, db_query, wait_until

pytestmark = pytest.mark.timeout(90)


def test_tasks_of_a_sigkilled_worker_are_requeued_and_finished_by_the_other(harness):
    # Given a master and two workers, and 20 tasks long enough to be running when the kill comes
    harness.start_master()
    victim = harness.start_worker("victim", concurrency=4)
    harness.start_worker("survivor", concurrency=4)
    client = harness.client()
    harness.wait_online(client, "victim", "survivor")
    ids = client.submit([build_spec(python="tests.tasks:sleep", args=[1.0]) for _ in range(20)], notify=True)
    wait_until(lambda: db_query(harness.db, "SELECT count(*) FROM tasks WHERE device_id='victim' "
                                            "AND state IN ('assigned', 'running')")[0][0] >= 2,
               20, "the victim to hold tasks")

    # When the victim is killed without a chance to say anything
    harness.kill(victim, signal.SIGKILL)

    # Then the master marks it offline, re-queues its attempts, and every task finishes exactly once
    results = client.wait(ids, timeout_s=60)
    assert {r["state"] for r in results.values()} == {"done"}
    assert db_counts(harness.db) == {"done": 20}
    lost = db_query(harness.db, "SELECT task_id FROM attempts WHERE device_id='victim' AND state='lost'")
    assert lost, "the victim's attempts were ended as lost"
    for (task_id,) in lost:
        assert results[task_id]["device_id"] == "survivor" and results[task_id]["attempt"] >= 2
    assert db_query(harness.db, "SELECT count(*) FROM attempts WHERE state='done'") == [(20,)], "each ran to done once"
    assert {d["device_id"]: d["state"] for d in client.devices()}["victim"] == "offline"
