"""What users do to tasks through the master: cancel (one, or every task in a state or with a tag) and re-queue.
Each works through the cluster's own transitions (finish, enqueue) and its fleet's commands."""
from __future__ import annotations

import itertools
import logging

from ..errors import UsageError
from ..model import TaskState
from .board import Board
from .entries import TaskEntry

logger = logging.getLogger(__name__)


def select_ids(board: Board, state: str | None, tag: str | None, limit: int) -> list[str]:
    """At most `limit` unfinished tasks in `state` and/or requiring `tag` that no cancel has reached yet: what a
    bulk cancel acts on, a reply's worth at a time."""
    if state is not None and state not in (TaskState.QUEUED, TaskState.ASSIGNED, TaskState.RUNNING):
        raise UsageError(f"state {state!r} cannot be cancelled; use queued, assigned or running")
    if state is None and tag is None:
        raise UsageError("cancel needs task ids, a state or a tag")
    chosen = (e.id for e in board.tasks.values() if not e.cancel_requested and (state is None or e.state == state)
              and (tag is None or tag in e.need.tags))
    return list(itertools.islice(chosen, limit))


def cancel(board: Board, task_id: str, now_mono: float, now: float) -> str:
    """Cancel one task: 'cancelled' (was queued), 'cancelling' (a cancel command sent to its worker) or 'unknown'."""
    entry = board.tasks.get(task_id)
    if entry is None:
        return "unknown"
    if entry.state == TaskState.QUEUED:
        board.finish(entry, TaskState.CANCELLED, now, reason="cancelled by user")
        return TaskState.CANCELLED
    entry.cancel_requested = True
    board.fleet.command("cancel", {"keys": [[entry.id, entry.attempt]], "reason": "cancelled by user"},
                          [entry.device_id], now_mono)
    return "cancelling"


def reopen(board: Board, task_id: str, now_mono: float, now: float) -> str:
    """A user re-queues a failed, timed-out, cancelled or quarantined task: attempts go on counting,
    retries and deaths (with their evidence) start afresh."""
    if task_id in board.tasks:
        return f"already {board.tasks[task_id].state}"
    row = board.store.get_task(task_id)
    if row is None:
        return "not found"
    if row["state"] == TaskState.DONE:
        return "already done"
    spec = board.store.get_spec(task_id)
    base = board.default_retries if spec.get("retries") is None else spec["retries"]
    entry = TaskEntry.from_spec(spec, board.needs, row["attempt"] + base, row["timeout_s"], attempt=row["attempt"],
                                retry_rule=board.retry_rules.of(spec))
    board.store.reopen_task(task_id, entry.retries, f"re-queued by user from {row['state']}", now)
    board.tasks[task_id] = entry
    board.enqueue(entry, 0.0, now_mono)
    logger.info("re-queued by user task=%s from=%s", task_id, row["state"])
    return TaskState.QUEUED
