"""A worker's live output: what running tasks print, gathered from their threads and sent to the master in batches."""
from __future__ import annotations

import threading

from ..protocol import Output

FLUSH_INTERVAL_S = 0.25


class LiveOutput:
    """Pieces of output by (task id, attempt), not sent yet. `add` is called from any thread; `take` by the loop."""

    def __init__(self) -> None:
        self.pending: dict[tuple[str, int], list] = {}   # (id, attempt) -> [[stream, text], ...]
        self.lock = threading.Lock()
        self.flushed = 0.0

    def add(self, key: tuple[str, int], stream: str, text: str) -> None:
        with self.lock:
            self.pending.setdefault(key, []).append([stream, text])

    def take(self, now: float) -> Output | None:
        """The output to send now, at most every FLUSH_INTERVAL_S, batched across tasks; None when none is due."""
        if not self.pending or now - self.flushed < FLUSH_INTERVAL_S:
            return None
        self.flushed = now
        with self.lock:
            pending, self.pending = self.pending, {}
        # One chunk per task and stream (Output.chunks is bounded; a chatty task writes thousands of pieces).
        return Output([[key[0], key[1], stream, text] for key, parts in pending.items()
                       for stream in ("stdout", "stderr") if (text := "".join(t for s, t in parts if s == stream))])
