"""The ledger's schema, created and migrated by sqlite-utils Migrations; opening checks the file first."""
from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Iterable

import sqlite_utils
from sqlite_utils.migrations import Migrations

from ..errors import StoreError
from ..model import DeviceState, TaskState

migrations = Migrations("zmqgrid")
# config `durability` -> PRAGMA synchronous. In WAL mode FULL syncs the WAL at every commit, so a commit that
# returned is on the disk (a power cut or kernel crash keeps it); NORMAL syncs only at checkpoints, so a commit
# survives a killed process but the last ones may roll back after a power cut. SQLite reads it back as 2 and 1.
SYNCHRONOUS = {"full": "FULL", "normal": "NORMAL"}

# Python 3.11's sqlite3 binds int, float and str directly but sends None and bytes through its adapter lookup,
# which, finding no adapter, raises and clears an AttributeError with a formatted message for each value (nine
# per task on the master's hot path). An adapter returning the value itself (C callables, no Python frame) takes
# the lookup's first, cheap exit; what is bound does not change.
sqlite3.register_adapter(type(None), {}.get)
sqlite3.register_adapter(bytes, bytes)
# A state (model.TaskState, DeviceState) is bound as its text, through the same cheap exit.
sqlite3.register_adapter(TaskState, str)
sqlite3.register_adapter(DeviceState, str)


def sql_list(words: Iterable[str]) -> str:
    """Constant words as an SQL list, `('a', 'b')`, for an IN the query planner sees as constants (the words are
    the code's own, never a peer's)."""
    return "(" + ", ".join(f"'{word}'" for word in words) + ")"


@migrations()
def m001_initial(db: sqlite_utils.Database) -> None:
    db["tasks"].create({
        "id": str, "kind": str, "name": str, "state": str, "priority": int, "attempt": int,
        "retries": int, "timeout_s": float, "tags": str, "device_req": str, "device_id": str,
        "spec": bytes, "created_at": float, "updated_at": float, "started_at": float,
        "finished_at": float, "exit_code": int, "value": bytes, "error": str, "reason": str,
    }, pk="id", not_null={"kind", "state", "priority", "attempt"})
    db["tasks"].create_index(["state", "priority"])
    db["tasks"].create_index(["device_id"])
    db["attempts"].create({
        "task_id": str, "attempt": int, "device_id": str, "state": str, "assigned_at": float,
        "started_at": float, "finished_at": float, "exit_code": int, "error": str, "stale": int,
    }, pk=("task_id", "attempt"), not_null={"state"})
    db["attempts"].create_index(["device_id"])
    db["task_output"].create({
        "task_id": str, "attempt": int, "stream": str, "data": str,
    }, pk=("task_id", "attempt", "stream"))
    db["devices"].create({
        "device_id": str, "name": str, "hostname": str, "os": str, "python_version": str,
        "python_executable": str, "tags": str, "concurrency": int, "state": str, "pid": int,
        "version": str, "registered_at": float, "last_seen_at": float, "metrics": str, "running": int,
    }, pk="device_id")
    db["heartbeats"].create({
        "device_id": str, "at": float, "cpu_percent": float, "memory_percent": float,
        "disk_percent": float, "load_1m": float, "running": int,
    })
    db["heartbeats"].create_index(["device_id", "at"])


@migrations()
def m002_retry_and_quarantine(db: sqlite_utils.Database) -> None:
    db["tasks"].add_column("not_before", float)     # wall-clock time before which a retry is not dispatched
    db["tasks"].add_column("deaths", int)           # times its worker died while running it
    db["tasks"].add_column("evidence", str)         # JSON list of those deaths


@migrations()
def m003_groups_and_limits(db: sqlite_utils.Database) -> None:
    db["tasks"].add_column("group_id", str)         # the fan-out (submit --all) a task belongs to
    db["tasks"].create_index(["group_id"])
    db["limits"].create({"key": str, "max_concurrent": int, "per_minute": int}, pk="key")


@migrations()
def m004_schedules(db: sqlite_utils.Database) -> None:
    # spec: the validated task spec without its id (msgpack); each firing adds id sched-<name>-<tick>.
    # next_at: the next tick (epoch seconds), NULL while paused; last_fired_at: the tick of the last firing.
    db["schedules"].create({
        "name": str, "cron": str, "spec": bytes, "missed": str, "paused": int, "next_at": float,
        "last_fired_at": float, "created_at": float, "fired_count": int,
    }, pk="name", not_null={"cron", "spec", "missed", "paused", "fired_count"})


@migrations()
def m005_finished_index(db: sqlite_utils.Database) -> None:
    db["tasks"].create_index(["finished_at"])      # "done / failed in the last hour" without a scan


@migrations()
def m006_keys(db: sqlite_utils.Database) -> None:
    # CURVE public keys (z85) and their enrollment: state pending|accepted|rejected|revoked, role worker|client|admin,
    # device_id the one device the key may speak for (bound when it first registers). Times are epoch seconds.
    db["keys"].create({
        "public_key": str, "state": str, "role": str, "name": str, "device_id": str, "hostname": str,
        "first_seen_at": float, "last_seen_at": float, "changed_at": float,
    }, pk="public_key", not_null={"state", "role"})
    db["keys"].create_index(["device_id"])


@migrations()
def m007_ledger_indexes(db: sqlite_utils.Database) -> None:
    # Indexes shaped by the queries a big ledger must answer fast (docs/benchmarks.md, "Big ledger"); entries of
    # an index on (a, b) come in rowid order for equal a and b, so `... WHERE state = ? ORDER BY rowid DESC LIMIT n`
    # walks one index backwards instead of sorting every task in that state.
    # - tasks(state): tasks list by state; recovery reads queued/assigned/running through it; counts by state.
    # - tasks(device_id, state), rows with a device: a device's tasks in a state, and (merged over the states)
    #   all its tasks. Queued tasks have no device, so their inserts skip it.
    # - tasks(finished_at, state), finished rows: "finished in the last hour" and retention's oldest-first, from
    #   the index alone; inserts (never finished) skip it.
    # - tasks(group_id), fan-out rows only. attempts(device_id) goes: no query reads attempts by device.
    for name in ("idx_tasks_state_priority", "idx_tasks_device_id", "idx_tasks_group_id", "idx_tasks_finished_at",
                 "idx_attempts_device_id"):
        db.execute(f"DROP INDEX IF EXISTS {name}")
    db.execute("CREATE INDEX idx_tasks_state ON tasks (state)")
    db.execute("CREATE INDEX idx_tasks_device_state ON tasks (device_id, state) WHERE device_id IS NOT NULL")
    db.execute("CREATE INDEX idx_tasks_finished ON tasks (finished_at, state) WHERE finished_at IS NOT NULL")
    db.execute("CREATE INDEX idx_tasks_group ON tasks (group_id) WHERE group_id IS NOT NULL")



@migrations()
def m008_projects(db: sqlite_utils.Database) -> None:
    # The index of project archives (docs/architecture.md, Projects): the archives are files beside the ledger,
    # <db_path>.projects/<version>.tar; pushed_at (epoch seconds) orders a name's versions, the latest last.
    db["projects"].create({"name": str, "version": str, "size": int, "files": int, "pushed_at": float,
                           "pushed_by": str}, pk=("name", "version"), not_null={"size", "files", "pushed_at"})


@migrations()
def m009_alerts(db: sqlite_utils.Database) -> None:
    # Alert rules and their events (docs/architecture.md, Alerts). An event is staged in the commit of the change
    # that caused it; seq orders delivery per rule. The counters are kept by the master's delivery threads.
    db["alert_rules"].create({
        "name": str, "events": str, "tags": str, "pattern": str, "kind": str, "target": str, "template": str,
        "created_at": float, "delivered": int, "failed": int, "dropped": int, "last_error": str,
        "last_error_at": float, "last_delivered_at": float,
    }, pk="name", not_null={"events", "kind", "target", "template", "delivered", "failed", "dropped"})
    db.execute("CREATE TABLE alert_events (seq INTEGER PRIMARY KEY AUTOINCREMENT, rule TEXT NOT NULL, "
               "event TEXT NOT NULL, at FLOAT NOT NULL, body TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, "
               "next_at FLOAT, last_error TEXT, delivered_at FLOAT)")
    db.execute("CREATE INDEX idx_alert_events_rule ON alert_events (rule, delivered_at, seq)")
    db.execute("CREATE INDEX idx_alert_events_delivered ON alert_events (delivered_at) WHERE delivered_at IS NOT NULL")


def open_database(path: str | os.PathLike, durability: str = "normal") -> sqlite_utils.Database:
    """Open (creating if absent) and migrate the ledger; refuse an unreadable or corrupt file unchanged.
    `durability` is a key of SYNCHRONOUS (config `durability`)."""
    path = Path(path)
    if path.exists():
        _check_existing(path)
    else:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if str(path) != ":memory:":   # created owner-only; SQLite gives its -wal and -shm files the same mode
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        except OSError as e:
            raise StoreError(f"cannot create database {path} or its directory: {e.strerror}",
                             "choose a writable --db path") from e
    try:
        # Built in one thread and served from another (standalone's master thread); never shared at once.
        db = sqlite_utils.Database(sqlite3.connect(path, check_same_thread=False))
        db.enable_wal()
        db.execute(f"PRAGMA synchronous={SYNCHRONOUS[durability]}")
        db.execute("PRAGMA busy_timeout=5000")
        migrations.apply(db)
    except sqlite3.DatabaseError as e:
        raise StoreError(f"cannot open database {path}: {e}", "check the file and its permissions") from e
    return db


def connect_read_only(path: str | os.PathLike) -> sqlite3.Connection:
    """A connection that cannot write the ledger or create anything beside it (for checks)."""
    # A read-only open of a WAL-mode file still creates its -wal and -shm files; `immutable` opens it without
    # them. A -wal (a running master's, or one left by a crash) holds committed changes a reader must see, so
    # then the sidecars are used.
    uri = Path(path).resolve().as_uri() + "?mode=ro" + ("" if Path(f"{path}-wal").exists() else "&immutable=1")
    return sqlite3.connect(uri, uri=True)


def _check_existing(path: Path) -> None:
    """Read-only checks, so a bad file is reported and left exactly as it was."""
    if not os.access(path, os.R_OK | os.W_OK):
        raise StoreError(f"database {path} is not readable and writable by this user",
                         "fix its permissions or choose another --db")
    with open(path, "rb") as f:
        header = f.read(16)
    if header and header != b"SQLite format 3\x00":
        raise StoreError(f"database {path} is not an SQLite file", "point --db at a zmqgrid database or a new path")
    try:
        conn = connect_read_only(path)
        try:
            ok = conn.execute("PRAGMA quick_check(1)").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.DatabaseError as e:
        raise StoreError(f"database {path} is corrupt or unreadable: {e}",
                         "restore it from a backup or choose another --db") from e
    if ok != "ok":
        raise StoreError(f"database {path} failed its integrity check: {ok}",
                         "restore it from a backup or choose another --db")
