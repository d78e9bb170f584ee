"""The master SIGKILLed after acknowledging submissions, restarted on the same file: all of them complete."""
from __future__ import annotations

import signal

import pytest

from zmqgrid.cli.render import seconds
from zmqgrid.client import build_spec

from ..helpers import assert_none_lost, db_counts, db_query, run_cli, wait_until

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


def test_a_task_running_across_a_master_restart_keeps_the_start_its_worker_reported(harness):
    # Given a master and a worker, with a device timeout long enough that the freezes below do not make w1 offline
    harness.env["ZMQGRID_DEVICE_TIMEOUT"] = "8"
    harness.start_master()
    worker = harness.start_worker("w1")
    client = harness.client()
    harness.wait_online(client, "w1")

    # and a task the master assigned to w1 (committed) but never heard start: w1 is frozen while it is assigned,
    # then the master is frozen before w1 goes on and starts it; the task runs until the file `go` exists
    marker, go = harness.dir / "started", harness.dir / "go"
    worker.send_signal(signal.SIGSTOP)
    task_id = client.submit(build_spec(shell=f"date +%s.%N; touch {marker}; "
                                             f"while [ ! -e {go} ]; do sleep 0.05; done"))[0]
    wait_until(lambda: db_query(harness.db, "SELECT state FROM tasks WHERE id = ?", (task_id,)) == [("assigned",)],
               20, "the assignment committed")
    client.status()   # answered in a later turn than the dispatch: its Tasks message has gone to w1
    harness.master.send_signal(signal.SIGSTOP)
    worker.send_signal(signal.SIGCONT)
    wait_until(marker.exists, 20, "the task to start on w1")

    # When the master is killed and started again on the same ledger, and the new master hears the task running
    harness.kill(harness.master, signal.SIGKILL)
    harness.start_master()
    client = harness.client()
    wait_until(lambda: client.task(task_id)["state"] == "running", 30, "the new master to hear the task run")
    go.touch()

    # Then the task ends done, and its start is the one its worker reported (as on its attempt row), not the moment
    # the new master first heard of it
    assert client.wait([task_id], timeout_s=60)[task_id]["state"] == "done"
    began = float(client.logs(task_id)["stdout"].split()[0])   # the task's own clock, after the worker started it
    (started, finished), = db_query(harness.db, "SELECT started_at, finished_at FROM tasks WHERE id = ?", (task_id,))
    (attempt_started, attempt_finished), = db_query(
        harness.db, "SELECT started_at, finished_at FROM attempts WHERE task_id = ? AND attempt = 1", (task_id,))
    assert started <= began, f"started_at {started} is after the task printed {began}"
    assert (started, finished) == (attempt_started, attempt_finished)
    # and `tasks list` shows that attempt's duration
    listed = run_cli("tasks", "list", "--master", harness.url, cwd=harness.dir)
    row = next(line for line in listed.stdout.splitlines() if line.startswith(task_id))
    assert row.split()[-1] == seconds(finished - started), listed.stdout
