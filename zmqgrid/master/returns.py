"""Tasks a worker hands back unstarted (`Results.returned`): re-queued at their place, the attempt not counted.

docs/architecture.md, "Worker: credit and prefetch": a worker whose every slot runs a long attempt gives back what
it holds for a slot, so that another worker's free slot takes it."""
from __future__ import annotations

import logging

from ..model import TaskState
from .board import Board
from .entries import DeviceEntry

logger = logging.getLogger(__name__)
ASSIGNED = TaskState.ASSIGNED.value


def take_back(board: Board, device: DeviceEntry, keys: list, now: float) -> int:
    """Re-queue each of `keys` that is the current attempt of a task dispatched to `device` and not started; any
    other key is refused (counted in `refused_returns`), so a worker can give back only what it holds. Returns how
    many were taken back."""
    taken = 0
    for task_id, attempt in keys:
        entry = board.tasks.get(task_id)
        if entry is None or entry.attempt != attempt or entry.device_id != device.device_id \
                or entry.state != ASSIGNED:
            board.counters["refused_returns"] += 1
            logger.debug("refused return task=%s attempt=%d from %s", task_id, attempt, device.device_id)
            continue
        taken += 1
        device.inflight.discard(task_id)
        board.limits.ended(entry.limit_key)
        if entry.cancel_requested:
            board.finish(entry, TaskState.CANCELLED, now, reason="cancelled by user")
            continue
        # The attempt number goes back: this one never ran, so it does not count against the task's retries.
        entry.attempt -= 1
        entry.state, entry.device_id, entry.misses = TaskState.QUEUED.value, None, 0
        board.store.return_task(task_id, entry.attempt, f"returned unstarted by {device.device_id}", now)
        board.push_back(entry)   # at its old place: it was dispatched in queue order, so it goes before later ones
    board.counters["returned"] += taken
    if taken:
        logger.debug("device=%s returned %d unstarted tasks", device.device_id, taken)
    return taken
