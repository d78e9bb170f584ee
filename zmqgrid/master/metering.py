"""The `metrics` query (what `/metrics` shows, compact, from memory) and the `samples` query (a device's recent
heartbeat figures): docs/architecture.md, "What `metrics` and `samples` answer".

`metrics` reads no task row: unfinished tasks by state come from the board (the in-flight ones from the devices
that hold them), finished ones from its tallies, and the oldest queued task is the first queued entry in the
board's submit order, whose submit time is one look-up by id. Its cost grows with the devices, not the ledger.
"""
from __future__ import annotations

import time

from ..model import DEVICE_STATES, DeviceState, TaskState
from ..store import readings
from .board import Board

MAX_DEVICES_PER_ANSWER = 5000   # rows of ~60 packed bytes: far below any client's max_message_bytes
MAX_SAMPLES = 600               # a device's samples in one answer (the default heartbeat_retention)
# Per device row: id, state, running, concurrency, cpu_percent, memory_percent, disk_percent (None when not live)
DEVICE_FIELDS = ("device_id", "state", "running", "concurrency", "cpu_percent", "memory_percent", "disk_percent")
QUEUED, ASSIGNED, RUNNING = TaskState.QUEUED.value, TaskState.ASSIGNED.value, TaskState.RUNNING.value


def _figure(metrics: dict, key: str) -> float | None:
    value = metrics.get(key)
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def device_rows(board: Board) -> tuple[list[list], int, int]:
    """(a compact row per device, ordered by id; tasks assigned, tasks running), walking each live device's
    in-flight set once. A device in the ledger not heard from since this master started is offline."""
    tasks, live = board.tasks, board.fleet.devices
    rows, assigned, running = [], 0, 0
    known = readings.device_concurrency(board.store)
    for device_id in sorted(known.keys() | live.keys()):
        d = live.get(device_id)
        if d is None:
            rows.append([device_id, DeviceState.OFFLINE.value, 0, known[device_id] or 0, None, None, None])
            continue
        on = sum(1 for t in d.inflight if (e := tasks.get(t)) is not None and e.state == RUNNING)
        held = sum(1 for t in d.inflight if t in tasks) - on
        running, assigned = running + on, assigned + held
        state = d.state if d.registered or d.state == DeviceState.OFFLINE else DeviceState.OFFLINE
        m = d.metrics if state in (DeviceState.ONLINE, DeviceState.DRAINING) else {}
        rows.append([device_id, str(state), on, d.concurrency, _figure(m, "cpu_percent"),
                     _figure(m, "memory_percent"), _figure(m, "disk_percent")])
    return rows, assigned, running


def oldest_queued_age_s(board: Board, now: float) -> float | None:
    """Seconds since the oldest queued task was submitted, or None when none is queued. The board's tasks are in
    submit order (a re-opened final task joins at the end); the entries passed over before the first queued one
    are in flight, so the walk is as long as the tasks in flight at most."""
    for entry in board.tasks.values():
        if entry.state == QUEUED:
            created = readings.created_at(board.store, entry.id)
            return None if created is None else round(max(0.0, now - created), 3)   # None: submitted this turn
    return None


def metrics(board: Board, offset: int, limit: int, uptime_s: float, settings: dict) -> dict:
    """The answer, with the device rows from `offset` (at most `limit` of them)."""
    rows, assigned, running = device_rows(board)
    by_state = dict.fromkeys(DEVICE_STATES, 0)
    for row in rows:
        by_state[row[1]] = by_state.get(row[1], 0) + 1
    now = time.time()
    tallies = board.tallies.snapshot()
    page = rows[offset:offset + limit]
    return {"incarnation": board.incarnation, "uptime_s": uptime_s,
            "tasks": {QUEUED: len(board.tasks) - assigned - running, ASSIGNED: assigned, RUNNING: running},
            "oldest_queued_age_s": oldest_queued_age_s(board, now), **tallies,
            "devices_by_state": by_state, "counters": dict(board.counters),
            "bad_messages": settings.get("bad_messages", 0), "refused_messages": settings.get("refused_messages", 0),
            "device_fields": list(DEVICE_FIELDS), "devices": page,
            "next_offset": offset + len(page) if offset + len(page) < len(rows) else None}


def samples(board: Board, device_id: str, limit: int) -> list[dict]:
    return readings.samples(board.store, device_id, limit)
