"""CURVE (issue 6): every socket refuses a peer without an accepted key, roles limit what a key may ask, a key
speaks for its own device only, enrollment (pending -> accepted) and revocation work on a live cluster.

Real processes (`python -m zmqgrid`), real sockets on 127.0.0.1 and the real ledger; raw pyzmq sockets play the
intruders."""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest
import zmq

from zmqgrid import protocol as p
from zmqgrid.client import Client, build_spec
from zmqgrid.config import Config
from zmqgrid.errors import MasterUnavailable, RemoteError, TaskNotFound
from zmqgrid.security import generate, master_public_key
from zmqgrid.transport import Curve

from .helpers import Harness, db_query, keys_cli, run_cli, stays, wait_until
from .scenes import a_task_running_on_w1_or_w2

pytestmark = pytest.mark.timeout(120)


def ledger_rows(h: Harness) -> dict:
    return {t: db_query(h.db, f"SELECT count(*) FROM {t}")[0][0] for t in ("tasks", "attempts", "schedules")}


def key_of(h: Harness, name: str) -> str:
    return h.client_curve(name).public.decode()


def register(device_id: str) -> p.Register:
    return p.Register(device_id=device_id, name=device_id, hostname="intruder", os="Linux", python_version="3",
                      python_executable="python", tags=[], concurrency=1, credit=5, running=[], outbox=[],
                      pid=os.getpid(), version="0.1.0", weight=1.0)


def answer(sock: zmq.Socket, timeout_s: float = 5.0):
    """The master's reply on a raw DEALER, or None when it stays silent for timeout_s (a refused handshake)."""
    return p.decode(sock.recv_multipart()) if sock.poll(int(timeout_s * 1000)) else None


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    """A secured master with worker w1 online, keys for intruders: stranger (unknown), rejected, revoked."""
    h = Harness(tmp_path_factory.mktemp("curve"), secured=True)
    ctx = zmq.Context()
    try:
        h.start_master()
        h.start_worker("w1")
        h.wait_online(h.client(), "w1")
        # rejected: it knocked (pending), then an operator refused it; revoked: accepted (w3), then revoked
        knock = ctx.socket(zmq.DEALER)
        _secure(knock, h.client_curve("rejected"))
        knock.connect(h.url)
        knock.send_multipart(p.Submit(1, []).encode())
        assert answer(knock).code == "pending"
        knock.close(0)
        assert keys_cli(h, "reject", key_of(h, "rejected")).returncode == 0
        assert keys_cli(h, "revoke", key_of(h, "w3")).returncode == 0
        log = h.dir / "master.log"
        for name, change in (("rejected", "pending -> rejected"), ("w3", "accepted -> revoked")):
            wait_until(lambda: f"key {key_of(h, name)[:8]}: {change}" in log.read_text(), 10, f"{name} applied")
        h.client_curve("stranger")
        h.ctx = ctx
        yield h
    finally:
        h.stop()
        ctx.destroy(0)


def _secure(sock: zmq.Socket, curve: Curve | None) -> None:
    if curve is not None:
        sock.curve_serverkey, sock.curve_publickey, sock.curve_secretkey = curve.server_key, curve.public, curve.secret


def raw(h: Harness, kind: int, who: str | None, port: int) -> zmq.Socket:
    sock = h.ctx.socket(kind)
    sock.linger = 0
    _secure(sock, h.client_curve(who) if who else None)
    sock.connect(f"tcp://127.0.0.1:{port}")
    return sock


INTRUDERS = [None, "stranger", "rejected", "w3"]   # no key, an unknown key, a rejected key, a revoked key


@pytest.mark.parametrize("who", INTRUDERS, ids=["no key", "unknown key", "rejected key", "revoked key"])
def test_the_router_takes_no_request_from_a_peer_without_an_accepted_key(secured, who):
    before = ledger_rows(secured)
    sock = raw(secured, zmq.DEALER, who, secured.port)
    spec = build_spec(shell="touch pwned")
    try:   # a refused handshake leaves no pipe (libzmq may not reconnect): a blocking send would wait forever
        sock.send_multipart(p.Submit(7, [spec]).encode(), zmq.NOBLOCK)
    except zmq.Again:
        assert who != "stranger", "an unknown key is let in to be told it is pending"
    reply = answer(sock, 1.5)
    for msg in (p.Control(8, "cancel", {"state": "queued"}), register("w1")):
        try:   # a refused handshake leaves no pipe: a blocking send would wait forever
            sock.send_multipart(msg.encode(), zmq.NOBLOCK)
        except zmq.Again:
            pass
    if who == "stranger":   # let in only to be told it waits for acceptance, then recorded as pending
        assert isinstance(reply, p.Error) and reply.code == "pending", reply
        wait_until(lambda: db_query(secured.db, "SELECT state FROM keys WHERE public_key = ?",
                                    (key_of(secured, who),)) == [("pending",)], 10, "the stranger's key pending")
    else:                   # the handshake itself is refused: not one byte reaches the master's handlers
        assert reply is None
    assert ledger_rows(secured) == before
    with pytest.raises(TaskNotFound):
        secured.client().task(spec["id"])
    assert secured.online(secured.client()) == {"w1"}
    sock.close(0)


@pytest.mark.parametrize("who", ["w1", "client"])
def test_a_key_may_do_only_what_its_role_allows(secured, who):
    if who == "client":
        assert keys_cli(secured, "accept", str(secured.keys / "client.key")).returncode == 0
    before = ledger_rows(secured)
    with Client(secured.url, timeout_s=5, curve=secured.client_curve(who)) as client:
        if who == "client":   # the running master takes the ledger's change within timeout_check_interval
            wait_until(lambda: _answers(client), 10, "the client key accepted by the master")
        if who == "w1":   # a worker key: no submit, no query, no control
            for call in (lambda: client.submit(build_spec(shell="true")), client.status,
                         lambda: client.cancel(["x"])):
                with pytest.raises(RemoteError) as e:
                    call()
                assert e.value.code == "forbidden"
        else:             # a client key: submit and query yes, control no
            task_id = client.submit(build_spec(shell="true", device="nobody"))[0]
            assert client.task(task_id)["state"] == "queued"
            for action in ("cancel", "requeue"):
                with pytest.raises(RemoteError, match="a client key may not send Control " + action):
                    client.request(p.Control, action, {"ids": [task_id]})
            with pytest.raises(RemoteError, match="a client key may not send Control drain"):
                client.request(p.Control, "drain", {"devices": ["w1"]})
            assert client.task(task_id)["state"] == "queued"
            secured.client().cancel([task_id])
            before["tasks"] += 1
    assert ledger_rows(secured) == before
    assert "refused" in (secured.dir / "master.log").read_text()


def _answers(client: Client) -> bool:
    try:
        client.status()
        return True
    except RemoteError:
        return False


@pytest.mark.parametrize("who", INTRUDERS, ids=["no key", "unknown key", "rejected key", "revoked key"])
def test_pub_tells_nothing_to_a_peer_without_an_accepted_key(secured, who):
    good = raw(secured, zmq.SUB, "w2", secured.port + 1)   # only worker keys may subscribe (Subscriptions)
    bad = raw(secured, zmq.SUB, who, secured.port + 1)
    for sock in (good, bad):
        sock.setsockopt(zmq.SUBSCRIBE, b"beacon")
    seen = []
    # Given three beacons reached an accepted subscriber that connected at the same time
    wait_until(lambda: good.poll(0) and seen.append(good.recv_multipart()) or len(seen) >= 3, 20,
               "three beacons on the accepted subscriber")
    # Then the other one got nothing
    assert not bad.poll(0)
    good.close(0)
    bad.close(0)


def test_pull_takes_no_heartbeat_from_a_wrong_key_nor_for_another_device(secured):
    client = secured.client()
    forged = p.Heartbeat(device_id="w1", incarnation="", seq=1, running=[], held=[], metrics={"hostname": "forged"},
                         sent_at=time.time()).encode()
    pushes = [raw(secured, zmq.PUSH, who, secured.port + 2) for who in [*INTRUDERS, "w2"]]
    refused = client.status()["refused_messages"]
    for sock in pushes:
        try:
            sock.send_multipart(forged, zmq.NOBLOCK)
        except zmq.Again:
            pass
    # The accepted but unbound w2 key gets through the handshake: its heartbeat for w1 is refused and counted.
    wait_until(lambda: client.status()["refused_messages"] > refused, 10, "the forged heartbeat refused")
    # w1's own heartbeats keep coming; none of the forged ones was taken
    stays(lambda: [d for d in client.devices() if d["device_id"] == "w1"][0]["hostname"] != "forged", 1.0,
          "w1's hostname unforged")
    for sock in pushes:
        sock.close(0)


def test_a_worker_key_cannot_register_or_report_for_another_device(secured):
    client = secured.client()
    task_id = client.submit(build_spec(shell="sleep 30", device="w1"))[0]
    wait_until(lambda: client.task(task_id)["state"] == "running", 20, "the task running on w1")
    sock = raw(secured, zmq.DEALER, "w2", secured.port)   # accepted, bound to no device yet
    sock.send_multipart(register("w1").encode())
    reply = answer(sock)
    assert isinstance(reply, p.Error) and reply.code == "forbidden" and "device w1 belongs to another key" in \
        reply.message, reply
    result = {"id": task_id, "attempt": 1, "state": "done", "exit_code": 0, "value": None, "error": None,
              "stdout": "forged", "stderr": "", "started_at": None, "finished_at": time.time(), "duration_s": 0.1}
    sock.send_multipart(p.Results([result], 1).encode())
    assert answer(sock).code == "not_registered"
    task = client.task(task_id)
    assert task["state"] == "running" and task["device_id"] == "w1"
    assert secured.online(client) == {"w1"}
    client.cancel([task_id])
    sock.close(0)


def test_a_pending_worker_gets_no_task_until_accepted_then_runs_them(secured_harness):
    h = secured_harness
    h.start_master()
    h.start_worker("newbie")
    wait_until(lambda: db_query(h.db, "SELECT state, role, device_id FROM keys WHERE public_key = ?",
                                (key_of(h, "newbie"),)) == [("pending", "worker", "newbie")], 20, "newbie pending")
    listed = keys_cli(h, "list", "--json")
    assert '"pending"' in listed.stdout and "newbie" in listed.stdout, listed
    client = h.client()
    task_id = client.submit(build_spec(shell="echo hello"))[0]
    stays(lambda: client.task(task_id)["state"] == "queued", 1.0, "the task queued while newbie is pending")
    done = keys_cli(h, "accept", "newbie")
    assert done.returncode == 0 and "accepted" in done.stdout, done
    result = client.wait([task_id], timeout_s=30)[task_id]
    assert result["state"] == "done" and result["device_id"] == "newbie"


def test_revoking_a_key_cuts_its_running_worker_off_at_once(secured_harness):
    h = secured_harness
    client, task_id, victim, other = a_task_running_on_w1_or_w2(h)
    done = keys_cli(h, "revoke", victim)
    assert done.returncode == 0 and "revoked" in done.stdout, done
    wait_until(lambda: victim not in h.online(client), 10, "the revoked device offline")
    wait_until(lambda: client.task(task_id)["device_id"] == other and client.task(task_id)["attempt"] == 2, 20,
               "the task re-run on the other worker")
    # The revoked worker is told and stops (test_security_revocation.py); it never comes back online
    wait_until(lambda: h.workers[victim].poll() is not None, 20, "the revoked worker to stop")
    stays(lambda: victim not in h.online(client), 1.0, "the revoked device offline")
    client.cancel([task_id])


@pytest.mark.parametrize("args, words", [
    (("accept", "no-such-key"), "no key 'no-such-key'"),
    (("revoke", "no-such-key"), "no key 'no-such-key'"),
    (("accept", "x", "--role", "root"), "Invalid value for '--role'"),
    (("generate", "--role", "root"), "Invalid value for '--role'"),
])
def test_keys_cli_mistakes_are_one_line_and_exit_3(tmp_path, args, words):
    (tmp_path / "ledger.db").write_bytes(b"")
    done = run_cli("keys", *args, *(("--db", "ledger.db") if args[0] != "generate" else ()), cwd=tmp_path)
    assert done.returncode == 3, done
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], done.stderr


def test_a_key_that_begins_with_a_dash_is_the_key_argument_not_an_option(tmp_path):
    # One z85 key in 85 begins with '-' (a fixture once drew one, and `keys revoke` said "No such option")
    key = next(k for k in (zmq.curve_keypair()[0].decode() for _ in range(100_000)) if k.startswith("-"))
    assert run_cli("keys", "accept", key, "--role", "worker", "--db", "l.db", cwd=tmp_path).returncode == 0
    done = run_cli("keys", "revoke", key, "--db", "l.db", "--json", cwd=tmp_path)
    assert done.returncode == 0 and key in done.stdout, done
    assert db_query(tmp_path / "l.db", "SELECT state FROM keys WHERE public_key = ?", (key,)) == [("revoked",)]


def test_keys_cli_keeps_a_revoked_key_revoked(tmp_path):
    run_cli("keys", "generate", "--role", "worker", "--dir", "k", cwd=tmp_path)
    assert run_cli("keys", "accept", "k/worker.key", "--db", "l.db", cwd=tmp_path).returncode == 0
    assert run_cli("keys", "revoke", "worker", "--db", "l.db", cwd=tmp_path).returncode == 0
    again = run_cli("keys", "accept", "worker", "--db", "l.db", cwd=tmp_path)
    assert again.returncode == 3 and "cannot become accepted" in again.stderr, again
    assert oct(os.stat(tmp_path / "k" / "worker.key_secret").st_mode & 0o777) == "0o600"


def test_a_secured_master_may_bind_every_interface_and_open_clients_get_nothing(secured_harness):
    h = secured_harness
    h.start_master("--host", "0.0.0.0")
    assert "INSECURE" not in (h.dir / "master.log").read_text()
    with Client(h.url, timeout_s=1.0) as open_client:
        with pytest.raises(MasterUnavailable):
            open_client.status()


def test_a_master_key_path_that_looks_like_a_z85_key_is_read_as_a_file(tmp_path):
    # "/tmp/<24 characters>/master.key" is 40 characters, all of the z85 alphabet: it must still be a path.
    folder = Path(tempfile.mkdtemp(prefix="zq", dir="/tmp"))
    short = Path("/tmp") / (folder.name + "x" * 24)[:24]
    folder.rename(short)
    try:
        made = generate("master", "master", short)
        assert len(str(short / "master.key")) == 40
        config = Config(curve=True, keys_dir=str(short))
        assert master_public_key(config) == made["public_key"].encode()
    finally:
        shutil.rmtree(short)


def test_the_queue_cap_counts_per_key_not_per_connection(tmp_path):
    h = Harness(tmp_path, env={"ZMQGRID_MAX_QUEUED_PER_CLIENT": "5"}, secured=True)
    try:
        h.start_master()   # no worker: what is submitted stays queued
        first, second = h.client(), h.client()   # two connections, one admin key
        assert len(first.submit([build_spec(shell="true") for _ in range(3)])) == 3
        with pytest.raises(RemoteError) as refused:
            second.submit([build_spec(shell="true") for _ in range(3)])
        assert refused.value.code == "too_large" and "max_queued_per_client = 5" in refused.value.message
        assert db_query(h.db, "SELECT count(*) FROM tasks") == [(3,)]
    finally:
        h.stop()
