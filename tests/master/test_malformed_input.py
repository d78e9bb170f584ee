"""Malformed input at the master's ROUTER and PULL: counted, answered where possible, never a crash or a write.

Raw pyzmq sockets send what no zmqgrid peer would. After each message the master process is still up, a
normal Client is answered, the ledger holds exactly what it held before, and (on the ROUTER) the sender gets
an Error with a stable code. One master serves the whole module (it is started with a 64 KiB message limit).
"""
from __future__ import annotations

import time
from pathlib import Path

import msgpack
import pytest
import zmq
from zmq.utils.monitor import recv_monitor_message

from zmqgrid import protocol as p
from zmqgrid.client import Client, build_spec

from ..helpers import Harness, db_query, wait_until

pytestmark = [pytest.mark.timeout(60), pytest.mark.open_wire]

MAX_MESSAGE_BYTES = 65536
LEDGER_TABLES = ("tasks", "attempts", "devices", "task_output", "heartbeats")


def packb(obj) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def ledger(db: Path) -> dict[str, list]:
    """Every row of every ledger table: the state a malformed message must not touch."""
    return {table: db_query(db, f"SELECT * FROM {table} ORDER BY rowid") for table in LEDGER_TABLES}


def result_dict(task_id: str, attempt: int = 1) -> dict:
    return {"id": task_id, "attempt": attempt, "state": "done", "exit_code": 0, "value": None, "error": None,
            "stdout": "forged\n", "stderr": "", "started_at": time.time(), "finished_at": time.time(),
            "duration_s": 0.0}


def fuzz_nested(depth: int) -> list:
    value: list = []
    for _ in range(depth - 1):
        value = [value]
    return value


def register_body(device_id: str) -> p.Register:
    return p.Register(device_id=device_id, name=device_id, hostname="host", os="Linux", python_version="3.11.7",
                      python_executable="/usr/bin/python3", tags=[], concurrency=1, credit=1, running=[], outbox=[],
                      pid=1, version="0")


class Raw:
    """Raw pyzmq DEALER / PUSH sockets pointed at the master; all closed (linger 0) at teardown."""

    def __init__(self, master: Harness) -> None:
        self.master = master
        self.ctx = zmq.Context()
        self.sockets: list[zmq.Socket] = []
        self.monitors: dict[zmq.Socket, zmq.Socket] = {}

    def _socket(self, kind: int, endpoint: str, identity: bytes | None, monitor: bool) -> zmq.Socket:
        sock = self.ctx.socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        self.sockets.append(sock)
        if identity is not None:
            sock.setsockopt(zmq.IDENTITY, identity)
        if monitor:  # attached before connect, so the handshake event cannot be missed
            mon = self.monitors[sock] = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED)
            mon.setsockopt(zmq.LINGER, 0)
            self.sockets.append(mon)
        sock.connect(endpoint)
        return sock

    def dealer(self, identity: bytes | None = None, monitor: bool = False) -> zmq.Socket:
        return self._socket(zmq.DEALER, self.master.url, identity, monitor)

    def push(self, monitor: bool = False) -> zmq.Socket:
        return self._socket(zmq.PUSH, f"tcp://127.0.0.1:{self.master.port + 2}", None, monitor)

    def close(self) -> None:
        for sock in reversed(self.sockets):
            sock.close(0)
        self.ctx.term()


@pytest.fixture(scope="module")
def master(tmp_path_factory):
    """One master (64 KiB message limit, no worker) whose ledger holds one queued task."""
    harness = Harness(tmp_path_factory.mktemp("malformed"), env={"ZMQGRID_MAX_MESSAGE_BYTES": str(MAX_MESSAGE_BYTES)})
    try:
        harness.start_master()
        harness.seeded_id = harness.client().submit(build_spec(shell="echo seeded"))[0]
        yield harness
    finally:
        harness.stop()


@pytest.fixture
def raw(master):
    sockets = Raw(master)
    yield sockets
    sockets.close()


@pytest.fixture
def before(master):
    """The ledger and the bad_messages counter before the test sends anything."""
    with Client(master.url, timeout_s=5) as client:
        bad = client.status()["bad_messages"]
    return ledger(master.db), bad


def bad_messages(master: Harness) -> int:
    with Client(master.url, timeout_s=5) as client:
        return client.status()["bad_messages"]


def receive(sock: zmq.Socket, kind: type, timeout_s: float = 5.0):
    """The next message of `kind` on `sock` (others, such as a worker's Tasks, are passed over)."""
    deadline = time.monotonic() + timeout_s
    while (left := deadline - time.monotonic()) > 0:
        if sock.poll(int(left * 1000)):
            msg = p.decode(sock.recv_multipart())
            if isinstance(msg, kind):
                return msg
    raise AssertionError(f"no {kind.__name__} within {timeout_s}s")


def expect_error(sock: zmq.Socket, timeout_s: float = 5.0) -> p.Error:
    assert sock.poll(int(timeout_s * 1000)), f"no reply within {timeout_s}s"
    msg = p.decode(sock.recv_multipart())
    assert isinstance(msg, p.Error), msg
    return msg


def assert_unharmed(master: Harness, ledger_before: dict) -> dict:
    """The master process is up, a fresh normal Client is answered, and the ledger is exactly as it was."""
    assert master.master.poll() is None, "the master process exited"
    with Client(master.url, timeout_s=5) as client:
        status = client.status()
        assert client.task(master.seeded_id)["state"] == "queued"
    assert ledger(master.db) == ledger_before
    return status


# ------------------------------------------------------------------ ROUTER: does not decode -> bad_message

QUERY = packb([11, "status", {}])

UNDECODABLE = {
    "one frame": ([b"\x01Q"], 0),
    "three frames": ([b"\x01Q", QUERY, b"extra"], 11),
    "garbage bytes in one frame": ([b"\xde\xad\xbe\xef" * 16], 0),
    "garbage bytes in two frames": ([b"\xde\xad", b"\xbe\xef\x00\xff" * 8], 0),
    "empty header": ([b"", QUERY], 11),
    "empty header and body": ([b"", b""], 0),
    "protocol version 2": ([b"\x02Q", QUERY], 11),
    "protocol version 0": ([b"\x00Q", QUERY], 11),
    "unknown kind letter": ([b"\x01Z", QUERY], 11),
    "body is not msgpack": ([b"\x01Q", b"\xc1\xc1\xc1"], 0),
    "body is truncated msgpack": ([b"\x01Q", QUERY[:-2]], 0),
    "body is a msgpack map": ([b"\x01Q", packb({"req_id": 12, "what": "status"})], 0),
    "body is a msgpack string": ([b"\x01Q", packb("status")], 0),
    "body is msgpack nil": ([b"\x01S", packb(None)], 0),
    "Submit with tasks a string": ([b"\x01S", packb([13, "x", False])], 13),
    "Submit with notify a string": ([b"\x01S", packb([13, [], "yes"])], 13),
    "Submit with common a list": ([b"\x01S", packb([13, [], False, []])], 13),
    "Query with req_id a string": ([b"\x01Q", packb(["a", "status", {}])], 0),
    "Query with req_id a bool": ([b"\x01Q", packb([True, "status", {}])], 0),
    "Query with params a list": ([b"\x01Q", packb([14, "status", []])], 14),
    "Query with no fields": ([b"\x01Q", packb([])], 0),
    "Query with too few fields": ([b"\x01Q", packb([15])], 15),
    "Query with too many fields": ([b"\x01Q", packb([16, "status", {}, "extra"])], 16),
    "Register with too few fields": ([b"\x01R", packb(["w9", "w9", "host"])], 0),
    "Control with action an int": ([b"\x01X", packb([17, 5, {}])], 17),
    # Params are typed at decode too (the message's schema): a wrong shape is a bad message, not a bad request.
    "Query tasks with limit a string": (p.Query(32, "tasks", {"limit": "x"}).encode(), 32),
    "Query logs with attempt a string": (p.Query(35, "logs", {"id": "x", "attempt": "1"}).encode(), 35),
    "Control cancel with ids a string": (p.Control(37, "cancel", {"ids": "abc"}).encode(), 37),
    "Control cancel with ids of ints": (p.Control(38, "cancel", {"ids": [1, 2]}).encode(), 38),
    "Control cancel with an id holding a newline": (p.Control(39, "cancel", {"ids": ["a\nb"]}).encode(), 39),
    "Register with concurrency 2**63": (p.Register(
        device_id="w9", name="w9", hostname="h", os="Linux", python_version="3", python_executable="/p", tags=[],
        concurrency=2 ** 63, credit=1, running=[], outbox=[], pid=1, version="0").encode(), 0),
    "Results with a result nested 1,000 deep": (p.Results([{"id": "x", "attempt": 1, "state": "failed",
                                                              "error": fuzz_nested(1000)}], 0).encode(), 0),
    "a Reply sent to the master": (p.Reply(18, {}).encode(), 18),
    "a Heartbeat sent to the ROUTER": (p.Heartbeat(device_id="w9", incarnation="", seq=1, running=[], held=[],
                                                   metrics={}, sent_at=0.0).encode(), 0),
    "a Tasks message sent to the master": (p.Tasks([{"id": "x", "kind": "shell"}]).encode(), 0),
    "an Error sent to the master": (p.Error(19, "bad_request", "no").encode(), 19),
}


@pytest.mark.parametrize("frames, req_id", UNDECODABLE.values(), ids=UNDECODABLE.keys())
def test_an_undecodable_router_message_is_answered_bad_message_counted_and_changes_nothing(
        master, raw, before, frames, req_id):
    ledger_before, bad_before = before
    dealer = raw.dealer()

    # When a peer sends a message that does not decode into a request the master accepts
    dealer.send_multipart(frames)

    # Then it gets one bad_message error (echoing the request id when one could be read)
    error = expect_error(dealer)
    assert (error.code, error.req_id) == ("bad_message", req_id)
    assert error.message
    # And the master counted it, is up, answers a normal client, and wrote nothing
    status = assert_unharmed(master, ledger_before)
    assert status["bad_messages"] == bad_before + 1


def test_the_same_connection_is_still_served_after_a_bad_message(master, raw, before):
    # Given a peer whose last message was garbage
    dealer = raw.dealer()
    dealer.send_multipart([b"\xff"])
    assert expect_error(dealer).code == "bad_message"

    # When it sends a good request on the same socket
    dealer.send_multipart(p.Query(21, "status", {}).encode())

    # Then it is answered normally
    assert dealer.poll(5000)
    reply = p.decode(dealer.recv_multipart())
    assert isinstance(reply, p.Reply) and reply.req_id == 21 and reply.data["bad_messages"] == before[1] + 1


# ------------------------------------------------------------------ ROUTER: decodes, cannot be honoured

SEEDED = "<the seeded task's id>"
NOT_HONOURED = {
    "Query for an unknown subject": (p.Query(31, "secrets", {}), "bad_request"),
    "Query tasks with an unknown state": (p.Query(33, "tasks", {"state": "nope"}), "bad_request"),
    "Query task without an id": (p.Query(34, "task", {}), "bad_request"),
    "Control with an unknown action": (p.Control(36, "explode", {"ids": []}), "bad_request"),
    "Submit of 10001 tasks": (p.Submit(39, [{}] * 10_001, False), "too_large"),
}


@pytest.mark.parametrize("msg, code", NOT_HONOURED.values(), ids=NOT_HONOURED.keys())
def test_a_request_that_decodes_but_cannot_be_honoured_is_answered_with_its_code(master, raw, before, msg, code):
    ledger_before, bad_before = before
    if getattr(msg, "params", {}).get("id") == SEEDED:
        msg = type(msg)(msg.req_id, msg.action if isinstance(msg, p.Control) else msg.what,
                        dict(msg.params, id=master.seeded_id))
    dealer = raw.dealer()

    # When a well-formed request asks for something the master cannot do
    dealer.send_multipart(msg.encode())

    # Then the error names the request and the reason; it decoded, so it is not counted as a bad message
    error = expect_error(dealer)
    assert (error.code, error.req_id) == (code, msg.req_id)
    status = assert_unharmed(master, ledger_before)
    assert status["bad_messages"] == bad_before


INVALID_SPECS = {
    "unknown kind": [{"id": "t-unknown-kind", "kind": "perl", "command": "print 1"}],
    "shell without a command": [{"id": "t-no-command", "kind": "shell"}],
    "id with a space": [{"id": "has space", "kind": "shell", "command": "true"}],
    "id of 65 characters": [{"id": "x" * 65, "kind": "shell", "command": "true"}],
    "id an integer": [{"id": 7, "kind": "shell", "command": "true"}],
    "task a string": ["echo hi"],
    "python function without a colon": [{"id": "t-no-colon", "kind": "python", "function": "os.getcwd"}],
    "tags not a list": [{"id": "t-tags", "kind": "shell", "command": "true", "tags": "linux"}],
    "priority beyond a 64-bit signed integer": [{"id": "t-prio", "kind": "shell", "command": "true",
                                                 "priority": 2 ** 63}],
    "retries beyond a 64-bit signed integer": [{"id": "t-retries", "kind": "shell", "command": "true",
                                                "retries": 2 ** 64 - 1}],
    "timeout not a number": [{"id": "t-nan", "kind": "shell", "command": "true", "timeout": float("nan")}],
    "a good task then a bad one": [{"id": "t-good-first", "kind": "shell", "command": "true"},
                                   {"id": "t-bad-second", "kind": "shell", "command": ""}],
}


@pytest.mark.parametrize("tasks", INVALID_SPECS.values(), ids=INVALID_SPECS.keys())
def test_a_submit_with_an_invalid_task_spec_is_refused_whole_with_bad_request(master, raw, before, tasks):
    ledger_before, bad_before = before
    dealer = raw.dealer()

    # When a submit holds a task spec that does not validate
    dealer.send_multipart(p.Submit(41, tasks, True).encode())

    # Then the whole submit is refused with bad_request, and not one of its tasks reaches the ledger
    error = expect_error(dealer)
    assert (error.code, error.req_id) == ("bad_request", 41), error
    status = assert_unharmed(master, ledger_before)
    assert status["bad_messages"] == bad_before


CALLS = {"kind": "python", "function": "tests.tasks:add"}
INVALID_BATCHES = {
    "common no task completes": ({"kind": "python"}, [{"id": "t-c1", "args": [1]}]),
    "common with a bad function": ({"kind": "python", "function": "no_colon"}, [{"id": "t-c2"}]),
    "common with an unknown kind": ({"kind": "perl"}, [{"id": "t-c3"}]),
    "a good call then args a string": (CALLS, [{"id": "t-c4", "args": [1, 2]}, {"id": "t-c5", "args": "12"}]),
    "kwargs with integer keys": (CALLS, [{"id": "t-c6", "kwargs": {1: 2}}]),
    "a call with a bad id": (CALLS, [{"id": "has space", "args": [1, 2]}]),
    "a call overriding timeout with a negative one": (CALLS, [{"id": "t-c7", "timeout": -1}]),
    "a call that is not a map": (CALLS, [[1, 2]]),
}


@pytest.mark.parametrize("common, tasks", INVALID_BATCHES.values(), ids=INVALID_BATCHES.keys())
def test_a_submit_with_common_and_an_invalid_part_is_refused_whole_with_bad_request(master, raw, before, common,
                                                                                     tasks):
    ledger_before, bad_before = before
    dealer = raw.dealer()

    # When a batch of calls (shared part + per-call part) holds something that does not validate
    dealer.send_multipart(p.Submit(42, tasks, True, common).encode())

    # Then the whole submit is refused with bad_request naming it, and the ledger is untouched
    error = expect_error(dealer)
    assert (error.code, error.req_id) == ("bad_request", 42), error
    assert "task" in error.message or "Submit.common" in error.message
    status = assert_unharmed(master, ledger_before)
    assert status["bad_messages"] == bad_before


# ------------------------------------------------------------------ ROUTER: worker messages from strangers

def test_results_from_an_unregistered_identity_are_refused_not_registered_and_not_recorded(master, raw, before):
    ledger_before, bad_before = before
    stranger = raw.dealer(b"ghost-worker")

    # When a peer the master never registered reports a result for a real task
    stranger.send_multipart(p.Results([result_dict(master.seeded_id)], 1).encode())

    # Then it is told to register, and the task is still queued with no attempt, output or device
    error = expect_error(stranger)
    assert (error.code, error.req_id) == ("not_registered", 0)
    status = assert_unharmed(master, ledger_before)
    assert status["bad_messages"] == bad_before and status["counters"]["results"] == 0


def test_output_from_an_unregistered_identity_is_refused_not_registered(master, raw, before):
    stranger = raw.dealer(b"ghost-output")
    stranger.send_multipart(p.Output([[master.seeded_id, 1, "stdout", "forged\n"]]).encode())
    assert expect_error(stranger).code == "not_registered"
    status = assert_unharmed(master, before[0])
    assert status["devices"]["online"] == 0 and status["counters"]["dispatched"] == 0


def test_a_register_whose_device_id_differs_from_the_socket_identity_is_refused(master, raw, before):
    ledger_before, bad_before = before
    impostor = raw.dealer(b"dev-a")

    # When a worker socket with identity dev-a registers as dev-b
    impostor.send_multipart(register_body("dev-b").encode())

    # Then it is refused as a bad message naming the mismatch, and neither device exists
    error = expect_error(impostor)
    assert error.code == "bad_message" and "does not match the socket identity" in error.message
    status = assert_unharmed(master, ledger_before)
    assert status["bad_messages"] == bad_before + 1 and status["devices"]["online"] == 0
    with Client(master.url, timeout_s=5) as client:
        assert client.devices() == []


def test_a_register_with_malformed_running_entries_is_refused_before_it_registers(master, raw, before):
    ledger_before, bad_before = before
    worker = raw.dealer(b"dev-c")
    worker.send_multipart(p.Register(device_id="dev-c", name="dev-c", hostname="host", os="Linux",
                                     python_version="3.11.7", python_executable="/usr/bin/python3", tags=[],
                                     concurrency=1, credit=1, running=[["only-an-id"]], outbox=[], pid=1,
                                     version="0").encode())
    error = expect_error(worker)
    assert error.code == "bad_message" and "Register.running" in error.message
    assert assert_unharmed(master, ledger_before)["bad_messages"] == bad_before + 1


UNSTORABLE_RESULTS = {
    "exit_code a map": {"exit_code": {"code": 1}},
    "exit_code beyond 64 bits": {"exit_code": 2 ** 64 - 1},
    "attempt beyond 64 bits": {"attempt": 2 ** 64 - 1},
    "started_at a list": {"started_at": [1.0]},
}


def test_a_result_the_ledger_cannot_store_is_refused_alone_and_does_not_spoil_the_turn(harness):
    # Given a registered raw worker (it sends no heartbeats, so its device timeout is long) holding one task
    harness.env["ZMQGRID_DEVICE_TIMEOUT"] = "30"
    harness.start_master()
    raw = Raw(harness)
    try:
        worker = raw.dealer(b"raw-worker")
        worker.send_multipart(register_body("raw-worker").encode())
        receive(worker, p.RegisterAck)
        client = harness.client()
        task_id = client.submit(build_spec(shell="true", retries=0))[0]
        attempt = receive(worker, p.Tasks).tasks[0]["attempt"]
        ledger_before = ledger(harness.db)

        # When it reports results whose fields would not bind as SQLite values
        for name, fields in UNSTORABLE_RESULTS.items():
            worker.send_multipart(p.Results([dict(result_dict(task_id, attempt), **fields)], 0).encode())
            error = receive(worker, p.Error)
            assert error.code == "bad_message", (name, error)

        # Then each is refused before it touches state: the ledger is unchanged, and the master did not
        # have to reload (the worker is still registered and its good result is acknowledged and recorded)
        assert ledger(harness.db) == ledger_before
        assert client.status()["bad_messages"] == len(UNSTORABLE_RESULTS)
        worker.send_multipart(p.Results([result_dict(task_id, attempt)], 1).encode())
        assert receive(worker, p.ResultAck).keys == [(task_id, attempt)]
        assert client.wait([task_id], timeout_s=10)[task_id]["state"] == "done"
        assert client.logs(task_id)["stdout"] == "forged\n"
    finally:
        raw.close()


# ------------------------------------------------------------------ PULL (heartbeats): nothing can answer

UNDECODABLE_ON_PULL = {
    "garbage bytes": [b"\x00\x01\x02garbage"],
    "three frames": [*p.Heartbeat(device_id="w9", incarnation="", seq=1, running=[], held=[], metrics={},
                                  sent_at=0.0).encode(), b"extra"],
    "unknown kind letter": [b"\x01Z", packb([])],
    "body not msgpack": [b"\x01H", b"\xc1"],
    "body not an array": [b"\x01H", packb({"device_id": "w9"})],
    "Heartbeat with seq a string": [b"\x01H", packb(["w9", "", "1", [], [], {}, 0.0])],
    "Heartbeat with too few fields": [b"\x01H", packb(["w9", ""])],
    "Heartbeat with malformed running entries": p.Heartbeat(device_id="w9", incarnation="", seq=1, running=[["x"]],
                                                            held=[], metrics={}, sent_at=0.0).encode(),
    "a Query on the heartbeat socket": p.Query(51, "status", {}).encode(),
}


@pytest.mark.parametrize("frames", UNDECODABLE_ON_PULL.values(), ids=UNDECODABLE_ON_PULL.keys())
def test_an_undecodable_heartbeat_socket_message_is_counted_and_dropped(master, raw, before, frames):
    ledger_before, bad_before = before

    # When a malformed message arrives on the PULL socket (which cannot answer)
    raw.push().send_multipart(frames)

    # Then the master counts it, stays up, answers, and wrote nothing
    wait_until(lambda: bad_messages(master) == bad_before + 1, 10, "the bad message to be counted")
    assert_unharmed(master, ledger_before)


def test_a_heartbeat_for_an_unknown_device_is_dropped_without_a_trace(master, raw, before):
    ledger_before, bad_before = before
    push = raw.push()

    # When a heartbeat names a device the master does not know (and no socket has that identity),
    # followed on the same connection by garbage, which marks when the heartbeat has been handled
    push.send_multipart(p.Heartbeat(device_id="never-registered", incarnation="", seq=1, running=[["x", 1]], held=[],
                                    metrics={"cpu_percent": 1.0}, sent_at=0.0).encode())
    push.send_multipart([b"marker"])
    wait_until(lambda: bad_messages(master) == bad_before + 1, 10, "the marker to be counted")

    # Then the heartbeat was not counted as bad, created no device, and the master carries on
    status = assert_unharmed(master, ledger_before)
    assert status["devices"]["online"] == 0


def test_a_heartbeat_for_an_unknown_device_is_answered_not_registered_on_its_router_socket(master, raw, before):
    # Given a DEALER with identity ghost-hb that the ROUTER knows (it has had a reply)
    dealer = raw.dealer(b"ghost-hb")
    dealer.send_multipart(p.Query(61, "status", {}).encode())
    assert dealer.poll(5000) and isinstance(p.decode(dealer.recv_multipart()), p.Reply)

    # When a heartbeat for device ghost-hb arrives on the PULL
    raw.push().send_multipart(p.Heartbeat(device_id="ghost-hb", incarnation="", seq=1, running=[], held=[], metrics={},
                                          sent_at=0.0).encode())

    # Then the ROUTER tells that socket to register, and nothing is recorded
    error = expect_error(dealer)
    assert (error.code, error.req_id) == ("not_registered", 0)
    assert assert_unharmed(master, before[0])["bad_messages"] == before[1]


# ------------------------------------------------------------------ oversized: libzmq drops the connection

def oversized_submit() -> list[bytes]:
    return p.Submit(71, [{"id": "t-huge", "kind": "shell", "command": "echo " + "x" * 2 * MAX_MESSAGE_BYTES}],
                    True).encode()


def wait_for_event(monitor: zmq.Socket, event: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if monitor.poll(100) and recv_monitor_message(monitor)["event"] == event:
            return
    raise AssertionError(f"no monitor event {event} within {timeout_s}s")


def test_an_oversized_router_message_closes_that_connection_and_the_master_carries_on(master, raw, before):
    ledger_before, bad_before = before
    dealer = raw.dealer(monitor=True)
    monitor = raw.monitors[dealer]
    wait_for_event(monitor, zmq.EVENT_HANDSHAKE_SUCCEEDED)
    assert len(oversized_submit()[1]) > MAX_MESSAGE_BYTES

    # When a peer sends a submit larger than the master's max_message_bytes
    dealer.send_multipart(oversized_submit())

    # Then libzmq closes that connection, the message never reaches the master's code (not counted,
    # no reply, nothing written), and the master answers everyone else
    wait_for_event(monitor, zmq.EVENT_DISCONNECTED)
    status = assert_unharmed(master, ledger_before)
    assert status["bad_messages"] == bad_before and status["counters"]["submitted"] == 1
    assert not dealer.poll(0)


def test_an_oversized_heartbeat_closes_that_connection_and_heartbeats_still_arrive(master, raw, before):
    ledger_before, bad_before = before
    push = raw.push(monitor=True)
    monitor = raw.monitors[push]
    wait_for_event(monitor, zmq.EVENT_HANDSHAKE_SUCCEEDED)

    # When a heartbeat larger than max_message_bytes arrives on the PULL
    push.send_multipart(p.Heartbeat(device_id="w9", incarnation="", seq=1, running=[], held=[],
                                    metrics={"junk": "x" * 2 * MAX_MESSAGE_BYTES}, sent_at=0.0).encode())

    # Then that connection is closed, and the PULL still reads what other peers send
    wait_for_event(monitor, zmq.EVENT_DISCONNECTED)
    raw.push().send_multipart([b"marker"])
    wait_until(lambda: bad_messages(master) == bad_before + 1, 10, "the next message on the PULL to be read")
    assert_unharmed(master, ledger_before)
