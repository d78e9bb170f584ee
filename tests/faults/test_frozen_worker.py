"""A worker frozen with SIGSTOP past the device timeout, then SIGCONT: its tasks finished elsewhere, its late
results kept only as stale, and it registers again and takes new work."""
from __future__ import annotations

import signal

import pytest

from zmqgrid.client import build_spec

from ..helpers import assert_none_lost, db_query, wait_until

pytestmark = pytest.mark.timeout(120)


def test_a_frozen_worker_loses_its_tasks_its_late_results_are_stale_and_it_comes_back(harness):
    # Given a worker running two long tasks, and a second worker that joins afterwards (the lost tasks run again on
    # whichever has a slot first: the frozen worker may be back by then)
    harness.start_master()
    frozen = harness.start_worker("frozen", concurrency=2)
    client = harness.client()
    harness.wait_online(client, "frozen")
    held = client.submit([build_spec(python="tests.tasks:sleep", args=[2.0]) for _ in range(2)])
    wait_until(lambda: all(client.task(i)["state"] == "running" for i in held), 20, "the frozen worker to run both")
    harness.start_worker("steady", concurrency=2)
    harness.wait_online(client, "steady")
    ids = held + client.submit([build_spec(python="tests.tasks:sleep", args=[0.05]) for _ in range(20)])

    # When the worker is frozen past the device timeout
    frozen.send_signal(signal.SIGSTOP)
    try:
        wait_until(lambda: {d["device_id"]: d["state"] for d in client.devices()}["frozen"] == "offline", 20,
                   "the master to mark it offline")
        lost = db_query(harness.db, "SELECT task_id FROM attempts WHERE device_id='frozen' AND state='lost'")
        assert {t for (t,) in lost} >= set(held)
    finally:
        frozen.send_signal(signal.SIGCONT)

    # Then it registers again, its late results are recorded as stale, and it takes work again
    harness.wait_online(client, "frozen")
    results = client.wait(ids, timeout_s=60)
    assert {r["state"] for r in results.values()} == {"done"}
    for task_id in held:
        attempts = client.task(task_id)["attempts"]
        assert attempts[0]["state"] == "lost" and results[task_id]["attempt"] >= 2
    stale = db_query(harness.db, "SELECT count(*) FROM attempts WHERE device_id='frozen' AND state='lost' AND stale > 0")
    assert stale[0][0] >= 1, "a result of a lost attempt arrived late and was kept as stale"
    fresh = client.run(build_spec(shell="echo back", device="frozen"), timeout_s=30)
    assert fresh["state"] == "done" and fresh["device_id"] == "frozen"
    assert_none_lost(harness.db, ids + [fresh["id"]])
