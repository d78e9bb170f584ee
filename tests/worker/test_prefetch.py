"""Adaptive prefetch and the return of held tasks (docs/architecture.md, "Worker: credit and prefetch"), with a real
master and real workers: what a worker holds beyond its slots is read from `devices` (its heartbeats' metrics),
what the master holds for it from the device row's credit, and every task is counted at the end."""
from __future__ import annotations

import json

import pytest

from zmqgrid.client import build_spec

from ..helpers import Harness, db_query, stays, wait_until

pytestmark = pytest.mark.timeout(120)


def device(client, device_id: str) -> dict:
    return {d["device_id"]: d for d in client.devices()}[device_id]


def prefetch_of(client, device_id: str) -> tuple:
    metrics = device(client, device_id)["metrics"] or {}
    return metrics.get("prefetch"), metrics.get("prefetch_adaptive")


def test_a_workers_prefetch_grows_for_no_op_tasks_and_falls_to_zero_while_its_slot_runs_a_long_task(
        harness: Harness):
    # Given a worker with one slot and the default (adaptive) prefetch
    harness.start_master()
    harness.start_worker("w1", concurrency=1)
    client = harness.client()
    harness.wait_online(client, "w1")
    wait_until(lambda: prefetch_of(client, "w1") == (0, True), 10, "w1 to start with no prefetch, adaptive")

    # When a stream of no-op calls runs on it
    ids = client.map("zmqgrid.samples:noop", [(i,) for i in range(300)])
    client.wait(ids, timeout_s=60)

    # Then it holds tasks beyond its slot, and offers the master the credit for them
    grown = wait_until(lambda: (lambda n, adaptive: adaptive and n and n > 0 and n)(*prefetch_of(client, "w1")),
                       10, "w1's prefetch to grow")
    wait_until(lambda: device(client, "w1")["credit"] > 1, 10, "the master to hold more credit than one slot")

    # When a long task takes its slot
    long = client.submit(build_spec(shell="sleep 60"))[0]
    wait_until(lambda: client.task(long)["state"] == "running", 20, "the long task to run")

    # Then its prefetch falls to 0 while the task runs
    wait_until(lambda: prefetch_of(client, "w1") == (0, True), 10, f"w1's prefetch to fall from {grown} to 0")
    assert client.task(long)["state"] == "running"
    client.cancel([long])


def test_a_long_task_held_by_a_worker_whose_slots_run_long_tasks_is_returned_and_runs_on_a_free_worker_once(
        harness: Harness):
    # Given w1 (one slot) whose prefetch grew on no-op calls, so the master holds credit for it
    harness.start_master()
    harness.start_worker("w1", concurrency=1)
    client = harness.client(timeout_s=30)
    harness.wait_online(client, "w1")
    warm = client.map("zmqgrid.samples:noop", [(i,) for i in range(300)])
    client.wait(warm, timeout_s=60)
    wait_until(lambda: device(client, "w1")["credit"] > 2, 10, "the master to hold credit for w1's prefetch")
    # and a long task in its slot
    first = client.submit(build_spec(shell="sleep 3"))[0]
    wait_until(lambda: client.task(first)["state"] == "running", 20, "the first long task to run on w1")
    wait_until(lambda: prefetch_of(client, "w1")[0] == 0, 10, "w1's prefetch to fall to 0")

    # When a second long task comes: the master still holds credit for w1, so it goes there and waits for the slot
    second = client.submit(build_spec(shell="sleep 1"), notify=True)[0]

    # Then w1 hands it back unstarted (again each time the master uses up the credit it held), and it waits queued
    wait_until(lambda: client.status()["counters"]["returned"] >= 1, 10, "w1 to return the second task")
    wait_until(lambda: device(client, "w1")["credit"] == 0, 10, "the master to use up the credit it held for w1")
    wait_until(lambda: client.task(second)["state"] == "queued", 10, "the returned task to wait in the queue")
    assert client.task(first)["state"] == "running"

    # When a worker with a free slot comes, it runs the returned task there, while w1's first task still runs
    harness.start_worker("w2", concurrency=1)
    summary = client.wait([second], timeout_s=30)[second]
    assert (summary["state"], summary["device_id"]) == ("done", "w2")
    assert client.wait([first], timeout_s=30)[first]["device_id"] == "w1"

    # And each ran once: one attempt each (the returns were not counted), nothing lost, no return refused
    assert summary["attempt"] == 1
    attempts = db_query(harness.db, "SELECT task_id, attempt, device_id, state FROM attempts WHERE task_id IN (?, ?) "
                                    "ORDER BY task_id", (first, second))
    assert sorted(attempts) == sorted([(first, 1, "w1", "done"), (second, 1, "w2", "done")])
    assert db_query(harness.db, "SELECT count(*) FROM tasks WHERE state != 'done'") == [(0,)]
    assert client.status()["counters"]["refused_returns"] == 0


def test_a_fixed_prefetch_in_the_config_file_is_kept_and_nothing_is_returned(harness: Harness):
    # Given a worker whose config file fixes its prefetch at 2
    config = harness.dir / "w1.json"
    config.write_text(json.dumps({"prefetch": 2}))
    harness.start_master()
    harness.start_worker("w1", "--config", str(config), concurrency=1)
    client = harness.client()
    harness.wait_online(client, "w1")

    # When no-op calls run on it, then three long tasks
    client.wait(client.map("zmqgrid.samples:noop", [(i,) for i in range(300)]), timeout_s=60)
    assert prefetch_of(client, "w1") == (2, False)
    long = client.submit([build_spec(shell="sleep 60") for _ in range(3)])

    # Then it keeps the two it cannot run yet, and says its prefetch is 2 and fixed all along
    wait_until(lambda: sorted(client.task(i)["state"] for i in long) == ["assigned", "assigned", "running"], 20,
               "one long task running, two held on w1")
    stays(lambda: prefetch_of(client, "w1") == (2, False) and client.status()["counters"]["returned"] == 0, 1.0,
          "a fixed prefetch of 2 and no return")
    assert [client.task(i)["device_id"] for i in long] == ["w1"] * 3
    client.cancel(long)
