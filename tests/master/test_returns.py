"""A worker hands back the tasks it holds unstarted (`Results.returned`), and nothing else (docs/architecture.md,
"Worker: credit and prefetch", and the threat model: a worker key acts only on its own device's attempts). The
worker here is a raw DEALER speaking the protocol, beside a real worker running a task of its own."""
from __future__ import annotations

import pytest
import zmq

from zmqgrid import protocol as p
from zmqgrid.client import build_spec

from ..faults.test_worker_stopped import _dispatched, _register
from ..helpers import Harness, db_query, stays, wait_until

pytestmark = pytest.mark.timeout(60)


def test_a_worker_hands_back_only_its_own_unstarted_attempts_and_the_master_requeues_them_uncounted(
        harness: Harness):
    # Given a real worker w1 running a task, and a raw worker holding two tasks of its own, one of them started
    harness.start_master()
    harness.start_worker("w1", concurrency=1)
    client = harness.client()
    harness.wait_online(client, "w1")
    theirs = client.submit(build_spec(shell="sleep 60", device="w1"))[0]
    wait_until(lambda: client.task(theirs)["state"] == "running", 20, "w1's task to run")
    ctx = zmq.Context()
    dealer = ctx.socket(zmq.DEALER)
    dealer.linger = 0
    dealer.identity = b"raw"
    try:
        dealer.connect(harness.url)
        assert _register(dealer, "raw", credit=3) == []
        held, started, cancelled = client.submit([build_spec(shell="true", device="raw") for _ in range(3)])
        got: list = []
        wait_until(lambda: got.extend(_dispatched(dealer)) or len(got) == 3, 10, "three tasks sent to raw")
        dealer.send_multipart(p.Results([], 0, [[started, 1]]).encode())
        wait_until(lambda: client.task(started)["state"] == "running", 10, "raw's started task to be running")

        # When it returns keys that are not its own unstarted attempts: another device's, an unknown task's, the
        # wrong attempt of its own, one it said started
        dealer.send_multipart(p.Results([], 0, [], returned=[[theirs, 1], ["nosuch", 1], [held, 2],
                                                               [started, 1]]).encode())

        # Then each is refused and nothing changes
        wait_until(lambda: client.status()["counters"]["refused_returns"] == 4, 10, "four refused returns")
        assert (client.task(theirs)["state"], client.task(theirs)["device_id"]) == ("running", "w1")
        assert (client.task(held)["state"], client.task(started)["state"]) == ("assigned", "running")

        # When it returns its unstarted one, and one the user cancelled meanwhile
        client.cancel([cancelled])
        dealer.send_multipart(p.Results([], 0, [], returned=[[held, 1], [cancelled, 1]]).encode())

        # Then the first is queued again, its attempt not counted, and not sent back (raw offered no credit)
        wait_until(lambda: client.task(held)["state"] == "queued", 10, "the returned task queued")
        assert db_query(harness.db, "SELECT attempt, device_id, reason FROM tasks WHERE id = ?", (held,)) == \
            [(0, None, "returned unstarted by raw")]
        assert client.task(cancelled)["state"] == "cancelled"
        assert client.status()["counters"]["returned"] == 2
        stays(lambda: not _dispatched(dealer) and client.task(held)["state"] == "queued", 0.5,
              "the returned task queued, not sent back")

        # And when raw offers credit again, the task comes back as attempt 1, with no attempt row before it
        dealer.send_multipart(p.Results([], 1, []).encode())
        again: list = []
        wait_until(lambda: again.extend(_dispatched(dealer)) or again, 10, "the task sent again")
        assert [(t["id"], t["attempt"]) for t in again] == [(held, 1)]
        assert db_query(harness.db, "SELECT count(*) FROM attempts WHERE task_id = ?", (held,)) == [(0,)]
    finally:
        dealer.close(0)
        ctx.term()
    client.cancel([theirs])
