"""A master's start: its view of unfinished tasks and the devices holding them, read back from the ledger."""
from __future__ import annotations

import logging

from ..model import TaskState
from .board import Board
from .entries import COMPACT_ABOVE, TaskEntry

logger = logging.getLogger(__name__)


def recover(board: Board, now_mono: float, now: float) -> None:
    """Load unfinished tasks; keep assigned/running ones with their device until it re-registers or times out."""
    store, tasks = board.store, board.tasks
    pids = board.fleet.recover()
    for key, max_concurrent, per_minute in store.load_limits():
        board.limits.define(key, max_concurrent, per_minute)
    for row in store.load_unfinished():
        entry = TaskEntry.from_spec(row["spec"], board.needs, row["retries"], row["timeout_s"],
                                    len(tasks) > COMPACT_ABOVE, retry_rule=board.retry_rules.of(row["spec"]),
                                    attempt=row["attempt"], deaths=row["deaths"] or 0, evidence=row["evidence"])
        tasks[entry.id] = entry
        if row["state"] == TaskState.QUEUED or not row["device_id"]:
            board.enqueue(entry, max(0.0, (row["not_before"] or 0) - now), now_mono)
            continue
        entry.state, entry.device_id = row["state"], row["device_id"]
        # A running row's updated_at is when it was marked running: its assignment came before that.
        entry.assigned_at = min(row["updated_at"], row["started_at"] or row["updated_at"])
        entry.started_at = row["started_at"]
        entry.name = row["spec"].get("name")
        entry.running_saved = row["state"] == TaskState.RUNNING
        board.fleet.holding(row["device_id"], entry.id, pids.get(row["device_id"]), now_mono)
        board.limits.started(entry.limit_key, now_mono)
    logger.info("recovered %d unfinished tasks (%d queued) from %s", len(tasks),
                sum(1 for e in tasks.values() if e.state == TaskState.QUEUED), store.path)
