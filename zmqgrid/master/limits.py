"""Per-key limits for crawlers: at most K tasks of a key at once, at most R started per minute."""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

WINDOW_S = 60.0


@dataclass
class KeyLimit:
    max_concurrent: int | None = None
    per_minute: int | None = None
    running: int = 0
    starts: deque = field(default_factory=deque)   # monotonic times of the starts inside the window
    parked: deque = field(default_factory=deque)   # ids of queued tasks waiting for room, in order


class Limits:
    """Admission control by limit key. Tasks that would exceed their key's limit are parked, not scanned
    again and again; they come back in order when a task of the key ends or the rate window slides."""

    def __init__(self) -> None:
        self.keys: dict[str, KeyLimit] = {}

    def define(self, key: str, max_concurrent: int | None, per_minute: int | None) -> None:
        limit = self.keys.setdefault(key, KeyLimit())
        limit.max_concurrent, limit.per_minute = max_concurrent, per_minute

    def allows(self, key: str | None, now_mono: float) -> bool:
        limit = self.keys.get(key) if key else None
        if limit is None:
            return True
        while limit.starts and now_mono - limit.starts[0] >= WINDOW_S:
            limit.starts.popleft()
        if limit.max_concurrent is not None and limit.running >= limit.max_concurrent:
            return False
        return limit.per_minute is None or len(limit.starts) < limit.per_minute

    def started(self, key: str | None, now_mono: float) -> None:
        limit = self.keys.get(key) if key else None
        if limit is not None:
            limit.running += 1
            limit.starts.append(now_mono)

    def ended(self, key: str | None) -> None:
        limit = self.keys.get(key) if key else None
        if limit is not None and limit.running > 0:
            limit.running -= 1

    def park(self, key: str, task_id: str) -> None:
        self.keys[key].parked.append(task_id)

    def room(self, key: str, now_mono: float) -> int:
        limit = self.keys[key]
        if not self.allows(key, now_mono):
            return 0
        rooms = [1 << 30]
        if limit.max_concurrent is not None:
            rooms.append(limit.max_concurrent - limit.running)
        if limit.per_minute is not None:
            rooms.append(limit.per_minute - len(limit.starts))
        return max(0, min(rooms))

    def unpark(self, now_mono: float) -> list[str]:
        """Parked task ids that may run now, no more than each key has room for (dispatch checks again)."""
        out = []
        for key, limit in self.keys.items():
            if limit.parked:
                for _ in range(min(len(limit.parked), self.room(key, now_mono))):
                    out.append(limit.parked.popleft())
        return out

    def describe(self, key: str) -> str:
        limit = self.keys.get(key)
        if limit is None:
            return f"limit key {key} has no limit"
        parts = []
        if limit.max_concurrent is not None:
            parts.append(f"{limit.running}/{limit.max_concurrent} running")
        if limit.per_minute is not None:
            parts.append(f"{len(limit.starts)}/{limit.per_minute} started in the last minute")
        return f"limit key {key}: " + ", ".join(parts)
