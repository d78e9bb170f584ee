"""States of a real cluster that tests of different views (the command line, the dashboard) start from alike."""
from __future__ import annotations

from zmqgrid.client import Client, build_spec

from .helpers import Harness, db_query, wait_until


def w1_offline_across_a_master_restart(harness: Harness) -> None:
    """A worker w1 whose heartbeats put its metrics in the ledger, SIGKILLed with its master, and the master started
    again (it has not heard from w1 since, so w1 is offline with its last figures kept)."""
    harness.start_master()
    harness.start_worker("w1")
    harness.wait_online(harness.client(), "w1")
    wait_until(lambda: db_query(harness.db, "SELECT metrics FROM devices WHERE device_id = 'w1' AND metrics LIKE "
                                            "'%cpu_percent%'"), 20, "w1's metrics in the ledger")
    harness.kill(harness.workers["w1"])
    harness.kill(harness.master)
    harness.start_master()


def w1_running_one_holding_two(harness: Harness) -> list[str]:
    """A worker w1 with one slot that took two more tasks than it runs (prefetch 2): one running, two assigned and
    waiting on it for the slot. Returns the three tasks' ids."""
    harness.start_master()
    harness.start_worker("w1", concurrency=1, env={"ZMQGRID_PREFETCH": "2"})   # adaptive would hold none of them
    client = harness.client()
    harness.wait_online(client, "w1")
    ids = client.submit([build_spec(shell="sleep 60") for _ in range(3)])
    wait_until(lambda: sorted(client.task(i)["state"] for i in ids) == ["assigned", "assigned", "running"], 20,
               "one running, two assigned")
    return ids


def a_task_running_on_w1_or_w2(h: Harness) -> tuple[Client, str, str, str]:
    """A secured master with accepted workers w1 and w2 online and one task running (`sleep 30`, retries 3) on one
    of them: (client, task id, the device running it, the other device)."""
    h.start_master()
    h.start_worker("w1")
    h.start_worker("w2")
    client = h.client()
    h.wait_online(client, "w1", "w2")
    task_id = client.submit(build_spec(shell="sleep 30", retries=3))[0]
    wait_until(lambda: client.task(task_id)["state"] == "running", 20, "the task running")
    running_on = client.task(task_id)["device_id"]
    return client, task_id, running_on, ({"w1", "w2"} - {running_on}).pop()
