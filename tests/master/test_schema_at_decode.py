"""Hostile values in well-formed worker messages (issue 24, items 1, 3, 8, 9): refused whole at decode, before any
state changes, at the cost of their sender only; and results fenced by the device their attempt went to.

A real master (open, and with CURVE where keys matter), raw pyzmq sockets playing the workers (with the authorized
worker keys w1, w2 under CURVE), a real client beside them, and the ledger read back from its file.
"""
from __future__ import annotations

import os
import time

import pytest
import zmq

from zmqgrid import protocol as p
from zmqgrid.client import build_spec

from ..helpers import Harness, db_query, wait_until
from ..tasks import nested

pytestmark = pytest.mark.timeout(90)


def started(h: Harness):
    """Start `h`'s master; raw sockets made on `h.ctx` (tracked in `h.sockets`) are closed at teardown."""
    h.ctx, h.sockets = zmq.Context(), []
    try:
        h.start_master()
        yield h
    finally:
        for sock in h.sockets:
            sock.close(0)
        h.stop()
        h.ctx.term()


@pytest.fixture(params=["open", "curve"])
def master(request, tmp_path):
    """A master whose devices stay online for 30 s without heartbeats (raw workers send few)."""
    yield from started(Harness(tmp_path, env={"ZMQGRID_DEVICE_TIMEOUT": "30"}, secured=request.param == "curve"))


@pytest.fixture
def quick_timeout(tmp_path):
    """An open master whose devices go offline 3 s after they last spoke."""
    yield from started(Harness(tmp_path, env={"ZMQGRID_DEVICE_TIMEOUT": "3"}))


def raw_socket(h: Harness, kind: int, key: str | None) -> zmq.Socket:
    sock = h.ctx.socket(kind)
    sock.linger = 0
    h.sockets.append(sock)
    if h.secured and key:
        curve = h.client_curve(key)
        sock.curve_serverkey, sock.curve_publickey, sock.curve_secretkey = curve.server_key, curve.public, curve.secret
    return sock


class RawWorker:
    """A worker made of raw sockets: a DEALER to the ROUTER and a PUSH to the heartbeat PULL (w1..w4's keys when
    the master is secured, the device id as routing id when open)."""

    def __init__(self, h: Harness, device_id: str) -> None:
        self.h, self.device_id, self.incarnation, self.seq = h, device_id, "", 0
        self.dealer, self.push = raw_socket(h, zmq.DEALER, device_id), raw_socket(h, zmq.PUSH, device_id)
        if not h.secured:
            self.dealer.identity = device_id.encode()
        self.dealer.connect(h.url)
        self.push.connect(f"tcp://127.0.0.1:{h.port + 2}")

    def register_message(self, **fields) -> p.Register:
        values = dict(device_id=self.device_id, name=self.device_id, hostname="host", os="Linux",
                      python_version="3.11.7", python_executable="/usr/bin/python3", tags=[], concurrency=2,
                      credit=5, running=[], outbox=[], pid=os.getpid(), version="0", weight=1.0)
        return p.Register(**{**values, **fields})

    def register(self, **fields) -> p.Message:
        """The master's answer to a Register (a RegisterAck, whose incarnation is kept, or an Error)."""
        self.dealer.send_multipart(self.register_message(**fields).encode())
        answer = self.receive(p.RegisterAck, p.Error)
        if isinstance(answer, p.RegisterAck):
            self.incarnation = answer.incarnation
        return answer

    def heartbeat(self, metrics: dict, running: list | None = None) -> None:
        self.seq += 1
        self.push.send_multipart(p.Heartbeat(device_id=self.device_id, incarnation=self.incarnation, seq=self.seq,
                                             running=running or [], held=[], metrics=metrics,
                                             sent_at=time.time()).encode())

    def receive(self, *kinds: type, timeout_s: float = 10.0) -> p.Message:
        """The next message of one of `kinds` (others, such as an unasked Tasks, are passed over)."""
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            if self.dealer.poll(int(left * 1000)):
                msg = p.decode(self.dealer.recv_multipart())
                if isinstance(msg, kinds):
                    return msg
        raise AssertionError(f"{self.device_id}: no {'/'.join(k.__name__ for k in kinds)} within {timeout_s}s")

    def silent(self, seconds: float) -> bool:
        return not self.dealer.poll(int(seconds * 1000))


def bad_messages(h: Harness) -> int:
    return h.client(timeout_s=5).status()["bad_messages"]


def handled(h: Harness, push: zmq.Socket, before: int) -> None:
    """Wait until the master has read everything `push` sent so far: a garbage frame after it is counted."""
    push.send_multipart([b"marker"])
    wait_until(lambda: bad_messages(h) > before, 10, "the marker after the heartbeat to be counted")


def attempt_rows(h: Harness, task_id: str) -> list:
    return db_query(h.db, "SELECT attempt, device_id, state, exit_code, error, stale FROM attempts WHERE task_id = ?",
                    (task_id,))


def assert_alive(h: Harness) -> None:
    assert h.master.poll() is None, (h.dir / "master.out").read_text()[-2000:]
    assert "commit of" not in (h.dir / "master.log").read_text(), "a turn's commit failed"


# ------------------------------------------------------------------ item 1: a heartbeat field crashed dispatch

def test_a_heartbeat_with_a_text_cpu_percent_is_refused_and_dispatch_to_two_workers_goes_on(master):
    # Given two registered workers, one of which heartbeats a cpu_percent that is text
    w1, w2 = RawWorker(master, "w1"), RawWorker(master, "w2")
    assert isinstance(w1.register(), p.RegisterAck) and isinstance(w2.register(), p.RegisterAck)
    before = bad_messages(master)
    w1.heartbeat({"cpu_percent": "x"})
    handled(master, w1.push, before)

    # When tasks are dispatched with both workers eligible (the strategy weighs their cpu_percent)
    client = master.client()
    ids = client.submit([build_spec(shell="true") for _ in range(4)])

    # Then the heartbeat was refused at decode, and the master is alive and dispatching to both
    assert bad_messages(master) == before + 2   # the heartbeat and the marker
    got = [task["id"] for w in (w1, w2) for task in w.receive(p.Tasks).tasks]
    assert sorted(got) == sorted(ids)
    assert {client.task(i)["state"] for i in ids} == {"assigned"}
    assert_alive(master)


# ------------------------------------------------------------------ item 3: one message failed the turn's commit

@pytest.mark.parametrize("fields", [{"concurrency": 2 ** 63}, {"pid": 2 ** 63}, {"credit": 2 ** 63}],
                         ids=["concurrency", "pid", "credit"])
def test_a_register_with_a_value_past_64_bits_is_refused_and_costs_other_clients_nothing(master, fields):
    w2 = RawWorker(master, "w2")
    submitter = raw_socket(master, zmq.DEALER, "admin")
    submitter.connect(master.url)
    for round_ in range(5):   # back to back, so that they share the master's turns
        # When a worker registers with a number SQLite cannot hold, while a client submits
        w2.dealer.send_multipart(w2.register_message(**fields).encode())
        submitter.send_multipart(p.Submit(round_ + 1, [build_spec(shell="true", device="nobody")]).encode())

        # Then the register alone is refused, naming the field, and the submit is acknowledged
        error = w2.receive(p.Error, p.RegisterAck)
        assert isinstance(error, p.Error) and error.code == "bad_message", error
        assert f"Register.{next(iter(fields))}: expected an integer" in error.message
        assert submitter.poll(10_000)
        reply = p.decode(submitter.recv_multipart())
        assert isinstance(reply, p.Reply) and reply.req_id == round_ + 1 and len(reply.data["ids"]) == 1, reply
    assert master.client().devices() == []
    assert_alive(master)


def test_metrics_holding_a_list_are_refused_and_the_next_heartbeat_is_recorded(master):
    # Given a registered worker
    w1 = RawWorker(master, "w1")
    assert isinstance(w1.register(), p.RegisterAck)
    client = master.client()
    before = bad_messages(master)

    # When its heartbeat's metrics hold a list where a number belongs (the first heartbeat is sampled to the ledger)
    w1.heartbeat({"cpu_percent": [1.0], "memory_percent": 5.0})
    handled(master, w1.push, before)
    task_id = client.submit(build_spec(shell="true", device="nobody"))[0]

    # Then it is refused, nothing of the turn is lost, and a good heartbeat after it is taken
    assert bad_messages(master) == before + 2
    assert client.task(task_id)["state"] == "queued"
    w1.heartbeat({"cpu_percent": 12.5, "memory_percent": 5.0, "junk": "dropped"})
    wait_until(lambda: (client.devices()[0].get("metrics") or {}).get("cpu_percent") == 12.5, 10,
               "the good heartbeat's metrics")
    assert "junk" not in client.devices()[0]["metrics"]
    assert_alive(master)


# ------------------------------------------------------------------ item 8: results fenced by device

def test_results_from_another_workers_key_never_touch_its_attempts(master):
    # Given w1's task, done, with its attempt row written
    w1, w2 = RawWorker(master, "w1"), RawWorker(master, "w2")
    assert isinstance(w1.register(), p.RegisterAck) and isinstance(w2.register(), p.RegisterAck)
    client = master.client()
    done_id = client.submit(build_spec(shell="true", device="w1", retries=0))[0]
    attempt = w1.receive(p.Tasks).tasks[0]["attempt"]
    w1.dealer.send_multipart(p.Results([{"id": done_id, "attempt": attempt, "state": "done", "exit_code": 0}],
                                       1).encode())
    assert client.wait([done_id], timeout_s=10)[done_id]["state"] == "done"
    row = attempt_rows(master, done_id)
    assert row == [(attempt, "w1", "done", 0, None, 0)]

    # When w2 sends results for that attempt, three times (its own key under CURVE, its own routing id when open)
    forged = {"id": done_id, "attempt": attempt, "state": "failed", "exit_code": 3,
              "error": {"type": "Forged", "message": "w2 says so", "traceback": ""}}
    for _ in range(3):
        w2.dealer.send_multipart(p.Results([forged], 0).encode())
        w2.receive(p.ResultAck)   # late results are acknowledged, so an honest worker drops them

    # Then w1's attempt row is exactly as w1 left it
    client.status()   # a round trip after the last one: its turn is committed
    assert attempt_rows(master, done_id) == row

    # And a result for an attempt running on w1 now, sent by w2, is refused (not recorded, not acknowledged)
    running_id = client.submit(build_spec(shell="true", device="w1", retries=0))[0]
    attempt = w1.receive(p.Tasks).tasks[0]["attempt"]
    w2.dealer.send_multipart(p.Results([dict(forged, id=running_id, attempt=attempt)], 0).encode())
    assert w2.silent(1.0)
    status = client.status()
    assert status["counters"]["foreign_results"] == 1 and client.task(running_id)["state"] in ("assigned", "running")
    w1.dealer.send_multipart(p.Results([{"id": running_id, "attempt": attempt, "state": "done", "exit_code": 0}],
                                       1).encode())
    assert client.wait([running_id], timeout_s=10)[running_id]["exit_code"] == 0
    assert attempt_rows(master, running_id) == [(attempt, "w1", "done", 0, None, 0)]
    assert_alive(master)


def test_a_result_whose_error_is_nested_1000_deep_is_refused_and_its_task_is_not_stranded(quick_timeout):
    # Given a worker holding a task (it sends no heartbeats: it goes offline after the device timeout)
    h = quick_timeout
    w1 = RawWorker(h, "w1")
    assert isinstance(w1.register(), p.RegisterAck)
    client = h.client()
    task_id = client.submit(build_spec(shell="true", retries=0))[0]
    attempt = w1.receive(p.Tasks).tasks[0]["attempt"]

    # When its result carries an error nested 1,000 deep
    w1.dealer.send_multipart(p.Results([{"id": task_id, "attempt": attempt, "state": "failed",
                                         "error": nested(1000)}], 1).encode())

    # Then the whole message is refused at decode, naming the field
    error = w1.receive(p.Error)
    assert error.code == "bad_message" and "Results.results[0].error: expected a map" in error.message

    # And the task is still the device's: when the device falls silent, its attempt ends (retries 0: failed)
    done = client.wait([task_id], timeout_s=20)[task_id]
    assert done["state"] == "failed" and "worker lost" in done["reason"], done
    assert_alive(h)


# ------------------------------------------------------------------ item 9: oversized fields at the edge

def test_a_register_with_a_9_mb_hostname_is_refused_at_decode_and_devices_list_works(master):
    w1, w2 = RawWorker(master, "w1"), RawWorker(master, "w2")
    for worker in (w1, w2):
        error = worker.register(hostname="h" * 9_000_000)
        assert isinstance(error, p.Error) and error.code == "bad_message", error
        assert "Register.hostname: expected text of at most 255 characters" in error.message
        assert len(error.message) < 300
    assert master.client().devices() == []
    assert isinstance(w1.register(), p.RegisterAck)
    assert [d["hostname"] for d in master.client().devices()] == ["host"]
    assert_alive(master)


def test_the_client_sends_more_than_10000_ids_in_several_requests(tmp_path):
    # Given 10,050 queued tasks (no worker could take them)
    h = Harness(tmp_path)
    try:
        h.start_master()
        client = h.client(timeout_s=60)
        ids = client.submit([build_spec(shell="true", device="nobody") for _ in range(p.MAX_IDS_PER_REQUEST + 50)])

        # When one cancel and one wait name them all (past what one Control may carry)
        outcome = client.cancel(ids)
        finished = client.wait(ids, timeout_s=60)

        # Then the client split them, and every one was answered
        assert set(outcome.values()) == {"cancelled"} and len(outcome) == len(ids)
        assert {s["state"] for s in finished.values()} == {"cancelled"} and len(finished) == len(ids)
        assert client.status()["bad_messages"] == 0
    finally:
        h.stop()
