"""Safe by default (issue 6, before CURVE): no accidental open master, workers that refuse what they were not
allowed to run, a cap on one client's unfinished tasks, owner-only files and no secret in any log or output.

Every test runs real processes (`python -m zmqgrid`) on loopback, except the table of addresses."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import zmq

from zmqgrid import protocol as p
from zmqgrid.client import build_spec
from zmqgrid.config import load_config
from zmqgrid.errors import RemoteError, UsageError
from zmqgrid.logs import PrivateRotatingFileHandler
from zmqgrid.security import is_loopback, require_safe_bind

from .helpers import REPO, Harness, db_counts, free_port_block, stays

pytestmark = [pytest.mark.timeout(90), pytest.mark.open_wire]

SECRET = "s3cret-api-key-never-log-me"
REFUSAL_START = "error: refusing to bind {host} without CURVE encryption;"
REFUSAL_END = "pass --insecure to run open on a trusted network"


def run_cli(tmp_path: Path, *args: str, env: dict | None = None, timeout_s: float = 30) -> subprocess.CompletedProcess:
    full_env = dict(os.environ, PYTHONPATH=str(REPO), **(env or {}))
    full_env.pop("ZMQGRID_MASTER", None)
    return subprocess.run([sys.executable, "-m", "zmqgrid", *args], cwd=tmp_path, env=full_env, capture_output=True,
                          text=True, timeout=timeout_s, stdin=subprocess.DEVNULL)


# --- 1. no accidental open master --------------------------------------------------------------------------

@pytest.mark.parametrize("host, loopback", [
    ("127.0.0.1", True), ("127.0.0.2", True), ("127.255.255.254", True), ("::1", True), ("[::1]", True),
    ("localhost", True), ("LOCALHOST", True),
    ("0.0.0.0", False), ("*", False), ("::", False), ("10.0.0.5", False), ("192.168.1.10", False),
    ("master.example.com", False), ("128.0.0.1", False), ("eth0", False)])
def test_only_loopback_addresses_count_as_loopback(host, loopback):
    assert is_loopback(host) is loopback


def test_the_guard_is_satisfied_by_loopback_insecure_or_a_future_curve_setting():
    def config(**kw):
        return SimpleNamespace(**{"host": "0.0.0.0", "port": 8000, "pub_port": 8001, "heartbeat_port": 8002,
                                  "insecure": False, **kw})
    with pytest.raises(UsageError, match="refusing to bind 0.0.0.0 without CURVE"):
        require_safe_bind(config())
    require_safe_bind(config(host="127.0.0.3"))
    require_safe_bind(config(insecure=True))
    require_safe_bind(config(curve=True))    # what the CURVE milestone will set


@pytest.mark.parametrize("how", ["flag", "wildcard", "lan address", "environment", "config file", "standalone"])
def test_a_master_bound_to_the_network_without_curve_is_refused_with_one_line(tmp_path, how):
    port = free_port_block()
    args = ["distribute", "--mode", "master", "--port", str(port), "--db", "ledger.db", "--log-file", "m.log"]
    env: dict[str, str] = {}
    host = {"wildcard": "*", "lan address": "10.20.30.40"}.get(how, "0.0.0.0")
    if how in ("flag", "wildcard", "lan address"):
        args += ["--host", host]
    elif how == "environment":
        env["ZMQGRID_HOST"] = host
    elif how == "config file":
        (tmp_path / "m.json").write_text(json.dumps({"mode": "master", "host": host}))
        args += ["--config", "m.json"]
    else:
        args = ["distribute", "--mode", "standalone", "--host", host, "--port", str(port), "--db", "ledger.db",
                "--log-file", "m.log", "--workers", "0", "--no-dashboard"]
    done = run_cli(tmp_path, *args, env=env)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 3, done
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(REFUSAL_START.format(host=host)) and lines[0].endswith(REFUSAL_END), lines[0]
    assert not (tmp_path / "ledger.db").exists()   # refused before the ledger or any socket was opened


def test_insecure_runs_open_and_warns_at_every_start(tmp_path):
    harness = Harness(tmp_path)
    try:
        harness.start_master("--host", "0.0.0.0", "--insecure")
        client = harness.client()
        task_id = client.submit(build_spec(shell="true"))[0]   # it serves: reached over loopback via 0.0.0.0
        assert client.task(task_id)["state"] == "queued"
        harness.kill(harness.master, 15)
        harness.start_master("--host", "0.0.0.0", "--insecure")
        log = (tmp_path / "master.log").read_text()
        warnings = [line for line in log.splitlines() if " WARNING " in line and "INSECURE" in line]
        assert len(warnings) == 2, log
        assert "0.0.0.0" in warnings[0] and "--insecure" in warnings[0]
    finally:
        harness.stop()


def test_insecure_can_come_from_the_environment(tmp_path):
    harness = Harness(tmp_path, env={"ZMQGRID_INSECURE": "true", "ZMQGRID_HOST": "0.0.0.0"})
    try:
        harness.start_master()
        assert "INSECURE" in (tmp_path / "master.log").read_text()
    finally:
        harness.stop()


def test_any_loopback_address_needs_no_flag_and_gets_no_warning(tmp_path):
    harness = Harness(tmp_path)
    harness.url = f"tcp://127.0.0.2:{harness.port}"
    try:
        harness.start_master("--host", "127.0.0.2")
        assert harness.client().status()["bad_messages"] == 0
        assert "INSECURE" not in (tmp_path / "master.log").read_text()
    finally:
        harness.stop()


# --- 2. workers limit what they run ------------------------------------------------------------------------

def test_allow_lists_are_checked_as_config(tmp_path):
    config = load_config("worker", env={"ZMQGRID_ALLOWED_KINDS": "python,script"},
                         flags={"allowed_modules": ["myjobs", "zmqgrid.samples"]})
    assert config.allowed_kinds == ["python", "script"] and config.allowed_modules == ["myjobs", "zmqgrid.samples"]
    assert load_config(env={}).allowed_kinds == ["shell", "script", "python"]
    assert load_config(env={}).allowed_modules == []
    for flags, words in ((({"allowed_kinds": ["perl"]}), "--allow-kind"), ({"allowed_kinds": []}, "--allow-kind"),
                         ({"allowed_modules": ["not a module"]}, "--allow-module")):
        with pytest.raises(Exception, match=words):
            load_config("worker", env={}, flags=flags)


def test_a_restricted_worker_runs_what_it_allows_and_refuses_the_rest(tmp_path):
    """Real master, one worker that allows only python tasks from tests.tasks."""
    harness = Harness(tmp_path)
    marker = tmp_path / "shell-ran"
    try:
        harness.start_master()
        harness.start_worker("picky", "--allow-kind", "python", "--allow-module", "tests.tasks")
        client = harness.client()
        harness.wait_online(client, "picky")
        [device] = [d for d in client.devices() if d["device_id"] == "picky"]
        assert {"no-kind:shell", "no-kind:script"} <= set(device["tags"]) and "no-kind:python" not in device["tags"]

        add = client.submit(build_spec(python="tests.tasks:add", args=[2, 3]))[0]
        # A module refusal is the fleet's setting, not chance: it fails at once, its retries unused
        other_module = client.submit(build_spec(python="zmqgrid.samples:noop", retries=3))[0]
        shell = client.submit(build_spec(shell=f"touch {marker}"))[0]
        done = client.wait([add, other_module], timeout_s=30)

        assert done[add]["state"] == "done" and done[add]["value"] == 5
        assert (done[other_module]["state"], done[other_module]["attempt"]) == ("failed", 1), done[other_module]
        assert "not retried: Forbidden recurs on every attempt" in done[other_module]["reason"]
        error = done[other_module]["error"]
        assert error["type"] == "Forbidden", error
        assert "zmqgrid.samples" in error["message"] and "allowed_modules" in error["message"]
        # The shell task is never sent to a worker that refuses its kind: it waits, saying why, and never runs.
        stays(lambda: client.task(shell)["state"] == "queued", 1.0, "the refused shell task staying queued")
        shown = client.task(shell)
        assert shown["state"] == "queued" and "allowed_kinds" in shown["waiting"], shown
        assert client.status()["stuck_tasks"] == 1
        assert not marker.exists()
        assert "refused task" in (tmp_path / "picky.log").read_text()
    finally:
        harness.stop()


class FakeMaster:
    """A raw ROUTER that registers one worker and hands it tasks the real master would never send it."""

    def __init__(self, harness: Harness) -> None:
        self.ctx = zmq.Context()
        self.router = self.ctx.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.LINGER, 0)
        self.router.bind(harness.url)
        self.port = harness.port

    def receive(self, kind: type, timeout_s: float = 20.0):
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            if self.router.poll(int(left * 1000)):
                identity, *frames = self.router.recv_multipart()
                msg = p.decode(frames)
                if isinstance(msg, kind):
                    return identity, msg
        raise AssertionError(f"no {kind.__name__} within {timeout_s}s")

    def send(self, identity: bytes, msg: p.Message) -> None:
        self.router.send_multipart([identity, *msg.encode()])

    def close(self) -> None:
        self.router.close(0)
        self.ctx.term()


def test_a_worker_refuses_a_forbidden_task_even_when_sent_one_without_running_anything(tmp_path):
    harness = Harness(tmp_path)
    fake = FakeMaster(harness)
    marker = tmp_path / "shell-ran"
    try:
        # A fixed prefetch: an adaptive one would free more credit as it grows, which is not what is counted here
        harness.start_worker("picky", "--allow-kind", "python", "--allow-module", "tests.tasks", concurrency=1,
                             env={"ZMQGRID_PREFETCH": "2"})
        identity, register = fake.receive(p.Register)
        assert {"no-kind:shell", "no-kind:script"} <= set(register.tags)
        fake.send(identity, p.RegisterAck("fake", fake.port + 1, fake.port + 2, 0.2, 30.0, []))
        tasks = [{"id": "sh", "kind": "shell", "command": f"touch {marker}", "attempt": 1, "timeout": 10},
                 {"id": "scr", "kind": "script", "source": f"open({str(marker)!r}, 'w')", "filename": "x.py",
                  "args": [], "attempt": 1, "timeout": 10},
                 {"id": "mod", "kind": "python", "function": "zmqgrid.samples:noop", "args": [], "kwargs": {},
                  "attempt": 1, "timeout": 10},
                 {"id": "lookalike", "kind": "python", "function": "tests.tasks_evil:run", "args": [], "kwargs": {},
                  "attempt": 1, "timeout": 10},
                 {"id": "ok", "kind": "python", "function": "tests.tasks:add", "args": [2, 3], "kwargs": {},
                  "attempt": 1, "timeout": 10}]
        fake.send(identity, p.Tasks(tasks))
        results: dict[str, dict] = {}
        freed = 0
        while len(results) < len(tasks):
            _, msg = fake.receive(p.Results)
            results.update({r["id"]: r for r in msg.results})
            freed += msg.credit
            fake.send(identity, p.ResultAck([[r["id"], r["attempt"]] for r in msg.results]))
        for task_id, words in (("sh", ["shell", "allowed_kinds"]), ("scr", ["script", "allowed_kinds"]),
                               ("mod", ["zmqgrid.samples", "allowed_modules"]),
                               ("lookalike", ["tests.tasks_evil", "allowed_modules"])):
            result = results[task_id]
            assert result["state"] == "failed" and result["error"]["type"] == "Forbidden", result
            assert all(w in result["error"]["message"] for w in words), result["error"]
            # nothing ran: no start time, output or exit code (on the wire, nil fields are left out)
            assert result.get("started_at") is None and not result.get("stdout") and result.get("exit_code") is None
        assert results["ok"]["state"] == "done" and results["ok"]["value"] == 5
        # Every refused task's credit comes back: once all ended the worker offers its whole credit again (the
        # tasks this fake master sent past the credit it was offered add none)
        assert freed == register.credit == 3
        assert not marker.exists()
    finally:
        harness.stop()
        fake.close()


# --- 3. limits ---------------------------------------------------------------------------------------------

def test_every_socket_is_made_by_make_socket_so_every_one_has_maxmsgsize():
    """transport.make_socket always sets ZMQ_MAXMSGSIZE; no other module of zmqgrid creates a socket itself."""
    import ast
    creators = []
    for path in sorted((REPO / "zmqgrid").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "socket" \
                    and not (isinstance(node.func.value, ast.Name) and node.func.value.id == "socket"):
                creators.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert len(creators) == 1 and creators[0].startswith("zmqgrid/transport.py:"), creators
    from zmqgrid.transport import make_socket
    ctx = zmq.Context()
    try:
        for kind in (zmq.ROUTER, zmq.DEALER, zmq.PUB, zmq.SUB, zmq.PUSH, zmq.PULL):
            sock = make_socket(ctx, kind, max_message_bytes=4096)
            assert sock.getsockopt(zmq.MAXMSGSIZE) == 4096
            sock.close(0)
    finally:
        ctx.term()


def test_one_client_cannot_queue_more_than_max_queued_per_client(tmp_path):
    harness = Harness(tmp_path, env={"ZMQGRID_MAX_QUEUED_PER_CLIENT": "5"})
    try:
        harness.start_master()
        client = harness.client()
        first = client.submit([build_spec(shell="true") for _ in range(3)])
        with pytest.raises(RemoteError) as refused:
            client.submit([build_spec(shell="true") for _ in range(3)])
        assert refused.value.code == "too_large"
        assert "max_queued_per_client = 5" in refused.value.message and "3 unfinished" in refused.value.message
        assert db_counts(harness.db) == {"queued": 3}                   # nothing of the refused submit
        assert client.submit([build_spec(shell="true", id=i) for i in first]) == first   # a resend adds nothing
        client.submit([build_spec(shell="true") for _ in range(2)])      # exactly at the limit
        with pytest.raises(RemoteError, match="max_queued_per_client"):
            client.submit(build_spec(shell="true"))
        client.cancel(first[:2])                                          # finished tasks free room
        client.submit([build_spec(shell="true") for _ in range(2)])
        # Open, there is no key: the cap counts by connection, so another connection has a count of its own
        # (under CURVE it counts by key: tests/test_curve.py, test_the_queue_cap_counts_per_key_not_per_connection)
        assert harness.client().submit([build_spec(shell="true") for _ in range(5)])
        assert db_counts(harness.db) == {"queued": 10, "cancelled": 2}
    finally:
        harness.stop()


# --- 4. owner-only files, no secret in any log -------------------------------------------------------------

def test_the_ledger_and_the_logs_are_created_owner_only(tmp_path):
    old = os.umask(0o022)     # the usual umask, which would leave them world-readable
    harness = Harness(tmp_path)
    try:
        harness.start_master()
        harness.start_worker("w1")
        client = harness.client()
        harness.wait_online(client, "w1")
        client.wait(client.submit(build_spec(shell="echo hi")), timeout_s=20)
        for path in (harness.db, tmp_path / "ledger.db-wal", tmp_path / "master.log", tmp_path / "w1.log"):
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    finally:
        os.umask(old)
        harness.stop()


def test_rotated_logs_stay_owner_only(tmp_path):
    handler = PrivateRotatingFileHandler(tmp_path / "r.log", maxBytes=100, backupCount=2, encoding="utf-8")
    try:
        for i in range(20):
            handler.emit(__import__("logging").makeLogRecord({"msg": f"line {i} " + "x" * 40}))
    finally:
        handler.close()
    files = sorted(tmp_path.glob("r.log*"))
    assert len(files) == 3 and all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files)


def test_an_api_key_is_refused_and_its_value_never_reaches_the_terminal_or_a_log(tmp_path):
    # An api_key authenticates nothing (CURVE keys do): a master must not start as if it did, nor echo the secret
    (tmp_path / "old.json").write_text(json.dumps({"mode": "master", "api_key": SECRET}), encoding="utf-8")
    env = {"ZMQGRID_LOG_LEVEL": "DEBUG", "ZMQGRID_LOG_FILE": str(tmp_path / "master.log")}
    for args, extra in ((["distribute", "--mode", "master", "--config", "old.json"], {}),
                        (["distribute", "--mode", "master"], {"ZMQGRID_API_KEY": SECRET}),
                        (["distribute", "--status", "--json"], {"ZMQGRID_API_KEY": SECRET})):
        done = run_cli(tmp_path, *args, env={**env, **extra})
        assert done.returncode == 3, done
        assert done.stdout == "" and len(done.stderr.splitlines()) == 1, done
        assert 'key "api_key" does nothing; remove it' in done.stderr and SECRET not in done.stderr, done
    assert not [f for f in tmp_path.iterdir() if f.suffix == ".log" and SECRET in f.read_text(errors="replace")]
