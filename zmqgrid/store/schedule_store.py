"""The schedules table: reads straight from the ledger, writes staged into the turn's one commit."""
from __future__ import annotations

from ..protocol import packb, unpackb
from .task_store import TaskStore

_COLUMNS = "name, cron, spec, missed, paused, next_at, last_fired_at, created_at, fired_count"
_INSERT = f"INSERT INTO schedules ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
_DELETE = "DELETE FROM schedules WHERE name = ?"
_PAUSED = "UPDATE schedules SET paused = ?, next_at = ? WHERE name = ?"
_PROGRESS = "UPDATE schedules SET next_at = ?, last_fired_at = ?, fired_count = ? WHERE name = ?"


def load_schedules(store: TaskStore) -> list[dict]:
    """Every schedule, oldest first, with its spec decoded and `paused` as a bool."""
    rows = []
    for row in store.db.query(f"SELECT {_COLUMNS} FROM schedules ORDER BY created_at, name"):
        row["spec"] = unpackb(row["spec"])
        row["paused"] = bool(row["paused"])
        rows.append(row)
    return rows


def insert_schedule(store: TaskStore, row: dict) -> None:
    store.stage(_INSERT, (row["name"], row["cron"], packb(row["spec"]), row["missed"], int(row["paused"]),
                          row["next_at"], row["last_fired_at"], row["created_at"], row["fired_count"]))


def delete_schedule(store: TaskStore, name: str) -> None:
    store.stage(_DELETE, (name,))


def set_paused(store: TaskStore, name: str, paused: bool, next_at: float | None) -> None:
    store.stage(_PAUSED, (int(paused), next_at, name))


def save_progress(store: TaskStore, name: str, next_at: float | None, last_fired_at: float | None,
                  fired_count: int) -> None:
    """After a firing (or a skipped tick): staged with the firing's task insert, so both commit or neither."""
    store.stage(_PROGRESS, (next_at, last_fired_at, fired_count, name))
