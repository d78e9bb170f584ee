"""Config `durability`: the ledger connection's PRAGMA synchronous follows it (FULL = 2, NORMAL = 1)."""
from __future__ import annotations

import re
import shutil
import signal
import sqlite3
import subprocess
import threading
import time

import pytest

from tests.helpers import Harness, db_query, run_cli, wait_until
from zmqgrid.client import build_spec
from zmqgrid.config import Config
from zmqgrid.store.task_store import TaskStore

SYNCHRONOUS = {"full": 2, "normal": 1}


@pytest.mark.parametrize("level", ["full", "normal"])
def test_the_store_connection_syncs_as_its_durability_says(tmp_path, level):
    store = TaskStore(tmp_path / "l.db", level)
    try:
        assert store.db.execute("PRAGMA synchronous").fetchone()[0] == SYNCHRONOUS[level]
        assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        store.close()


def test_the_default_durability_is_the_configs_default(tmp_path):
    store = TaskStore(tmp_path / "l.db")
    try:
        assert store.db.execute("PRAGMA synchronous").fetchone()[0] == SYNCHRONOUS[Config().durability]
    finally:
        store.close()


@pytest.mark.parametrize("level", ["full", "normal"])
def test_a_real_master_opens_its_ledger_with_the_configured_durability(tmp_path, level):
    # Given a master started with ZMQGRID_DURABILITY, when it has opened its ledger,
    # then its log states the synchronous level read back from its own connection.
    h = Harness(tmp_path, env={"ZMQGRID_DURABILITY": level})
    try:
        h.start_master()
        line = f"durability {level} (PRAGMA synchronous={SYNCHRONOUS[level]})"
        wait_until(lambda: line in (tmp_path / "master.log").read_text(), 10, f"the master to log {line!r}")
        with h.client() as c:   # and it commits work at that level
            ids = c.submit(build_spec(shell="true"))
        assert db_query(h.db, "SELECT count(*) FROM tasks WHERE id = ?", (ids[0],)) == [(1,)]
    finally:
        h.stop()


@pytest.mark.parametrize("value", ["fsync", "", "2"])
def test_a_bad_durability_is_one_line_and_exit_3(tmp_path, value):
    (tmp_path / "m.json").write_text('{"durability": "%s"}' % value)
    r = run_cli("distribute", "--mode", "master", "--config", "m.json", "--db", "l.db", cwd=tmp_path, timeout_s=30)
    assert r.returncode == 3, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "durability" in lines[0] and "full, normal" in lines[0], r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "l.db").exists()   # nothing half-applied: the ledger is not even created
    with pytest.raises(sqlite3.OperationalError):
        sqlite3.connect(f"file:{tmp_path / 'l.db'}?mode=ro", uri=True).execute("SELECT 1")


STRACE = shutil.which("strace")


@pytest.mark.skipif(STRACE is None, reason="strace is not installed (apt-get install strace)")
@pytest.mark.parametrize("level", ["full", "normal"])
def test_full_syncs_the_wal_before_each_acknowledged_submit_and_normal_does_not(tmp_path, level):
    # Given a real master at this durability, traced for fsync/fdatasync (strace -y names each call's file)
    h = Harness(tmp_path, env={"ZMQGRID_DURABILITY": level})
    trace = tmp_path / "sync.txt"
    try:
        h.start_master()
        c = h.client()
        c.submit(build_spec(shell="true"))
        strace = subprocess.Popen([STRACE, "-f", "-y", "-e", "trace=fsync,fdatasync", "-o", str(trace),
                                   "-p", str(h.master.pid)], stderr=subprocess.PIPE, text=True)
        stderr: list[str] = []
        reader = threading.Thread(target=lambda: stderr.extend(iter(strace.stderr.readline, "")), daemon=True)
        reader.start()
        try:
            wait_until(lambda: strace.poll() is not None or _attached(stderr), 10,
                       "strace attached to every thread of the master")
            assert strace.poll() is None, stderr
            # When 50 Submits are acknowledged one after the other (each its own turn and commit)
            n, started = 50, time.monotonic()
            for _ in range(n):
                c.submit(build_spec(shell="true"))
            elapsed = time.monotonic() - started
        finally:
            strace.send_signal(signal.SIGINT)
            strace.wait(10)
            reader.join(10)   # it ends at strace's EOF
            strace.stderr.close()
        wal_syncs = sum("-wal>" in line for line in trace.read_text().splitlines())
        # Then full synced the WAL for each of them; normal only at its checkpoints (once a second, and the
        # first commit after each), so a power cut can take the commits since the last one
        if level == "full":
            assert wal_syncs >= n, trace.read_text()[-2000:]
        else:
            assert wal_syncs <= 3 * (elapsed + 2), (wal_syncs, elapsed)
    finally:
        h.stop()


def _attached(stderr: list[str]) -> bool:
    """strace -p -f says "strace: Process N attached with K threads" on stderr once it traces every thread."""
    return any(re.search(r"strace: Process \d+ attached", line) for line in list(stderr))
