"""A worker asked to stop (SIGTERM, as systemd, Docker or Ctrl-C ask) gives its tasks back and the master sends
them elsewhere, never back to the stopping worker (docs/architecture.md, "When the worker stops")."""
from __future__ import annotations

import os
import signal

import pytest
import zmq

from zmqgrid import protocol as p
from zmqgrid.client import build_spec

from ..helpers import Harness, db_query, stays, wait_until

pytestmark = pytest.mark.timeout(120)


def test_the_tasks_of_a_stopped_worker_run_on_another_and_finish_with_one_retry(harness):
    # Given two workers, each running a task that may be retried once
    harness.start_master()
    stopping = harness.start_worker("stopping", concurrency=1)
    harness.start_worker("other", concurrency=1)
    client = harness.client()
    harness.wait_online(client, "stopping", "other")
    ids = client.submit([build_spec(shell="sleep 2", retries=1) for _ in range(2)])
    wait_until(lambda: all(client.task(i)["state"] == "running" for i in ids), 20, "both tasks running")
    given_back = next(i for i in ids if client.task(i)["device_id"] == "stopping")

    # When the worker is asked to stop
    stopping.send_signal(signal.SIGTERM)
    wait_until(lambda: stopping.poll() is not None, 30, "the worker to exit")
    assert stopping.returncode == 0

    # Then the task it gave back runs on the other worker and finishes: the stop cost it one attempt, not two
    results = client.wait(ids, timeout_s=60)
    assert {r["state"] for r in results.values()} == {"done"}, results
    attempts = db_query(harness.db, "SELECT attempt, device_id, state FROM attempts WHERE task_id = ? "
                                    "ORDER BY attempt", (given_back,))
    assert attempts == [(1, "stopping", "cancelled"), (2, "other", "done")], attempts


def _register(dealer: zmq.Socket, device_id: str, credit: int) -> list:
    """Register as DEVICE_ID: the tasks the master sent with its RegisterAck (a turn sends its tasks first)."""
    register = p.Register(device_id=device_id, name=device_id, hostname="raw", os="Linux", python_version="3",
                          python_executable="python", tags=[], concurrency=1, credit=credit, running=[], outbox=[],
                          pid=os.getpid(), version="0.1.0", weight=1.0)
    dealer.send_multipart(register.encode())
    tasks = []
    while True:
        assert dealer.poll(10_000), "no RegisterAck"
        msg = p.decode(dealer.recv_multipart())
        if isinstance(msg, p.RegisterAck):
            return tasks
        if isinstance(msg, p.Tasks):
            tasks += msg.tasks


def _dispatched(dealer: zmq.Socket) -> list:
    """The tasks the master sent to this worker since the last look."""
    tasks = []
    while dealer.poll(0):
        msg = p.decode(dealer.recv_multipart())
        if isinstance(msg, p.Tasks):
            tasks += msg.tasks
    return tasks


def test_a_leaving_worker_gets_no_task_whatever_credit_it_frees_until_it_registers_again(harness: Harness):
    # Given a worker (a raw DEALER speaking the protocol) registered with no credit, and a task waiting
    harness.start_master()
    client = harness.client()
    ctx = zmq.Context()
    dealer = ctx.socket(zmq.DEALER)
    dealer.linger = 0
    dealer.identity = b"raw"   # a worker's DEALER is named by its device id
    try:
        dealer.connect(harness.url)
        assert _register(dealer, "raw", credit=0) == []
        task_id = client.submit(build_spec(shell="true"))[0]

        # When it says it is leaving, and then frees credit as its stopped attempts' results would
        dealer.send_multipart(p.Results([], 0, [], leaving=True).encode())
        dealer.send_multipart(p.Results([], 4).encode())

        # Then the master sends it nothing: the task stays queued
        stays(lambda: not _dispatched(dealer) and client.task(task_id)["state"] == "queued", 2,
              "the task queued and nothing sent to the leaving worker")

        # And once it registers again (as the next process of that device does) it gets the task
        got = _register(dealer, "raw", credit=1)
        wait_until(lambda: got.extend(_dispatched(dealer)) or got, 10, "the task sent to the registered worker")
        assert [t["id"] for t in got] == [task_id]
    finally:
        dealer.close(0)
        ctx.term()
