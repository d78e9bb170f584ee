"""Small reads of the ledger behind the master's `status`, `metrics`, `samples` and tag-filtered `tasks` queries:
each an indexed look-up or a bounded walk, never a scan of the whole task table."""
from __future__ import annotations

import json

from .task_store import TASK_COLUMNS, TaskStore, task_filters

# A tag filter reads the tags of at most this many of the newest tasks (of the state or device asked, if any):
# tags have no index, and a query runs in the master's loop.
TAG_SCAN_ROWS = 100_000
SAMPLE_COLUMNS = ("at", "cpu_percent", "memory_percent", "disk_percent", "load_1m", "running")


def created_at(store: TaskStore, task_id: str) -> float | None:
    row = store.db.execute("SELECT created_at FROM tasks WHERE id = ?", [task_id]).fetchone()
    return row[0] if row else None


def finished_since(store: TaskStore, since: float) -> dict[str, int]:
    return {r[0]: r[1] for r in store.db.execute(
        # +state: grouping by the state index would read every task; this reads the recent end of
        # idx_tasks_finished only.
        "SELECT state, count(*) FROM tasks WHERE finished_at >= ? GROUP BY +state", [since])}


def device_concurrency(store: TaskStore) -> dict[str, int]:
    """Every device row's id and concurrency (no JSON column decoded)."""
    return {r[0]: r[1] for r in store.db.execute("SELECT device_id, concurrency FROM devices ORDER BY device_id")}


def samples(store: TaskStore, device_id: str, limit: int) -> list[dict]:
    """A device's newest `limit` heartbeat samples, oldest first (one walk of the (device_id, at) index)."""
    rows = store.db.execute(f"SELECT {', '.join(SAMPLE_COLUMNS)} FROM heartbeats WHERE device_id = ? "
                            "ORDER BY at DESC LIMIT ?", [device_id, limit]).fetchall()
    return [dict(zip(SAMPLE_COLUMNS, r)) for r in reversed(rows)]


def tasks_tagged(store: TaskStore, tag: str, state: str | None, device_id: str | None, limit: int,
                 offset: int) -> list[dict]:
    """Newest first, the tasks with `tag` among the newest TAG_SCAN_ROWS that match `state` and `device_id`."""
    where, params = task_filters(state, device_id)
    # The tags column is the JSON array as json.dumps wrote it: LIKE on the tag's own JSON text skips most rows
    # cheaply, json_each decides exactly.
    quoted = json.dumps(tag)
    pattern = "%" + quoted.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    sql = (f"WITH recent AS (SELECT rowid AS r, tags FROM tasks{where} "
           "ORDER BY rowid DESC LIMIT ?) "
           f"SELECT {', '.join('tasks.' + c.strip() for c in TASK_COLUMNS.split(','))} "
           "FROM recent JOIN tasks ON tasks.rowid = recent.r "
           "WHERE recent.tags LIKE ? ESCAPE '\\' AND EXISTS (SELECT 1 FROM json_each(recent.tags) WHERE value = ?) "
           "ORDER BY recent.r DESC LIMIT ? OFFSET ?")
    rows = store.db.query(sql, [*params, TAG_SCAN_ROWS, pattern, tag, limit, offset])
    return [TaskStore._task_row(r) for r in rows]
