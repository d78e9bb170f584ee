"""Test helpers: deadline polling and a harness that runs a real master and real workers as processes."""
from __future__ import annotations

import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import psutil
import sqlite_utils
from zmq.auth import load_certificate

from zmqgrid.client import Client
from zmqgrid.security import generate
from zmqgrid.store import key_store
from zmqgrid.store.task_store import TaskStore
from zmqgrid.transport import Curve

REPO = Path(__file__).resolve().parents[1]
FAST = {"ZMQGRID_HEARTBEAT_INTERVAL": "0.2", "ZMQGRID_DEVICE_TIMEOUT": "1.5", "ZMQGRID_TIMEOUT_CHECK_INTERVAL": "0.1"}


def wait_until(predicate: Callable[[], Any], timeout_s: float = 20.0, describe: str = "condition",
               interval_s: float = 0.05) -> Any:
    """Poll until predicate() is truthy; fail with the last value seen (not a hopeful sleep)."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {describe}; last value: {last!r}")


def sample_until(measure: Callable[[], Any], done: Callable[[], bool], timeout_s: float = 30.0,
                 interval_s: float = 0.005) -> list:
    """Call measure() every interval until done() or the deadline; returns every value seen (for peaks)."""
    seen = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        seen.append(measure())
        if done():
            return seen
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s}s; last values: {seen[-5:]!r}")


def stays(predicate: Callable[[], Any], seconds: float, describe: str = "condition",
          interval_s: float = 0.05) -> None:
    """Check that predicate() holds on every poll for `seconds`: a negative outcome proved by watching."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert predicate(), f"{describe} stopped holding"
        time.sleep(interval_s)


SUITE_KEYS = Path(tempfile.gettempdir()) / f"zmqgrid-suite-keys-{os.getpid()}"


def run_cli(*args: str, cwd: Path, timeout_s: float = 30) -> subprocess.CompletedProcess:
    """`python -m zmqgrid ARGS` from `cwd` (no config file there), with every ZMQGRID_* variable cleared."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZMQGRID_")}
    env["PYTHONPATH"] = str(REPO)
    if os.environ.get("TEST_WITH_CURVE") == "1":   # the secured suite: the harnesses' shared keys
        env.update(ZMQGRID_CURVE="true", ZMQGRID_KEYS_DIR=str(SUITE_KEYS))
    return subprocess.run([sys.executable, "-m", "zmqgrid", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout_s, stdin=subprocess.DEVNULL)


def keys_cli(h: "Harness", *args: str) -> subprocess.CompletedProcess:
    """`keys ...` on the harness's ledger, as an operator runs it on the master's machine."""
    return run_cli("keys", *args, "--db", str(h.db), cwd=h.dir)


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999   # Linux's default; other systems use 49152-65535, above it too


def _port_slice() -> range:
    """This test process's ports: below the ephemeral range (where an outgoing connection of any test could take
    the port between its pick and the master's bind), one slice per pytest-xdist worker so that two processes
    never pick the same block."""
    low = min(_ephemeral_range()[0], 49152)
    first = 10000 if low > 12000 else 1024
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    index = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").lstrip("gw") or 0)
    size = (low - first) // max(count, 1)
    return range(first + index * size, first + (index + 1) * size)


# A random start within the slice: two test sessions run side by side on one machine rarely start on the same block.
_next_port = [random.randrange(0, 30000, 3)]


def free_port_block(count: int = 3) -> int:
    """A port p with p..p+count-1 all free on 127.0.0.1 (the master binds port, port+1, port+2), taken in turn
    from this process's slice so that a harness restarting its master on its port finds it still its own."""
    ports = _port_slice()
    for _ in range(len(ports) // count):
        base = ports.start + _next_port[0] % (len(ports) - count)
        _next_port[0] += count
        ok = True
        for p in range(base, base + count):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", p))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise RuntimeError("no block of free ports")


def insert_task(store: TaskStore, spec: dict, retries: int, timeout_s: float | None, now: float) -> None:
    """Stage the insert of one validated task spec, as a submit of one task does (commit with store.commit())."""
    store.insert_tasks([(spec, retries, timeout_s)], now)


def db_counts(db_path: Path) -> dict[str, int]:
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        return dict(conn.execute("SELECT state, count(*) FROM tasks GROUP BY state").fetchall())
    finally:
        conn.close()


def db_query(db_path: Path, sql: str, params: tuple = ()) -> list:
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def account(db_path: Path, ids: list[str]) -> dict:
    """Where every submitted task ended: the counts a fault test must balance (0 missing, 0 twice)."""
    states = dict(db_query(db_path, "SELECT id, state FROM tasks"))
    twice = db_query(db_path, "SELECT task_id FROM attempts WHERE state = 'done' GROUP BY task_id HAVING count(*) > 1")
    counts = {"submitted": len(set(ids)), "missing": sum(1 for i in set(ids) if i not in states), "twice": len(twice)}
    for state in ("done", "failed", "quarantined", "timed_out", "cancelled", "queued", "assigned", "running"):
        counts[state] = sum(1 for i in set(ids) if states.get(i) == state)
    return counts


def assert_none_lost(db_path: Path, ids: list[str]) -> dict:
    c = account(db_path, ids)
    assert c["missing"] == 0 and c["twice"] == 0, c
    assert c["submitted"] == c["done"] + c["failed"] + c["quarantined"], c
    return c


class Harness:
    """A master process and worker processes on 127.0.0.1, all stopped by PID at teardown.

    `secured`: CURVE on. Keys live in `keys/`: the master's, an admin key (what `client()` uses) and worker keys
    w1..w4, all accepted through `authorized/` (the master's authorized_keys_dir); a worker with any other device id
    gets a fresh key of its own, which the master holds as pending until it is accepted.

    `port`: the master's first port (it binds port..port+2); by default a free block from this process's slice.
    `own_sessions`: each process in a session of its own, so that the scheduler (with autogroup) shares the CPU between
    them as between separate programs: what the benchmarks in tools/ measure on a busy machine."""

    AUTHORIZED_WORKERS = ("w1", "w2", "w3", "w4")

    def __init__(self, tmp_path: Path, env: dict[str, str] | None = None, secured: bool = False,
                 port: int | None = None, own_sessions: bool = False) -> None:
        self.dir = tmp_path
        # TEST_WITH_CURVE=1 runs every harness's cluster secured (README, Security: the suite with CURVE on).
        self.enroll_all = not secured and os.environ.get("TEST_WITH_CURVE") == "1"   # no test of enrollment here
        self.secured = secured = secured or self.enroll_all
        self.port = port or free_port_block()
        self.own_sessions = own_sessions
        self.url = f"tcp://127.0.0.1:{self.port}"
        self.db = tmp_path / "ledger.db"
        self.env = dict(os.environ, PYTHONPATH=str(REPO), **FAST)
        self.env.update(env or {})
        self.env.pop("ZMQGRID_MASTER", None)
        self.curve: Curve | None = None
        if secured:
            # The secured suite shares one set of keys, so CLI runs (run_cli) find them without a harness.
            self.keys = SUITE_KEYS if self.enroll_all else tmp_path / "keys"
            authorized = tmp_path / "authorized"
            authorized.mkdir()
            for role, name in (("master", "master"), ("admin", "admin"), ("client", "client"),
                               *(("worker", w) for w in self.AUTHORIZED_WORKERS)):
                if not (self.keys / f"{name}.key").exists():
                    generate(role, name, self.keys)
                if role != "master":
                    (authorized / f"{name}.key").write_text((self.keys / f"{name}.key").read_text())
            (authorized / "client.key").unlink()   # enrolled by the tests that need it
            self.env.update(ZMQGRID_CURVE="true", ZMQGRID_KEYS_DIR=str(self.keys),
                            ZMQGRID_AUTHORIZED_KEYS_DIR=str(authorized))
            self.curve = self.client_curve("admin")
        self.master: subprocess.Popen | None = None
        self.workers: dict[str, subprocess.Popen] = {}
        self.clients: list[Client] = []

    def client_curve(self, name: str) -> Curve:
        """A client-side Curve for the certificate keys/NAME.key_secret (made if missing, so not yet accepted)."""
        if not (self.keys / f"{name}.key_secret").exists():
            generate("worker", name, self.keys)
        public, secret = load_certificate(self.keys / f"{name}.key_secret")
        return Curve(public, secret, load_certificate(self.keys / "master.key")[0])

    def _spawn(self, args: list[str], log_name: str, env: dict[str, str] | None = None,
               python: tuple[str, ...] = (sys.executable,)) -> subprocess.Popen:
        # cwd is the temp dir, so no config file of the repo leaks into a test.
        with open(self.dir / log_name, "ab") as log:
            return subprocess.Popen([*python, "-m", "zmqgrid", *args], cwd=self.dir,
                                    env={**self.env, **(env or {})},
                                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=self.own_sessions)

    def start_master(self, *extra: str, python: tuple[str, ...] = (sys.executable,)) -> subprocess.Popen:
        """`python`: the interpreter's command line, e.g. with `-m cProfile -o FILE` (tools/bench.py --profile-master)."""
        self.master = self._spawn(["distribute", "--mode", "master", "--port", str(self.port), "--db", str(self.db),
                                   "--log-file", str(self.dir / "master.log"), *extra], "master.out", python=python)
        wait_until(lambda: self._answers(), 20, "the master to answer")
        return self.master

    def _answers(self) -> bool:
        if self.master is not None and self.master.poll() is not None:
            raise AssertionError(f"master exited with {self.master.returncode}: "
                                 f"{(self.dir / 'master.out').read_text()[-2000:]}")
        with Client(self.url, timeout_s=0.5, curve=self.curve) as c:
            try:
                c.status()
                return True
            except Exception:
                return False

    def start_worker(self, device_id: str, *extra: str, concurrency: int = 2, env: dict[str, str] | None = None,
                     python: tuple[str, ...] = (sys.executable,)) -> subprocess.Popen:
        proc = self._spawn(["distribute", "--mode", "worker", "--master", self.url, "--device-id", device_id,
                            "--concurrency", str(concurrency), "--log-file", str(self.dir / f"{device_id}.log"),
                            *extra], f"{device_id}.out", env={**self.worker_env(device_id), **(env or {})},
                           python=python)
        self.workers[device_id] = proc
        return proc

    def worker_env(self, device_id: str) -> dict[str, str]:
        if not self.secured:
            return {}
        self.client_curve(device_id)   # the worker's own key: authorized for w1..w4, else new and pending
        if self.enroll_all and device_id not in self.AUTHORIZED_WORKERS:
            self._accept(device_id)
        return {"ZMQGRID_KEY_FILE": str(self.keys / f"{device_id}.key_secret")}

    def _accept(self, name: str) -> None:
        """Enroll keys/NAME.key as an operator would (`keys accept`), unless it already is."""
        public = load_certificate(self.keys / f"{name}.key")[0].decode()
        db = sqlite_utils.Database(self.db)
        try:
            row = key_store.find_key(db, public)
            if row is None or row["state"] == "pending":
                key_store.change_state(db, public, row, "accepted", "worker", name)
        finally:
            db.close()

    def client(self, timeout_s: float = 10.0, curve: Curve | None = None) -> Client:
        c = Client(self.url, timeout_s=timeout_s, curve=curve or self.curve)
        self.clients.append(c)
        return c

    def online(self, client: Client) -> set[str]:
        return {d["device_id"] for d in client.devices() if d["state"] == "online"}

    def wait_online(self, client: Client, *device_ids: str, timeout_s: float = 20) -> None:
        wait_until(lambda: set(device_ids) <= self.online(client), timeout_s, f"devices {device_ids} online")

    def kill(self, proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
        if proc.poll() is None:
            proc.send_signal(sig)
            if sig in (signal.SIGKILL, signal.SIGTERM):
                proc.wait(15)

    def stop(self) -> None:
        for c in self.clients:
            c.close()
        procs = list(self.workers.values()) + ([self.master] if self.master else [])
        for proc in procs:
            if proc.poll() is None:
                kids = _descendants(proc.pid)
                proc.send_signal(signal.SIGCONT)
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
                for kid in kids:
                    try:
                        psutil.Process(kid).kill()
                    except psutil.NoSuchProcess:
                        pass


def _descendants(pid: int) -> list[int]:
    try:
        return [c.pid for c in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def plant_device(db_path: Path, device_id: str, *, name: str, hostname: str, os_name: str, tags: list[str]) -> None:
    """An offline devices row written straight into a ledger, as an older master or another program could have
    left it (the master now refuses such texts at decode): for tests of how the CLI and dashboard show it."""
    store = TaskStore(db_path)
    try:
        store.upsert_device({"device_id": device_id, "name": name, "hostname": hostname, "os": os_name,
                             "python_version": "3.11.7", "python_executable": "/usr/bin/python3", "tags": tags,
                             "concurrency": 1, "pid": 1, "version": "0"}, time.time(), 0, "offline")
        store.commit()
    finally:
        store.close()
