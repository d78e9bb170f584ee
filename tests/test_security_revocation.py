"""A worker whose key is cut off (revoked, or rejected while pending) is told and stops: one ERROR line, exit 5; the
master logs a refused connection once, not once per message (docs/architecture.md, "A worker whose key is cut off").

Real processes (`python -m zmqgrid`), real CURVE keys, real sockets on 127.0.0.1 and the real ledger; raw pyzmq
sockets play a holder of a revoked key that keeps sending."""
from __future__ import annotations

import os
import re
import time

import pytest
import zmq
from zmq.utils.monitor import recv_monitor_message

from zmqgrid import protocol as p
from zmqgrid.errors import EXIT_KEY_REFUSED
from zmqgrid.transport import Curve

from .helpers import Harness, db_query, keys_cli, wait_until
from .scenes import a_task_running_on_w1_or_w2

pytestmark = pytest.mark.timeout(120)
ROUNDS = 15


def key_of(h: Harness, name: str) -> str:
    return h.client_curve(name).public.decode()


def applied(h: Harness, name: str, change: str) -> None:
    """Wait for the running master to apply a `keys` change (it logs `key ABCDEFGH: old -> new`)."""
    line = f"key {key_of(h, name)[:8]}: {change}"
    wait_until(lambda: line in (h.dir / "master.log").read_text(), 10, f"the master to log {line!r}")


def error_lines(h: Harness, device_id: str) -> list[str]:
    return [line for line in (h.dir / f"{device_id}.log").read_text().splitlines() if " ERROR " in line]


def refusal_lines(h: Harness, name: str) -> list[str]:
    """The master's log lines about refused messages of key NAME (the refusal log's summaries name no key)."""
    pattern = re.compile(rf"refused \S+ from key {re.escape(key_of(h, name)[:8])}")
    return [line for line in (h.dir / "master.log").read_text().splitlines() if pattern.search(line)]


def exits(proc, timeout_s: float = 20) -> int:
    wait_until(lambda: proc.poll() is not None, timeout_s, "the worker process to exit")
    return proc.returncode


def test_a_worker_whose_key_is_revoked_while_it_runs_a_task_says_so_once_and_exits_5(secured_harness):
    # Given two accepted workers, one of them running a task
    h = secured_harness
    client, task_id, victim, other = a_task_running_on_w1_or_w2(h)

    # When an operator revokes the running worker's key
    done = keys_cli(h, "revoke", victim)
    assert done.returncode == 0 and "revoked" in done.stdout, done

    # Then the worker stops by itself with the distinct exit code and one ERROR line saying what to do
    assert exits(h.workers[victim]) == EXIT_KEY_REFUSED
    errors = error_lines(h, victim)
    assert len(errors) == 1, errors
    assert f"key {key_of(h, victim)[:8]}... is revoked" in errors[0] and "keys generate" in errors[0], errors
    # And its task runs elsewhere; losing it to a revocation is no worker death (nothing towards quarantine)
    wait_until(lambda: client.task(task_id)["device_id"] == other and client.task(task_id)["attempt"] == 2, 20,
               "the task re-run on the other worker")
    assert client.task(task_id)["deaths"] == 0
    # And the master wrote at most one refusal line per connection of the key (DEALER, heartbeat PUSH)
    assert len(refusal_lines(h, victim)) <= 2, refusal_lines(h, victim)
    assert victim not in h.online(client)
    client.cancel([task_id])


def test_a_worker_started_with_a_revoked_key_is_refused_at_the_handshake_and_exits_5(secured_harness):
    # Given a worker key (w3, accepted from authorized/) that an operator revoked
    h = secured_harness
    h.start_master()
    assert keys_cli(h, "revoke", key_of(h, "w3")).returncode == 0
    applied(h, "w3", "accepted -> revoked")

    # When a worker starts with it, nothing of it reaches the master (ZAP refuses the handshake)
    proc = h.start_worker("w3")

    # Then it learns so from the handshake itself, says it once with its key, and exits 5
    assert exits(proc) == EXIT_KEY_REFUSED
    errors = error_lines(h, "w3")
    assert len(errors) == 1, errors
    assert "CURVE handshake" in errors[0] and key_of(h, "w3") in errors[0] and "keys accept" in errors[0], errors
    assert db_query(h.db, "SELECT state FROM keys WHERE public_key = ?", (key_of(h, "w3"),)) == [("revoked",)]


def test_a_pending_worker_whose_key_is_rejected_is_told_and_exits_5(secured_harness):
    # Given a worker with a new key, waiting as pending
    h = secured_harness
    h.start_master()
    proc = h.start_worker("newbie")
    wait_until(lambda: db_query(h.db, "SELECT state FROM keys WHERE public_key = ?", (key_of(h, "newbie"),))
               == [("pending",)], 20, "newbie pending")

    # When an operator rejects it
    assert keys_cli(h, "reject", "newbie").returncode == 0

    # Then it is told on the connection it waits on, says so once (a rejected key can still be accepted), exits 5
    assert exits(proc) == EXIT_KEY_REFUSED
    errors = error_lines(h, "newbie")
    assert len(errors) == 1, errors
    assert f"key {key_of(h, 'newbie')[:8]}... is rejected" in errors[0] and "keys accept" in errors[0], errors


def _connected(h: Harness, ctx: zmq.Context, kind: int, curve: Curve, port: int) -> zmq.Socket:
    """A raw socket holding key CURVE, returned once its CURVE handshake with the master succeeded."""
    sock = ctx.socket(kind)
    sock.linger = 0
    sock.curve_serverkey, sock.curve_publickey, sock.curve_secretkey = curve.server_key, curve.public, curve.secret
    monitor = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
    sock.connect(f"tcp://127.0.0.1:{port}")
    assert monitor.poll(10_000), "the CURVE handshake did not succeed"
    assert recv_monitor_message(monitor)["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED
    sock.disable_monitor()
    monitor.close(0)
    return sock


def test_the_master_logs_a_refused_connection_once_however_many_messages_it_sends(secured_harness):
    # Given a holder of worker key w3 connected to the ROUTER and the heartbeat PULL, registered as device w3
    h = secured_harness
    h.start_master()
    client = h.client()
    ctx = zmq.Context()
    try:
        curve = h.client_curve("w3")
        dealer = _connected(h, ctx, zmq.DEALER, curve, h.port)
        push = _connected(h, ctx, zmq.PUSH, curve, h.port + 2)
        register = p.Register(device_id="w3", name="w3", hostname="raw", os="Linux", python_version="3",
                              python_executable="python", tags=[], concurrency=1, credit=0, running=[], outbox=[],
                              pid=os.getpid(), version="0.1.0", weight=1.0)
        dealer.send_multipart(register.encode())
        assert dealer.poll(10_000) and isinstance(p.decode(dealer.recv_multipart()), p.RegisterAck)

        # When its key is revoked while both connections stay open
        assert keys_cli(h, "revoke", "w3").returncode == 0
        applied(h, "w3", "accepted -> revoked")

        # Then the master tells its ROUTER connection at once, unasked
        assert dealer.poll(10_000), "no notice of the revocation"
        notice = p.decode(dealer.recv_multipart())
        assert isinstance(notice, p.Error) and notice.code == "revoked" and "is revoked" in notice.message, notice

        # And however many messages it goes on sending, at a worker's pace (one heartbeat interval, 0.2 s here,
        # between rounds: the traffic of a revoked worker that did not stop), each is refused and counted, and each
        # ROUTER one answered `revoked`
        refused = client.status()["refused_messages"]
        heartbeat = p.Heartbeat(device_id="w3", incarnation="", seq=1, running=[], held=[], metrics={"hostname": "raw"},
                                sent_at=time.time()).encode()
        for sent in range(2, 2 * ROUNDS + 1, 2):
            push.send_multipart(heartbeat)
            dealer.send_multipart(p.Results([], 0, []).encode())
            assert dealer.poll(10_000) and p.decode(dealer.recv_multipart()).code == "revoked"
            wait_until(lambda: client.status()["refused_messages"] >= refused + sent, 10, f"{sent} refused")
            time.sleep(0.2)   # pacing the sender, not waiting for an outcome

        # And the log has one line per connection: the DEALER's and the PUSH's, not one per message
        lines = refusal_lines(h, "w3")
        assert len(lines) == 2, lines
        assert all("later refusals of this connection are counted only" in line for line in lines), lines
        dealer.close(0)
        push.close(0)
    finally:
        ctx.destroy(0)
