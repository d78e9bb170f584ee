"""A python call in flight and the batch it went to a child in: what PySlots keeps per call and per busy child."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

from ..model import TaskError, TaskState
from .pypool import CappedBuffer, _Child
from .results import AttemptResult

OutputCallback = Callable[[str, str], None]


class PyRun:
    """A python call in progress, as the worker's `running` map holds it: driven by PySlots from the worker's
    loop, so it has no thread of its own."""

    __slots__ = ("task_id", "attempt")

    def __init__(self, task_id: str, attempt: int) -> None:
        self.task_id, self.attempt = task_id, attempt


@dataclass
class Call:
    """One task's call: its output so far, and the batch (hence the child) it runs in."""

    task: dict
    on_output: OutputCallback | None
    max_output_bytes: int
    timeout_s: float | None
    index: int
    batch: "Batch | None" = None
    cancel_reason: str = ""
    streams: dict[str, CappedBuffer] | None = None   # made at the first output: most calls print nothing

    def buffer(self, stream: str) -> CappedBuffer:
        if self.streams is None:
            self.streams = {}
        if stream not in self.streams:
            self.streams[stream] = CappedBuffer(stream, self.max_output_bytes)
        return self.streams[stream]

    def text(self, stream: str) -> str:
        return self.streams[stream].text() if self.streams and stream in self.streams else ""

    @property
    def key(self) -> tuple[str, int]:
        return self.task["id"], self.task["attempt"]

    def result(self, state: TaskState, duration_s: float, *, value: Any = None, error: TaskError | None = None,
               exit_code: int | None = None) -> AttemptResult:
        now = time.time()
        return AttemptResult(self.task["id"], self.task["attempt"], state, exit_code=exit_code, value=value, error=error,
                             stdout=self.text("stdout"), stderr=self.text("stderr"), started_at=now - duration_s,
                             finished_at=now, duration_s=duration_s)


@dataclass
class Batch:
    """Calls handed to one child in one message, in order; `received` of them have reported."""

    child: _Child
    calls: list[Call]
    received: int = 0                      # calls whose result has come back
    sent_at: float = field(default_factory=time.monotonic)

    def running(self) -> tuple[Call, float] | None:
        """The call the child is on and when it started (the batch's sending, if the child has not begun)."""
        index = self.child.current.value   # read before `started`: the child writes them in the other order
        if index < 0:   # not begun (or every call so far skipped)
            return (self.calls[self.received], self.sent_at) if self.received < len(self.calls) else None
        if index < len(self.calls):
            return self.calls[index], self.child.started.value
        return None
