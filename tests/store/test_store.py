"""The ledger: schema migrations, group commit, refusal of unreadable or corrupt files without changing them."""
from __future__ import annotations

import hashlib
import sqlite3
import time

import pytest

from zmqgrid.errors import StoreError
from zmqgrid.model import validate_task_spec
from zmqgrid.store.schema import migrations
from zmqgrid.store.task_store import TaskStore

from ..helpers import insert_task


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_new_ledger_is_created_in_wal_mode_with_every_migration_applied(tmp_path):
    store = TaskStore(tmp_path / "sub" / "ledger.db")
    try:
        assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert not migrations.pending(store.db)
        assert {"tasks", "attempts", "task_output", "devices", "heartbeats"} <= set(store.db.table_names())
    finally:
        store.close()
    again = TaskStore(tmp_path / "sub" / "ledger.db")   # re-opening applies nothing twice
    again.close()


def test_none_and_bytes_are_bound_as_null_and_blob_as_without_the_ledgers_adapters(tmp_path):
    store = TaskStore(tmp_path / "l.db")   # the store registers pass-through adapters for None and bytes
    try:
        conn = store.db.conn
        conn.execute("CREATE TABLE probe (a, b, c)")
        conn.execute("INSERT INTO probe VALUES (?, ?, ?)", (None, b"\x00\xff", bytearray(b"z")))
        assert conn.execute("SELECT a, typeof(a), b, typeof(b), typeof(c) FROM probe").fetchone() == \
            (None, "null", b"\x00\xff", "blob", "blob")
    finally:
        store.close()


def test_the_wal_starts_over_while_the_loop_commits_back_to_back(tmp_path, monkeypatch):
    """A busy loop never leaves the WAL wholly copied by a PASSIVE checkpoint (it writes during it), so without
    the RESTART that follows, SQLite never starts the WAL over and the file grows without end (870 MB in 14 s)."""
    from zmqgrid.store import checkpoint
    monkeypatch.setattr(checkpoint, "CHECKPOINT_EVERY_S", 0.05)
    store = TaskStore(tmp_path / "l.db")
    store.checkpoint_in_background()
    try:
        def wal_generation() -> int:   # the WAL header's checkpoint sequence number: +1 each time it starts over
            with open(tmp_path / "l.db-wal", "rb") as wal:
                return int.from_bytes(wal.read(16)[12:16], "big")

        spec = validate_task_spec({"kind": "python", "function": "m:f", "id": "x"})
        deadline, turn = time.monotonic() + 60, 0
        store.insert_tasks([(dict(spec, id="first"), 3, None)], 1.0)
        store.commit()
        first = wal_generation()
        while wal_generation() < first + 3:   # turns of 16 inserts, committed back to back
            assert time.monotonic() < deadline, "the WAL never started over while the loop committed"
            store.insert_tasks([(dict(spec, id=f"t{turn}-{i}"), 3, None) for i in range(16)], 1.0)
            store.commit()
            turn += 1
        assert store.count_tasks_by_state() == {"queued": 16 * turn + 1}
    finally:
        store.close()


def test_staged_changes_are_invisible_until_commit_and_written_in_order(tmp_path):
    store = TaskStore(tmp_path / "l.db")
    try:
        spec = validate_task_spec({"kind": "shell", "command": "true", "id": "t1"})
        insert_task(store, spec, 3, None, 1.0)
        store.assign("t1", 1, "w1", 2.0)
        assert store.count_tasks_by_state() == {}
        assert store.commit() == 1   # assigned in the turn of its insert: written by the insert alone
        assert store.get_task("t1")["state"] == "assigned"
        store.end_attempt("t1", 1, "w1", "done", 3.0, assigned_at=2.0, exit_code=0, stdout="out")
        store.finish_task("t1", "done", 3.0, exit_code=0, value={"x": 1})
        store.commit()
        task = store.get_task("t1")
        assert (task["state"], task["value"], task["attempts"][0]["state"]) == ("done", {"x": 1}, "done")
        assert (task["attempts"][0]["device_id"], task["attempts"][0]["assigned_at"]) == ("w1", 2.0)
        assert store.get_output("t1")["stdout"] == "out"
    finally:
        store.close()


def test_a_task_assigned_in_the_turn_of_its_insert_is_written_as_if_assigned_after_it(tmp_path):
    # Given two ledgers, one where each task is inserted and assigned in one turn, one where the assign comes a turn later
    shell = {"kind": "shell", "command": "true", "tags": ["linux"]}
    folded, apart = TaskStore(tmp_path / "folded.db"), TaskStore(tmp_path / "apart.db")
    try:
        statements: list[str] = []
        folded.db.conn.set_trace_callback(statements.append)
        folded.insert_tasks([(validate_task_spec(dict(shell, id=i)), 2, 30.0) for i in ("a", "b", "c")], 1.0)
        folded.assign("b", 1, "w1", 2.0)
        folded.assign("a", 1, "w2", 2.0)   # "c" stays queued
        assert folded.commit() == 3
        assert not any(s.startswith("UPDATE") for s in statements)
        apart.insert_tasks([(validate_task_spec(dict(shell, id=i)), 2, 30.0) for i in ("a", "b", "c")], 1.0)
        apart.commit()
        apart.assign("b", 1, "w1", 2.0)
        apart.assign("a", 1, "w2", 2.0)
        apart.commit()
        # Then both hold the same rows
        assert [folded.get_task(i) for i in "abc"] == [apart.get_task(i) for i in "abc"]
        assert folded.get_task("b")["state"] == "assigned" and folded.get_task("c")["state"] == "queued"
        # And a task inserted in an earlier turn is assigned by an UPDATE, as is one assigned again in a turn
        statements.clear()
        folded.assign("c", 1, "w1", 3.0)
        folded.insert_tasks([(validate_task_spec(dict(shell, id="d")), 2, 30.0)], 3.0)
        folded.assign("d", 1, "w1", 3.0)
        folded.requeue_task("d", "dispatch failed", 3.0)
        folded.assign("d", 2, "w2", 3.0)
        folded.commit()
        assert sum(s.startswith("UPDATE tasks SET state='assigned'") for s in statements) == 2
        assert [(t["state"], t["attempt"], t["device_id"]) for t in map(folded.get_task, "cd")] == [
            ("assigned", 1, "w1"), ("assigned", 2, "w2")]
    finally:
        folded.close()
        apart.close()


def test_a_task_staged_twice_and_assigned_is_written_assigned(tmp_path):
    # A Submit staged again after its first staging (the one-by-one fallback of a failed merge): the first insert
    # is the one written (INSERT OR IGNORE), so the assign must land in it
    store = TaskStore(tmp_path / "l.db")
    try:
        spec = validate_task_spec({"kind": "shell", "command": "true", "id": "t1"})
        insert_task(store, spec, 3, None, 1.0)
        insert_task(store, spec, 3, None, 1.0)
        store.assign("t1", 1, "w1", 2.0)
        store.commit()
        assert (store.get_task("t1")["state"], store.get_task("t1")["device_id"]) == ("assigned", "w1")
    finally:
        store.close()


def test_existing_ids_finds_every_held_id_whatever_its_order_and_after_a_reopen(tmp_path):
    # Ids above the ledger's highest are answered without a query: the ceiling must never hide a held id
    def insert(store, *ids):
        store.insert_tasks([(validate_task_spec({"kind": "shell", "command": "true", "id": i}), 0, None) for i in ids],
                           1.0)

    store = TaskStore(tmp_path / "l.db")
    try:
        assert store.existing_ids(["a", "m"]) == set()
        insert(store, "m")
        store.commit()
        insert(store, "c")   # below the ceiling, as a client with a slow clock would send
        store.commit()
        assert store.existing_ids(["a", "c", "m", "n", "z"]) == {"c", "m"}
        insert(store, "x")   # staged, not yet committed
        assert store.existing_ids(["x"]) == set()
        store.commit()
        assert store.existing_ids(["x", "y"]) == {"x"}
        # And ids above the ceiling cost no query (a fresh submit's usual case)
        statements: list[str] = []
        store.db.conn.set_trace_callback(statements.append)
        assert store.existing_ids(["y", "z"]) == set() and statements == []
        assert store.existing_ids(["c", "z"]) == {"c"} and len(statements) == 1
    finally:
        store.close()
    again = TaskStore(tmp_path / "l.db")   # the ceiling is read back from the ledger
    try:
        assert again.existing_ids(["a", "c", "m", "n", "x", "zz"]) == {"c", "m", "x"}
    finally:
        again.close()


def test_a_task_id_prefix_is_looked_up_in_the_id_index_not_by_scanning_every_task(tmp_path):
    # Given a ledger of 20,000 tasks, and ids holding what a LIKE pattern would take as wildcards
    store = TaskStore(tmp_path / "l.db")
    try:
        ids = [f"6b16{n:010x}{n % 7}" for n in range(20_000)] + ["run_1", "run_10", "runx1"]
        store.insert_tasks([(validate_task_spec({"kind": "shell", "command": "true", "id": i}), 0, None)
                            for i in ids], 1.0)
        store.commit()
        # Then an id names itself even where it prefixes others, a prefix finds its ids in order, and _ and % are
        # letters of an id, not wildcards
        assert store.find_task_id("run_1") == ["run_1"]
        assert store.find_task_id("run_") == ["run_1", "run_10"]
        assert store.find_task_id("ru%") == [] and store.find_task_id("r_n") == []
        assert store.find_task_id("6b16", limit=3) == ids[:3]
        # And an unknown prefix costs a walk down the index, not one step per task: counted in SQLite's own
        # virtual machine steps (a callback every 100), not in seconds
        steps = []
        store.db.conn.set_progress_handler(lambda: steps.append(1), 100)
        assert store.find_task_id("6b17") == [] and store.find_task_id("6b16ffff") == []
        store.db.conn.set_progress_handler(None, 100)
        assert len(steps) < 10, f"{len(steps) * 100} steps for two look-ups in 20,000 tasks"
    finally:
        store.close()


def test_a_failed_commit_writes_nothing_and_raises_store_error(tmp_path):
    store = TaskStore(tmp_path / "l.db")
    try:
        spec = validate_task_spec({"kind": "shell", "command": "true", "id": "t1"})
        insert_task(store, spec, 3, None, 1.0)
        store.stage("INSERT INTO no_such_table VALUES (1)", ())
        with pytest.raises(StoreError, match="commit of 2 changes failed"):
            store.commit()
        assert store.count_tasks_by_state() == {}
        assert store.commit() == 0   # nothing left staged
    finally:
        store.close()


def test_a_file_that_is_not_sqlite_is_refused_and_left_unchanged(tmp_path):
    path = tmp_path / "ledger.db"
    path.write_bytes(b"this is not a database" * 100)
    before = _digest(path)
    with pytest.raises(StoreError, match="is not an SQLite file"):
        TaskStore(path)
    assert _digest(path) == before and not (tmp_path / "ledger.db-wal").exists()


def test_a_corrupt_ledger_is_refused_and_left_unchanged(tmp_path):
    path = tmp_path / "ledger.db"
    TaskStore(path).close()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=DELETE")
    conn.close()
    data = bytearray(path.read_bytes())
    data[4096:8192] = b"\xff" * 4096          # wreck the second page, keep the header
    path.write_bytes(bytes(data))
    before = _digest(path)
    with pytest.raises(StoreError, match="corrupt|integrity"):
        TaskStore(path)
    assert _digest(path) == before


def test_the_master_store_checkpoints_its_wal_in_the_background(tmp_path):
    from tests.helpers import wait_until
    path = tmp_path / "l.db"
    store = TaskStore(path)
    try:
        store.checkpoint_in_background()
        assert store.db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0   # not inside the loop's commits
        for i in range(50):
            insert_task(store, validate_task_spec({"kind": "shell", "command": "true", "id": f"t{i}"}), 0, None, 1.0)
        store.commit()

        def in_main_file() -> int:
            # The main file alone (no -wal beside it) holds only what was checkpointed into it.
            copy = tmp_path / "copy.db"
            copy.write_bytes(path.read_bytes())
            conn = sqlite3.connect(f"{copy.as_uri()}?immutable=1", uri=True)
            try:
                return conn.execute("SELECT count(*) FROM tasks").fetchone()[0]
            except sqlite3.OperationalError:   # not even the schema is in it yet
                return -1
            finally:
                conn.close()
        wait_until(lambda: in_main_file() == 50, 10, "the 50 tasks checkpointed into the main file")
    finally:
        store.close()
    assert not store._checkpointer.is_alive()
