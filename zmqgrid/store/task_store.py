"""TaskStore: every read and write of the ledger. Writes are queued and group-committed once per loop turn."""
from __future__ import annotations

import json
import logging
import os
import sqlite3
from typing import Any, Iterable, Iterator

import sqlite_utils

from ..errors import StoreError
from ..model import TASK_STATES, UNFINISHED_STATES, DeviceState, TaskState
from ..protocol import packb, unpackb
from .checkpoint import WAL_KEEP_BYTES, Checkpointer
from .schema import open_database, sql_list

logger = logging.getLogger(__name__)

TASK_COLUMNS = ("id, kind, name, state, priority, attempt, retries, timeout_s, tags, device_req, device_id, "
                "created_at, updated_at, started_at, finished_at, exit_code, value, error, reason, deaths, evidence, group_id")
# The last four columns are those an assign sets: a task dispatched in the turn that inserts it is written by its
# insert alone, already assigned (see TaskStore.assign).
_INSERT_TASK = ("INSERT OR IGNORE INTO tasks (id, kind, name, priority, retries, timeout_s, tags, device_req, spec, "
                "created_at, group_id, updated_at, state, attempt, device_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
# A task's insert binds its state as plain text (a state member would go through sqlite3's adapter, once per task).
_QUEUED, _ASSIGNED = TaskState.QUEUED.value, TaskState.ASSIGNED.value
_ASSIGN_TASK = f"UPDATE tasks SET state='{TaskState.ASSIGNED}', attempt=?, device_id=?, updated_at=? WHERE id=?"
_RUNNING_TASK = f"UPDATE tasks SET state='{TaskState.RUNNING}', started_at=?, updated_at=? WHERE id=? AND attempt=?"
# An attempt's row is written once, when it ends (the tasks row says who holds the current one): one statement
# per attempt instead of three on the hot path.
_END_ATTEMPT = ("INSERT OR REPLACE INTO attempts (task_id, attempt, device_id, state, assigned_at, started_at, "
                "finished_at, exit_code, error, stale) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 0)")
# A late result counts on its own attempt's row only: the device must match, and the recorded outcome stays.
_STALE_ATTEMPT = ("UPDATE attempts SET stale=stale+1, exit_code=coalesce(exit_code, ?) "
                  "WHERE task_id=? AND attempt=? AND device_id=?")
# started_at: the ending attempt's start when known (the master's running mark may be late: see Board.record_result)
_FINISH_TASK = ("UPDATE tasks SET state=?, started_at=coalesce(?, started_at), finished_at=?, updated_at=?, "
                "exit_code=?, value=?, error=?, reason=? WHERE id=?")
_REQUEUE_TASK = (f"UPDATE tasks SET state='{TaskState.QUEUED}', device_id=NULL, updated_at=?, reason=?, not_before=? "
                 "WHERE id=?")
_RETURN_TASK = f"UPDATE tasks SET state='{TaskState.QUEUED}', device_id=NULL, attempt=?, updated_at=?, reason=? WHERE id=?"
_DEATH = "UPDATE tasks SET deaths=?, evidence=? WHERE id=?"
_REOPEN_TASK = (f"UPDATE tasks SET state='{TaskState.QUEUED}', device_id=NULL, retries=?, deaths=0, evidence=NULL, "
                "updated_at=?, reason=?, not_before=NULL, finished_at=NULL WHERE id=?")
_OUTPUT = "INSERT OR REPLACE INTO task_output (task_id, attempt, stream, data) VALUES (?, ?, ?, ?)"
_UPSERT_DEVICE = (
    "INSERT INTO devices (device_id, name, hostname, os, python_version, python_executable, tags, concurrency, "
    "state, pid, version, registered_at, last_seen_at, running) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?) "
    "ON CONFLICT(device_id) DO UPDATE SET name=excluded.name, hostname=excluded.hostname, os=excluded.os, "
    "python_version=excluded.python_version, python_executable=excluded.python_executable, tags=excluded.tags, "
    "concurrency=excluded.concurrency, state=excluded.state, pid=excluded.pid, version=excluded.version, "
    "registered_at=excluded.registered_at, last_seen_at=excluded.last_seen_at, running=excluded.running")
_DEVICE_SEEN = "UPDATE devices SET last_seen_at=?, metrics=?, running=? WHERE device_id=?"
_DEVICE_STATE = "UPDATE devices SET state=? WHERE device_id=?"
_SAMPLE = ("INSERT INTO heartbeats (device_id, at, cpu_percent, memory_percent, disk_percent, load_1m, running) "
           "VALUES (?, ?, ?, ?, ?, ?, ?)")
_PRUNE_DEVICE_SAMPLES = ("DELETE FROM heartbeats WHERE device_id = ? AND at < (SELECT at FROM heartbeats "
                         "WHERE device_id = ? ORDER BY at DESC LIMIT 1 OFFSET ?)")
PRUNE_SAMPLES_EVERY = 50   # a device's samples beyond the retention are deleted once per this many of its samples


class _Op:
    """`with store.op(name):` (a class, not a generator: it is entered for every result on the hot path)."""

    __slots__ = ("store", "name", "nested")

    def __init__(self, store: "TaskStore", name: str) -> None:
        self.store, self.name = store, name

    def __enter__(self) -> None:
        self.nested = self.store._op is not None   # nested: part of the enclosing op
        if not self.nested:
            self.store._op = []

    def __exit__(self, *exc: object) -> None:
        if not self.nested:
            statements, self.store._op = self.store._op, None
            if statements:
                self.store._ops.append((self.name, statements))


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value, default=str)


def task_filters(state: str | None, device_id: str | None) -> tuple[str, list]:
    """The WHERE clause (" WHERE ...", or "") and its parameters of a task list's state and device filters."""
    where, params = [], []
    if state:
        where.append("state = ?")
        params.append(state)
    if device_id:
        where.append("device_id = ?")
        params.append(device_id)
    return (" WHERE " + " AND ".join(where) if where else ""), params


class TaskStore:
    """The ledger. Mutations are buffered by `stage()` and written by `commit()` in one transaction."""

    def __init__(self, path: str | os.PathLike, durability: str = "normal") -> None:
        self.path = str(path)
        self.db: sqlite_utils.Database = open_database(path, durability)
        # Read back from the connection, not echoed from the config: what the commits will really do.
        logger.info("ledger %s: durability %s (PRAGMA synchronous=%d)", self.path, durability,
                    self.db.execute("PRAGMA synchronous").fetchone()[0])
        self._ops: list[tuple[str, list[tuple[str, tuple]]]] = []   # (op name, its statements), in order
        # Commits tried (written or failed): what is staged belongs to commit number `commits + 1`, so a caller
        # can tell a change it staged from one the ledger now shows (or a failed commit dropped).
        self.commits = 0
        self._op: list[tuple[str, tuple]] | None = None
        # Task id -> (staged statements, index) of its insert, until the commit: what assign() folds into.
        self._unwritten_inserts: dict[str, tuple[list[tuple[str, tuple]], int]] = {}
        self._checkpointer: Checkpointer | None = None
        self.heartbeat_keep = 600                     # samples kept per device (config heartbeat_retention)
        self._sampled: dict[str, int] = {}            # device -> its samples staged since its last prune
        # No task id in the ledger sorts above it (see existing_ids); raised as inserts are staged.
        self._top_id: str = self.db.execute("SELECT max(id) FROM tasks").fetchone()[0] or ""

    def close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.stop()
        self.db.close()

    def checkpoint_in_background(self) -> None:
        """For the master's long-lived store: WAL checkpoints move off the commit path (see Checkpointer)."""
        if self._checkpointer is None and self.path != ":memory:":
            self.db.execute("PRAGMA wal_autocheckpoint=0").fetchall()
            self.db.execute(f"PRAGMA journal_size_limit={WAL_KEEP_BYTES}").fetchall()
            self._checkpointer = Checkpointer(self.path)
            self._checkpointer.start()

    # ------------------------------------------------------------ staged writes (hot path)

    def stage(self, sql: str, params: tuple) -> None:
        if self._op is not None:
            self._op.append((sql, params))
        else:
            self._ops.append((sql, [(sql, params)]))

    def op(self, name: str) -> "_Op":
        """Stage the statements of one logical change together (a result: end attempt, output, finish task).

        Runs of the same op are written statement by statement with executemany; ops of one run touch other
        rows (other tasks), so regrouping their statements is safe, and the order between runs is kept.
        """
        return _Op(self, name)

    def commit(self) -> int:
        """Write every staged change in one transaction; on failure nothing is written and StoreError is raised."""
        ops, self._ops = self._ops, []
        self._unwritten_inserts = {}
        self.commits += 1
        if not ops:
            return 0
        conn = self.db.conn
        count = sum(len(statements) for _, statements in ops)
        try:
            with self.db.atomic():
                start = 0
                for i in range(1, len(ops) + 1):
                    if i == len(ops) or ops[i][0] != ops[start][0]:
                        by_sql: dict[str, list[tuple]] = {}
                        for _, statements in ops[start:i]:
                            for sql, params in statements:
                                by_sql.setdefault(sql, []).append(params)
                        for sql, rows in by_sql.items():
                            if len(rows) == 1:
                                conn.execute(sql, rows[0])
                            else:
                                conn.executemany(sql, rows)
                        start = i
        except Exception as e:
            raise StoreError(f"commit of {count} changes failed: {e}", "check disk space and the database file") from e
        return count

    def insert_tasks(self, tasks: list[tuple[dict, int, float | None]], now: float) -> Iterator[int]:
        """Stage the inserts of a submit's (spec, retries, timeout_s) as one change (one staged op, not one each);
        the size of each packed spec, in order."""
        statements = [(_INSERT_TASK, (spec["id"], spec["kind"], spec["name"], spec["priority"], retries, timeout_s,
                                      _json(spec["tags"]) if spec["tags"] else None, spec["device"], packb(spec),
                                      now, spec.get("group"), now, _QUEUED, 0, None))
                      for spec, retries, timeout_s in tasks]
        if not statements:
            return iter(())
        target = self._op if self._op is not None else []
        start = len(target)
        target.extend(statements)
        if target is not self._op:
            self._ops.append(("insert", target))
        unwritten = self._unwritten_inserts
        for i in range(start, len(target)):   # an id staged twice (a re-staged Submit) is written by its first insert
            unwritten.setdefault(target[i][1][0], (target, i))
        # staged, maybe never committed: the ceiling may be too high, never too low
        self._top_id = max(self._top_id, max(statement[1][0] for statement in statements))
        return (len(statement[1][8]) for statement in statements)   # lazily: no list of 100,000 ints at once

    def assign(self, task_id: str, attempt: int, device_id: str, now: float) -> None:
        """A task inserted in this same turn (the usual case on a cluster with free slots) has its staged insert
        rewritten as assigned instead of an UPDATE after it: one statement fewer, and its index entries are
        written once, not written and then moved."""
        staged = self._unwritten_inserts.pop(task_id, None)
        if staged is None:
            self.stage(_ASSIGN_TASK, (attempt, device_id, now, task_id))
            return
        statements, i = staged
        sql, params = statements[i]
        statements[i] = (sql, params[:-4] + (now, _ASSIGNED, attempt, device_id))

    def mark_running(self, task_id: str, attempt: int, started_at: float, now: float) -> None:
        self.stage(_RUNNING_TASK, (started_at, now, task_id, attempt))

    def end_attempt(self, task_id: str, attempt: int, device_id: str | None, state: str, now: float, *,
                    assigned_at: float | None = None, started_at: float | None = None, exit_code: int | None = None,
                    error: Any = None, stdout: str = "", stderr: str = "") -> None:
        self.stage(_END_ATTEMPT, (task_id, attempt, device_id, state, assigned_at, started_at, now, exit_code,
                                  _json(error)))
        if stdout:
            self.stage(_OUTPUT, (task_id, attempt, "stdout", stdout))
        if stderr:
            self.stage(_OUTPUT, (task_id, attempt, "stderr", stderr))

    def append_output(self, task_id: str, attempt: int, stream: str, text: str) -> None:
        self.stage("INSERT INTO task_output (task_id, attempt, stream, data) VALUES (?, ?, ?, ?) "
                   "ON CONFLICT(task_id, attempt, stream) DO UPDATE SET data = data || excluded.data",
                   (task_id, attempt, stream, text))

    def record_stale(self, task_id: str, attempt: int, device_id: str, exit_code: int | None) -> None:
        self.stage(_STALE_ATTEMPT, (exit_code, task_id, attempt, device_id))

    def finish_task(self, task_id: str, state: str, now: float, *, started_at: float | None = None,
                    exit_code: int | None = None, value: Any = None, error: Any = None, reason: str | None = None) -> None:
        self.stage(_FINISH_TASK, (state, started_at, now, now, exit_code,
                                  None if value is None else packb(value), _json(error), reason, task_id))

    def requeue_task(self, task_id: str, reason: str, now: float, not_before: float | None = None) -> None:
        self.stage(_REQUEUE_TASK, (now, reason, not_before, task_id))

    def return_task(self, task_id: str, attempt: int, reason: str, now: float) -> None:
        self.stage(_RETURN_TASK, (attempt, now, reason, task_id))

    def set_limit(self, key: str, max_concurrent: int | None, per_minute: int | None) -> None:
        self.stage("INSERT OR REPLACE INTO limits (key, max_concurrent, per_minute) VALUES (?, ?, ?)",
                   (key, max_concurrent, per_minute))

    def load_limits(self) -> list[tuple]:
        return self.db.execute("SELECT key, max_concurrent, per_minute FROM limits").fetchall()

    def record_death(self, task_id: str, deaths: int, evidence: list) -> None:
        self.stage(_DEATH, (deaths, _json(evidence), task_id))

    def reopen_task(self, task_id: str, retries: int, reason: str, now: float) -> None:
        self.stage(_REOPEN_TASK, (retries, now, reason, task_id))

    def upsert_device(self, info: dict, now: float, running: int, state: str = DeviceState.ONLINE) -> None:
        self.stage(_UPSERT_DEVICE, (info["device_id"], info["name"], info["hostname"], info["os"],
                                    info["python_version"], info["python_executable"], _json(info["tags"]),
                                    info["concurrency"], state, info["pid"], info["version"], now, now, running))

    def has_device(self, device_id: str) -> bool:
        return self.db.execute("SELECT 1 FROM devices WHERE device_id = ?", [device_id]).fetchone() is not None

    def device_seen(self, device_id: str, now: float, metrics: dict | None, running: int) -> None:
        self.stage(_DEVICE_SEEN, (now, _json(metrics), running, device_id))

    def set_device_state(self, device_id: str, state: str) -> None:
        self.stage(_DEVICE_STATE, (state, device_id))

    def remove_device(self, device_id: str) -> None:
        """Stage the removal of an offline device's row and heartbeat samples (store.retention.offline_devices)."""
        self.stage(f"DELETE FROM devices WHERE device_id = ? AND state = '{DeviceState.OFFLINE}'", (device_id,))
        self.stage("DELETE FROM heartbeats WHERE device_id = ?", (device_id,))
        self._sampled.pop(device_id, None)

    def sample_heartbeat(self, device_id: str, now: float, metrics: dict, running: int) -> None:
        """Stage one metrics sample; every PRUNE_SAMPLES_EVERY samples of a device, drop its samples beyond the
        newest `heartbeat_keep` (one indexed delete of one device's rows, instead of a scan of the whole table)."""
        self.stage(_SAMPLE, (device_id, now, metrics.get("cpu_percent"), metrics.get("memory_percent"),
                             metrics.get("disk_percent"), metrics.get("load_1m"), running))
        sampled = self._sampled.get(device_id, 0) + 1
        if sampled >= PRUNE_SAMPLES_EVERY:
            sampled = 0
            self.stage(_PRUNE_DEVICE_SAMPLES, (device_id, device_id, self.heartbeat_keep - 1))
        self._sampled[device_id] = sampled

    def prune_heartbeats(self, keep_per_device: int) -> None:
        """Keep at most `keep_per_device` samples per device (plus up to PRUNE_SAMPLES_EVERY not pruned yet).
        Pruning happens as samples come (`sample_heartbeat`), per device, so nothing stalls the master's loop: the
        former window-function delete over every row took 0.7 s with 1,000 devices x 600 samples."""
        self.heartbeat_keep = max(1, keep_per_device)

    # ------------------------------------------------------------ reads

    def load_unfinished(self) -> Iterable[dict]:
        """Queued, assigned and running tasks in submit order, with their spec: what a restart must resume."""
        for row in self.db.query("SELECT id, state, priority, attempt, retries, timeout_s, device_id, spec, "
                                 "not_before, deaths, evidence, started_at, updated_at "
                                 f"FROM tasks WHERE state IN {sql_list(UNFINISHED_STATES)} ORDER BY rowid"):
            row["spec"] = unpackb(row["spec"])
            row["evidence"] = json.loads(row["evidence"]) if row["evidence"] else []
            yield row

    def existing_ids(self, ids: list[str]) -> set[str]:
        """Which of `ids` the ledger holds. Ids that sort above every id in it are not looked up: task ids sort
        by creation time, so a fresh submit's ids usually do, and only a re-sent one (or one from a client whose
        clock is behind) costs a query."""
        found: set[str] = set()
        try:
            top = self._top_id
            ids = [i for i in ids if i <= top]
            for i in range(0, len(ids), 500):
                chunk = ids[i:i + 500]
                marks = ",".join("?" * len(chunk))
                found.update(r[0] for r in self.db.execute(f"SELECT id FROM tasks WHERE id IN ({marks})", chunk))
        except sqlite3.Error as e:   # the caller answers `unavailable`: nothing of the submit is taken
            raise StoreError(f"cannot read the ledger: {e}", "check the database file and disk") from e
        return found

    def count_tasks_by_state(self) -> dict[str, int]:
        return {r[0]: r[1] for r in self.db.execute("SELECT state, count(*) FROM tasks GROUP BY state")}

    def list_tasks(self, state: str | None = None, device_id: str | None = None, limit: int = 50,
                   offset: int = 0) -> list[dict]:
        """Newest first. Each filter walks one index backwards (m007), so a page costs the same in any ledger."""
        if device_id and not state:
            # One index walk per state, merged by rowid (SQLite's MERGE of a UNION ALL): no sort of the device's
            # whole history, which a (device_id, state) index cannot give in rowid order by itself.
            sql = " UNION ALL ".join(f"SELECT rowid AS rank_, {TASK_COLUMNS} FROM tasks WHERE device_id = ? "
                                     f"AND state = '{s}'" for s in TASK_STATES)
            params: list = [device_id] * len(TASK_STATES)
            sql += " ORDER BY rank_ DESC LIMIT ? OFFSET ?"
        else:
            where, params = task_filters(state, device_id)
            sql = f"SELECT {TASK_COLUMNS} FROM tasks{where} ORDER BY rowid DESC LIMIT ? OFFSET ?"
        return [self._task_row(r) for r in self.db.query(sql, params + [limit, offset])]

    def find_task_id(self, ref: str, limit: int = 6) -> list[str]:
        """[ref] if it is an id, else the first `limit` ids starting with it, in id order (a person may type a
        unique prefix). Read as one range of the id index: a LIKE would scan all of it for an unknown prefix."""
        if self.db.execute("SELECT 1 FROM tasks WHERE id = ?", [ref]).fetchone():
            return [ref]
        # Every id that starts with ref sorts between ref and ref followed by the highest code point.
        return [r[0] for r in self.db.execute("SELECT id FROM tasks WHERE id >= ? AND id < ? ORDER BY id LIMIT ?",
                                               [ref, ref + "\U0010ffff", limit])]

    def get_task(self, task_id: str) -> dict | None:
        rows = list(self.db.query(f"SELECT {TASK_COLUMNS}, spec FROM tasks WHERE id = ?", [task_id]))
        if not rows:
            return None
        task = self._task_row(rows[0])
        spec = unpackb(rows[0]["spec"])
        spec.pop("source", None)  # the script text can be large; `tasks show` names the file
        task["spec"] = spec
        task["attempts"] = [dict(r, error=json.loads(r["error"]) if r["error"] else None) for r in self.db.query(
            "SELECT attempt, device_id, state, assigned_at, started_at, finished_at, exit_code, error, stale "
            "FROM attempts WHERE task_id = ? ORDER BY attempt", [task_id])]
        return task

    def get_spec(self, task_id: str) -> dict | None:
        staged = self._unwritten_inserts.get(task_id)   # inserted in this very turn: its row is not written yet
        if staged is not None:
            return unpackb(staged[0][staged[1]][1][8])
        row = self.db.execute("SELECT spec FROM tasks WHERE id = ?", [task_id]).fetchone()
        return unpackb(row[0]) if row else None

    def get_output(self, task_id: str, attempt: int | None = None) -> dict:
        if attempt is None:
            row = self.db.execute("SELECT max(attempt) FROM task_output WHERE task_id = ?", [task_id]).fetchone()
            attempt = row[0] if row and row[0] is not None else 0
        out = {"task_id": task_id, "attempt": attempt, "stdout": "", "stderr": ""}
        for stream, data in self.db.execute("SELECT stream, data FROM task_output WHERE task_id = ? AND attempt = ?",
                                            [task_id, attempt]):
            out[stream] = data
        return out

    def list_devices(self) -> list[dict]:
        rows = []
        for r in self.db.query("SELECT * FROM devices ORDER BY device_id"):
            r["tags"] = json.loads(r["tags"]) if r["tags"] else []
            r["metrics"] = json.loads(r["metrics"]) if r["metrics"] else {}
            rows.append(r)
        return rows

    def device_ids_with_state(self, state: str) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT device_id FROM devices WHERE state = ?", [state])]

    @staticmethod
    def _task_row(row: dict) -> dict:
        row = dict(row)
        row.pop("rank_", None)
        row["tags"] = json.loads(row["tags"]) if row.get("tags") else []
        row["value"] = unpackb(row["value"]) if row.get("value") is not None else None
        row["error"] = json.loads(row["error"]) if row.get("error") else None
        row["evidence"] = json.loads(row["evidence"]) if row.get("evidence") else []
        row["deaths"] = row.get("deaths") or 0
        return row
