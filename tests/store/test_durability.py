"""Config `durability`: the ledger connection's PRAGMA synchronous follows it (FULL = 2, NORMAL = 1)."""
from __future__ import annotations

import sqlite3

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
