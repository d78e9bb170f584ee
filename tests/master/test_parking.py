"""Tasks no worker can take are parked by requirement: they cost the master nothing per turn, never block the tasks
behind them, and run in their order when a worker that meets them comes (docs/architecture.md, "Tasks no worker
can take"); and what a queued task costs the master's memory ("Memory per queued task")."""
from __future__ import annotations

import time

import psutil
import pytest

from zmqgrid.client import build_spec
from zmqgrid.samples import checksum

from ..helpers import db_query, wait_until
from .test_priorities_and_limits import expected_order, start_order

pytestmark = pytest.mark.timeout(180)

PARKED = 10_050   # more than the 10,000 skips after which dispatch used to give up


def master_cpu_share(pid: int, window_s: float) -> float:
    """The master's CPU seconds per second of wall clock over `window_s` (its own process; loopback peers apart)."""
    proc = psutil.Process(pid)
    t = proc.cpu_times()
    before, started = t.user + t.system, time.monotonic()
    time.sleep(window_s)   # the window the share is measured over (not a wait for an outcome)
    t = proc.cpu_times()
    return (t.user + t.system - before) / (time.monotonic() - started)


def test_tasks_for_a_tag_nobody_has_block_nothing_cost_nothing_and_run_when_a_worker_with_it_comes(harness):
    # Given a master with one untagged worker
    harness.start_master()
    harness.start_worker("w1")
    client = harness.client(timeout_s=60)
    harness.wait_online(client, "w1")

    # When 10,050 tasks want a tag no worker has, and 100 plain tasks of the same priority come after them
    gpu = client.map("zmqgrid.samples:noop", [(i,) for i in range(PARKED)], tags=["gpu"])
    plain = client.map("zmqgrid.samples:noop", [(i,) for i in range(100)], notify=True)

    # Then the 100 run on the plain worker (before: dispatch gave up after 10,000 skips, every turn)
    results = client.wait(plain, timeout_s=60)
    assert {r["state"] for r in results.values()} == {"done"}, results
    assert client.task(gpu[-1])["waiting"] == "no online worker has tag gpu"

    # And holding the parked tasks costs the master next to nothing: a busy loop is 1.0
    share = master_cpu_share(harness.master.pid, 3.0)
    assert share < 0.25, f"the master used {share:.0%} of a core while {PARKED} tasks waited for a tag"

    # When a worker with the tag registers, the parked tasks run there
    harness.start_worker("g1", "--tag", "gpu", concurrency=4)
    wait_until(lambda: db_query(harness.db, "SELECT count(*) FROM tasks WHERE state = 'done'")[0][0]
               == PARKED + 100, 120, "every parked task to be done")
    devices = dict(db_query(harness.db, "SELECT device_id, count(*) FROM tasks GROUP BY device_id"))
    assert devices == {"w1": 100, "g1": PARKED}, devices


def test_tasks_waiting_for_a_busy_worker_do_not_block_the_tasks_behind_them(harness):
    # Given a plain worker and a gpu worker whose only slot is taken by a long task
    harness.env["ZMQGRID_PREFETCH"] = "0"
    harness.start_master()
    harness.start_worker("w1")
    harness.start_worker("g1", "--tag", "gpu", concurrency=1)
    client = harness.client(timeout_s=60)
    harness.wait_online(client, "w1", "g1")
    blocker = client.submit(build_spec(python="tests.tasks:sleep", args=[30.0], tags=["gpu"]))[0]
    wait_until(lambda: client.task(blocker)["state"] == "running", 15, "the gpu worker to be busy")

    # When 10,050 more gpu tasks queue behind it, then 100 plain tasks
    gpu = client.map("zmqgrid.samples:noop", [(i,) for i in range(PARKED)], tags=["gpu"])
    plain = client.map("zmqgrid.samples:noop", [(i,) for i in range(100)], notify=True)

    # Then the plain ones run on the plain worker, and the gpu ones wait for a free slot, not for a worker
    results = client.wait(plain, timeout_s=60)
    assert {r["device_id"] for r in results.values()} == {"w1"}, results
    assert client.task(gpu[0])["waiting"] == "waiting for a free slot on an eligible worker"
    share = master_cpu_share(harness.master.pid, 3.0)
    assert share < 0.25, f"the master used {share:.0%} of a core while {PARKED} tasks waited for a busy worker"

    # When the busy worker's slot frees, the gpu tasks run there
    assert client.cancel([blocker]) == {blocker: "cancelling"}
    wait_until(lambda: done_on(harness, "g1") > 0, 30, "gpu tasks to run on g1")

    # And when a second gpu worker comes (with prefetch, so it drains them fast), every one of them runs
    del harness.env["ZMQGRID_PREFETCH"]
    harness.start_worker("g2", "--tag", "gpu", concurrency=4)
    wait_until(lambda: done_on(harness, "g1") + done_on(harness, "g2") == PARKED, 150, "every gpu task to be done")


def done_on(harness, device_id: str) -> int:
    return db_query(harness.db, "SELECT count(*) FROM tasks WHERE state = 'done' AND device_id = ?",
                    (device_id,))[0][0]


def test_parked_tasks_run_in_priority_order_with_aging_when_their_worker_comes(harness):
    # Given a plain worker, and tasks for a tag nobody has: one low, then thirty high, all parked at once
    harness.env["ZMQGRID_PREFETCH"] = "0"
    harness.start_master()
    harness.start_worker("w1")
    client = harness.client()
    harness.wait_online(client, "w1")
    specs = [build_spec(python="tests.tasks:noop", priority=0, tags=["gpu"])]
    specs += [build_spec(python="tests.tasks:noop", priority=10, tags=["gpu"]) for _ in range(30)]
    ids = client.submit(specs, notify=True)
    wait_until(lambda: client.task(ids[-1]).get("waiting") == "no online worker has tag gpu", 10, "them to wait")

    # When a gpu worker with one slot comes
    harness.start_worker("g1", "--tag", "gpu", concurrency=1)
    results = client.wait(ids, timeout_s=60)
    assert {r["state"] for r in results.values()} == {"done"}, results

    # Then they ran as the queue would have run them: higher priority first, every tenth the oldest
    labels = {ids[0]: "L1", **{i: f"H{n}" for n, i in enumerate(ids[1:], 1)}}
    assert start_order(harness, labels) == expected_order([("L1", 0)] + [(f"H{n}", 10) for n in range(1, 31)],
                                                          first_dispatch=1)


def test_a_queued_task_costs_the_master_a_bounded_amount_of_memory(harness):
    # Given a master with no worker, so that everything submitted stays queued
    harness.start_master()
    client = harness.client(timeout_s=120)
    client.map("zmqgrid.samples:noop", [(i,) for i in range(1000)])   # what a first Submit costs once, not per task
    rss = psutil.Process(harness.master.pid).memory_info().rss

    # When one client queues 100,000 calls more
    n = 100_000
    ids = client.map("zmqgrid.samples:noop", [(i,) for i in range(n)])
    assert len(ids) == n
    grown = psutil.Process(harness.master.pid).memory_info().rss - rss

    # Then each costs the master well under the 1,153 bytes it did (entry, wire part, heap item, map slot)
    assert grown / n < 800, f"{grown / n:.0f} bytes of master memory per queued task"


def test_a_queued_tasks_payload_past_4_kib_stays_in_the_ledger_and_reaches_its_worker_whole(harness):
    # Given a master with no worker
    harness.start_master()
    client = harness.client(timeout_s=120)
    client.status()
    rss = psutil.Process(harness.master.pid).memory_info().rss

    # When one client queues 200 calls whose arguments are 1 MB each (200 MB in all)
    def data(i: int) -> str:
        return f"{i:04d}" + "x" * 999_996
    ids = []
    for first in range(0, 200, 10):
        ids += client.submit([build_spec(python="zmqgrid.samples:checksum", args=[data(i), 1])
                              for i in range(first, first + 10)])
    grown = psutil.Process(harness.master.pid).memory_info().rss - rss

    # Then the master holds a bounded part of it (it held every argument: 217 MiB)
    assert grown < 80 * 2**20, f"the master grew by {grown / 2**20:.0f} MiB for 200 MB of queued arguments"

    # And after a restart (the recovered tasks keep no big payload either), when a worker comes, each call gets its
    # own arguments whole (read back from the ledger)
    harness.kill(harness.master)
    harness.start_master()   # on the same port: the client's socket reconnects
    harness.start_worker("w1", concurrency=4)
    results = client.wait(ids, timeout_s=120)
    assert [results[i]["value"] for i in ids] == [checksum(data(i), 1) for i in range(200)]

    # And so does a task with a big environment submitted to an idle worker (dispatched in the turn that queues it,
    # before its row is written)
    big_env = client.submit(build_spec(shell='printf %s "$BIG" | wc -c', env={"BIG": "e" * 30_000}))[0]
    assert client.wait([big_env], timeout_s=30)[big_env]["state"] == "done"
    assert client.logs(big_env)["stdout"].strip() == "30000"
