"""A task that kills its worker every time is quarantined after 3 worker deaths, whether it kills at once or late
(after tasks started beside it); the other tasks all finish, and none is quarantined for having run beside it."""
from __future__ import annotations

import pytest

from zmqgrid.client import build_spec

from ..helpers import assert_none_lost, wait_until

pytestmark = pytest.mark.timeout(120)


# The poison works a moment before it kills (as a crawl that crashes on what it fetched does): one that kills within
# microseconds of its start can beat the worker's notice that it started, and is then judged lost, not a death
# (docs/architecture.md, "Inline python calls"; README, "Poison tasks are quarantined").
@pytest.mark.parametrize("pool", [
    "process",   # a pool child that SIGKILLs its parent, the worker
    "inline",    # a call run in the worker itself, SIGKILLing its own process
])
def test_a_poison_task_is_quarantined_after_three_worker_deaths_and_the_rest_finish(harness, pool):
    # Given two workers that a supervisor (this test) restarts when they die, and 40 ordinary tasks
    harness.env["ZMQGRID_PYTHON_POOL"] = pool
    harness.start_master()
    names = ["p1", "p2"]
    for name in names:
        harness.start_worker(name, concurrency=2)
    client = harness.client()
    harness.wait_online(client, *names)
    ordinary = client.submit([build_spec(python="tests.tasks:sleep", args=[0.05]) for _ in range(40)])

    # When a task that SIGKILLs whichever worker runs it is submitted (with retries to spare)
    poison = client.submit(build_spec(python="tests.tasks:kill_worker_after", args=[0.3], retries=10), notify=True)[0]
    deaths = 0

    def supervise() -> bool:
        nonlocal deaths
        for name in names:
            if harness.workers[name].poll() is not None:
                deaths += 1
                harness.start_worker(name, concurrency=2)
        return client.task(poison)["state"] == "quarantined"
    wait_until(supervise, 90, "the poison task to be quarantined")

    # Then it is parked with the evidence of three deaths, not retried forever
    task = client.task(poison)
    assert task["deaths"] == 3 and sum(1 for e in task["evidence"] if e["counted"]) == 3   # a noted one counts not
    assert {e["device_id"] for e in task["evidence"]} <= set(names)
    assert all("restarted" in e["reason"] or "no heartbeat" in e["reason"] for e in task["evidence"])
    assert deaths >= 3
    assert [t["id"] for t in client.tasks("quarantined")] == [poison]

    # And every other task finished
    results = client.wait(ordinary, timeout_s=60)
    assert {r["state"] for r in results.values()} == {"done"}
    counts = assert_none_lost(harness.db, ordinary + [poison])
    assert counts["quarantined"] == 1 and counts["done"] == 40


def test_a_task_that_kills_its_worker_late_is_quarantined_though_tasks_started_after_it(harness):
    # Given one worker with two slots that a supervisor (this test) restarts when it dies, and a stream of short
    # tasks that keeps starting in the slot beside anything long
    harness.start_master()
    harness.start_worker("p1", concurrency=2)
    client = harness.client()
    harness.wait_online(client, "p1")
    ordinary = client.submit([build_spec(python="tests.tasks:sleep", args=[0.1]) for _ in range(200)])

    # When a task that runs a second, then SIGKILLs its worker, is submitted (first in line at every retry): at
    # each of its worker's deaths, a short task started after it is running beside it
    poison = client.submit(build_spec(python="tests.tasks:kill_worker_after", args=[1.0], retries=10, priority=5),
                           notify=True)[0]
    deaths = 0

    def supervise() -> bool:
        nonlocal deaths
        if harness.workers["p1"].poll() is not None:
            deaths += 1
            harness.start_worker("p1", concurrency=2)
        return client.task(poison)["state"] in ("quarantined", "failed")
    wait_until(supervise, 90, "the late poison task to end")

    # Then it was quarantined once three of its worker's deaths counted: at the third, or at the fourth when one
    # was only noted (it had started before others, then started last at the next two: docs/architecture.md,
    # Task state machine); every death is in its evidence, and its count is the evidence's
    task = client.task(poison)
    assert task["state"] == "quarantined" and deaths == task["attempt"] in (3, 4), (deaths, task)
    assert [e["attempt"] for e in task["evidence"]] == list(range(1, deaths + 1))
    assert task["deaths"] == sum(e["counted"] for e in task["evidence"]) >= 3, task["evidence"]

    # And the tasks that ran beside it all finished: each started last at one death at most (counted for it), far
    # from a quarantine
    results = client.wait(ordinary, timeout_s=60)
    assert {r["state"] for r in results.values()} == {"done"}
    bystanders = [t for t in (client.task(i) for i in ordinary) if t["deaths"]]
    assert len(bystanders) <= 3 and all(t["deaths"] == 1 for t in bystanders), bystanders
    counts = assert_none_lost(harness.db, ordinary + [poison])
    assert counts["quarantined"] == 1 and counts["done"] == 200


def test_a_user_can_requeue_a_failed_task_and_it_runs_again(cluster):
    client = cluster.client()
    first = client.run(build_spec(shell="exit 9", retries=0), timeout_s=30)
    assert first["state"] == "failed"
    assert client.requeue([first["id"], "nope"]) == {first["id"]: "queued", "nope": "not found"}
    again = client.wait([first["id"]], timeout_s=30)[first["id"]]
    assert again["state"] == "failed" and again["attempt"] == 2
    assert client.requeue([first["id"]]) == {first["id"]: "queued"}
    client.wait([first["id"]], timeout_s=30)
    done = client.run(build_spec(shell="true"), timeout_s=30)
    assert client.requeue([done["id"]]) == {done["id"]: "already done"}
