"""Enrollment under attack (issue 24 items 2, 5, 6): a key nobody accepted binds no device, costs the master a small
bounded amount of ledger, memory and log, cannot forge a log line, and cannot lock a genuine worker out.

Real master and worker processes, real CURVE keys (fresh ones made with zmq.curve_keypair play the strangers), real
sockets on 127.0.0.1 and the real ledger; every flood is bounded in count."""
from __future__ import annotations

import json
import os
import shlex
import socket
import time
from pathlib import Path

import pytest
import zmq

from zmqgrid import protocol as p
from zmqgrid.client import build_spec

from .helpers import Harness, db_query, keys_cli, stays, wait_until

pytestmark = pytest.mark.timeout(240)

FORGED = "2026-01-01 00:00:00,000 WARNING zmqgrid.master.guard: FORGED"


@pytest.fixture
def ctx():
    context = zmq.Context()
    yield context
    context.destroy(0)


def key_of(h: Harness, name: str) -> str:
    return h.client_curve(name).public.decode()


def register(device_id: str, hostname: str = "intruder") -> p.Register:
    return p.Register(device_id=device_id, name=device_id, hostname=hostname, os="Linux", python_version="3",
                      python_executable="python", tags=[], concurrency=1, credit=5, running=[], outbox=[],
                      pid=os.getpid(), version="0.1.0", weight=1.0)


def dealer(h: Harness, ctx: zmq.Context, name: str | None = None) -> tuple[zmq.Socket, str]:
    """A raw DEALER to the master with the key keys/NAME (made if missing), or a fresh key nobody ever saw."""
    if name is None:
        public, secret = zmq.curve_keypair()
    else:
        curve = h.client_curve(name)
        public, secret = curve.public, curve.secret
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    sock.curve_serverkey, sock.curve_publickey, sock.curve_secretkey = h.curve.server_key, public, secret
    sock.connect(h.url)
    return sock, public.decode()


def ask(sock: zmq.Socket, frames: list[bytes], timeout_s: float = 10.0):
    """Send and return the master's answer (decoded), or None when it stays silent."""
    sock.send_multipart(frames)
    return p.decode(sock.recv_multipart()) if sock.poll(int(timeout_s * 1000)) else None


def key_row(h: Harness, key: str) -> tuple | None:
    rows = db_query(h.db, "SELECT state, device_id, hostname FROM keys WHERE public_key = ?", (key,))
    return rows[0] if rows else None


def claimants(h: Harness, device_id: str) -> set[str]:
    return {r[0] for r in db_query(h.db, "SELECT public_key FROM keys WHERE device_id = ?", (device_id,))}


def master_log(h: Harness) -> str:
    return (h.dir / "master.log").read_text(encoding="utf-8", errors="replace")


def ledger_bytes(h: Harness) -> int:
    return sum(Path(f"{h.db}{suffix}").stat().st_size for suffix in ("", "-wal") if Path(f"{h.db}{suffix}").exists())


# --- item 2: a pending key binds nothing ----------------------------------------------------------------------

def test_a_squatting_key_binds_nothing_and_accepting_by_device_id_lists_the_claimants(secured_harness, ctx):
    h = secured_harness
    h.start_master()
    squatter, squatter_key = dealer(h, ctx, "squatter")
    # Given a key nobody accepted registered crawler-01 first
    assert ask(squatter, register("crawler-01", "evil-host").encode()).code == "pending"
    # And the genuine crawler-01 started later, with a key of its own
    h.start_worker("crawler-01")
    genuine = key_of(h, "crawler-01")
    wait_until(lambda: claimants(h, "crawler-01") == {squatter_key, genuine}, 20,
               "both keys pending, both claiming crawler-01")
    # When the operator accepts by device id, as the README says
    done = keys_cli(h, "accept", "crawler-01")
    # Then nothing is accepted: the claimants are listed (key, host, first seen) and one error line asks for a key
    assert done.returncode == 3, done
    assert squatter_key in done.stderr and genuine in done.stderr and "evil-host" in done.stderr, done.stderr
    assert socket.gethostname()[:20] in done.stderr, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "by its key" in errors[0], done.stderr
    assert {key_row(h, k)[0] for k in (squatter_key, genuine)} == {"pending"}
    # When the operator accepts the genuine worker's key
    accepted = keys_cli(h, "accept", genuine)
    assert accepted.returncode == 0, accepted
    # Then crawler-01's tasks run on the genuine worker, and the squatter is still refused
    client = h.client()
    task_id = client.submit(build_spec(shell="echo mine", device="crawler-01"))[0]
    result = client.wait([task_id], timeout_s=30)[task_id]
    assert result["state"] == "done" and result["device_id"] == "crawler-01", result
    again = ask(squatter, register("crawler-01").encode())
    assert again.code == "forbidden" and "another key" in again.message, again
    assert key_row(h, squatter_key)[0] == "pending"
    squatter.close(0)


def test_a_pending_key_never_keeps_an_enrolled_worker_offline(secured_harness, ctx):
    h = secured_harness
    h.start_master()
    client = h.client()
    # Given a stranger's key registered w2, whose accepted key (authorized_keys_dir) never registered yet
    squatter, squatter_key = dealer(h, ctx)
    assert ask(squatter, register("w2").encode()).code == "pending"
    # When the genuine w2 starts
    h.start_worker("w2")
    # Then it comes online and its key holds w2; the stranger is told the device is another key's
    h.wait_online(client, "w2")
    assert claimants(h, "w2") >= {key_of(h, "w2")} and key_row(h, key_of(h, "w2"))[:2] == ("accepted", "w2")
    again = ask(squatter, register("w2").encode())
    assert again.code == "forbidden" and "another key" in again.message, again
    stays(lambda: "w2" in h.online(client), 1.0, "w2 online")
    # And accepting the stranger's key is refused while w2's key holds the device it claims
    refused = keys_cli(h, "accept", squatter_key)
    assert refused.returncode == 3 and "revoke" in refused.stderr and "w2" in refused.stderr, refused
    assert key_row(h, squatter_key)[0] == "pending"
    squatter.close(0)


# --- item 5: before acceptance a key costs a small bounded amount; logs are rate-limited and one line each ------

def test_twenty_fresh_keys_sending_8_mb_registers_grow_the_ledger_and_the_log_by_a_bounded_amount(
        secured_harness, ctx):
    h = secured_harness
    h.start_master()
    client = h.client()
    client.status()
    ledger_before, log_before = ledger_bytes(h), len(master_log(h))
    big = "x" * 8_000_000
    keys = []
    for i in range(20):
        sock, key = dealer(h, ctx)
        msg = register(f"big-{i}", hostname=big) if i % 2 else register(big + str(i), hostname="h")
        reply = ask(sock, msg.encode(), 30)
        assert reply is not None and reply.code == "pending", reply
        keys.append(key)
        sock.close(0)
    wait_until(lambda: all(key_row(h, k) for k in keys), 20, "the 20 keys recorded as pending")
    # Each key left a small row: no 8 MB host name or device id in the ledger
    sizes = db_query(h.db, "SELECT length(public_key) + length(coalesce(device_id, '')) + "
                           "length(coalesce(hostname, '')) + length(coalesce(name, '')) FROM keys "
                           f"WHERE public_key IN ({','.join('?' * len(keys))})", tuple(keys))
    assert max(s for (s,) in sizes) < 1024, sizes
    client.status()   # the master is alive, and its turn with the last key committed
    assert ledger_bytes(h) - ledger_before < 2 * 1024 * 1024, (ledger_before, ledger_bytes(h))
    assert len(master_log(h)) - log_before < 16 * 1024


def test_a_newline_or_escape_in_a_pending_keys_device_id_cannot_forge_a_log_line(secured_harness, ctx):
    # A device id holding a newline or an escape is refused at decode (the id charset), and the line that
    # says so shows the value escaped
    h = secured_harness
    h.start_master()
    sock, key = dealer(h, ctx)
    assert ask(sock, register(f"evil\n{FORGED}\n\x1b]0;pwned\x07", f"host\n{FORGED}").encode()).code == "bad_message"
    h.client().status()
    wait_until(lambda: "Register.device_id" in master_log(h), 20, "the refusal logged")
    log = master_log(h)
    assert not [line for line in log.splitlines() if line.startswith(FORGED)], log[-2000:]
    assert "\x1b" not in log and "\x07" not in log
    sock.close(0)


@pytest.mark.open_wire
def test_a_newline_in_a_device_id_cannot_forge_a_log_line_on_an_open_master(harness, ctx):
    h = harness
    h.start_master()
    device_id = f"evil\n{FORGED}"
    sock = _open_dealer(h, ctx, routing_id=device_id.encode())   # open, a device id is its connection's routing id
    reply = ask(sock, register(device_id).encode())
    assert isinstance(reply, p.Error) and reply.code == "bad_message", reply
    h.client().status()
    wait_until(lambda: "Register.device_id" in master_log(h), 20, "the refusal logged")
    log = master_log(h)
    assert not [line for line in log.splitlines() if line.startswith(FORGED)], log[-2000:]
    sock.close(0)


GARBAGE = [b"\x01R", b"\xc1"]   # a Register header and a body that is not msgpack


def _flood(h: Harness, ctx: zmq.Context, keyed: bool, strangers: int, repeats: int) -> None:
    """`strangers` peers send one garbage message each, one more sends `repeats`; each gets its bad_message answer."""
    socks = [dealer(h, ctx)[0] if keyed else _open_dealer(h, ctx) for _ in range(strangers + 1)]
    for sock in socks[:-1]:
        sock.send_multipart(GARBAGE)
    for _ in range(repeats):
        socks[-1].send_multipart(GARBAGE)
    for sock, expected in [(s, 1) for s in socks[:-1]] + [(socks[-1], repeats)]:
        for _ in range(expected):
            assert sock.poll(30_000), "the master answers every garbage message"
            assert p.decode(sock.recv_multipart()).code == "bad_message"
    for sock in socks:
        sock.close(0)


def _open_dealer(h: Harness, ctx: zmq.Context, routing_id: bytes | None = None) -> zmq.Socket:
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    if routing_id is not None:
        sock.routing_id = routing_id
    sock.connect(h.url)
    return sock


@pytest.mark.parametrize("secured", [pytest.param(False, marks=pytest.mark.open_wire), True], ids=["open", "curve"])
def test_a_flood_of_garbage_from_many_peers_makes_a_few_log_lines_and_a_summary(tmp_path, ctx, secured):
    h = Harness(tmp_path, secured=secured)
    try:
        h.start_master()
        client = h.client()
        before = client.status()["bad_messages"]
        started = time.monotonic()
        _flood(h, ctx, secured, strangers=150, repeats=3000)
        assert client.status()["bad_messages"] - before == 3150

        def logged() -> list[str]:
            return [line for line in master_log(h).splitlines() if "bad message" in line or "refused" in line]

        # At most 5 lines and a summary per 5 s window, however many peers and messages: count the windows spanned
        windows = int((time.monotonic() - started) / 5.0) + 2
        assert len(logged()) <= 6 * windows < 3150 / 10, (windows, logged()[:20])
        # The summary comes with the next message the master receives once the window has passed
        wait_until(lambda: client.status() and "more messages from" in master_log(h), 30, "the refusal summary")
        summary = [line for line in logged() if "more messages from" in line]
        assert "in the last" in summary[0] and ("keys" if secured else "connections") in summary[0], summary
        assert len(logged()) <= 6 * (int((time.monotonic() - started) / 5.0) + 2)
    finally:
        h.stop()


# --- item 6: a flood of fresh keys never locks a genuine worker out --------------------------------------------

def _answers_within(socks: list[zmq.Socket], timeout_s: float) -> int:
    """How many of `socks` got an answer before one shared deadline (a refused handshake never answers)."""
    poller = zmq.Poller()
    for sock in socks:
        poller.register(sock, zmq.POLLIN)
    waiting, deadline = set(socks), time.monotonic() + timeout_s
    while waiting and time.monotonic() < deadline:
        for sock, _ in poller.poll(100):
            if sock in waiting:
                sock.recv_multipart()
                waiting.discard(sock)
                poller.unregister(sock)
    return len(socks) - len(waiting)


def test_after_1050_fresh_keys_a_genuine_worker_still_enrolls_and_runs_a_task(secured_harness, ctx):
    h = secured_harness
    h.start_master()
    client = h.client()
    submit = p.Submit(1, []).encode()
    for batch in range(21):   # 1,050 keys, 50 connections open at a time
        socks = [dealer(h, ctx)[0] for _ in range(50)]
        for sock in socks:
            sock.send_multipart(submit, zmq.NOBLOCK)
        _answers_within(socks, 5.0)   # an answer each, or (refused at the handshake) none
        for sock in socks:
            sock.close(0)
    wait_until(lambda: db_query(h.db, "SELECT count(*) FROM keys WHERE state = 'pending'")[0][0] >= 1000, 20,
               "a thousand pending keys")
    # When a genuine new worker starts
    h.start_worker("genuine")

    def listed_pending() -> bool:
        rows = json.loads(keys_cli(h, "list", "--state", "pending", "--json").stdout)
        return any(r["device_id"] == "genuine" and r["public_key"] == key_of(h, "genuine") for r in rows)

    # Then it appears in `keys list` as pending, is accepted by its device id and runs a task
    wait_until(listed_pending, 30, "the genuine worker listed as pending")
    assert db_query(h.db, "SELECT count(*) FROM keys WHERE state = 'pending'")[0][0] <= 1000
    done = keys_cli(h, "accept", "genuine")
    assert done.returncode == 0, done
    task_id = client.submit(build_spec(shell="echo enrolled", device="genuine"))[0]
    result = client.wait([task_id], timeout_s=30)[task_id]
    assert result["state"] == "done" and result["device_id"] == "genuine", result


# --- the hint in the log is safe to paste -----------------------------------------------------------------------

def test_the_master_suggests_accepting_by_device_id_or_by_quoted_key(secured_harness, ctx):
    h = secured_harness
    h.start_master()
    h.start_worker("crawler-07")
    wait_until(lambda: "keys accept crawler-07" in master_log(h), 20, "the hint for crawler-07")
    # A second key claiming the same device id: the hint names the key, quoted for the shell
    twin, twin_key = dealer(h, ctx)
    reply = ask(twin, register("crawler-07").encode())
    assert reply.code == "pending" and f"keys accept {shlex.quote(twin_key)}" in reply.message, reply
    # (a device id holds only A-Z a-z 0-9 _ . : -, which a shell never splits)
    for line in master_log(h).splitlines():
        if "keys accept " in line:
            assert len(shlex.split(line.split("keys accept ", 1)[1])) == 1, line
    twin.close(0)


# --- a pending worker joins as soon as its key is accepted ----------------------------------------------------

def test_a_pending_worker_asks_again_on_one_connection_says_so_once_and_joins_when_accepted(secured_harness):
    h = secured_harness
    h.start_master()
    client = h.client()
    # Given a worker whose key nobody accepted, refused as pending at least three times
    h.start_worker("newbie")
    wait_until(lambda: client.status()["refused_messages"] >= 3, 30, "three refused Registers")
    # Then it said so once, and asked again over the same connection (the master logs a connection's first refusal)
    worker_log = (h.dir / "newbie.log").read_text(encoding="utf-8", errors="replace")
    assert worker_log.count("master error pending") == 1, worker_log
    assert master_log(h).count("later refusals of this connection are counted only") <= 1, master_log(h)
    # When its key is accepted, it joins (the master tells the connection it heard last) and runs a task
    assert keys_cli(h, "accept", "newbie").returncode == 0
    task_id = client.submit(build_spec(shell="echo joined", device="newbie"))[0]
    result = client.wait([task_id], timeout_s=30)[task_id]
    assert result["state"] == "done" and result["device_id"] == "newbie", result
