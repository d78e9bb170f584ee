"""How an attempt ended on this worker (`AttemptResult`), and the errors the worker itself gives (`TaskError`s).

A run builds its result in one place (executors.Run._make, pycalls.Call.result, inline.InlineCalls.call); an
attempt that never ran gets one of the constructors below. `to_wire()` is the result as the master reads it.
"""
from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field
from typing import Any

from ..model import TaskError, TaskState


@dataclass(slots=True)
class AttemptResult:
    """The end of one attempt. `finished_at` and `duration_s` stay on the worker: the master times the end itself."""

    id: str
    attempt: int
    state: TaskState                  # one of model.ATTEMPT_OUTCOMES
    exit_code: int | None = None
    value: Any = None
    error: TaskError | None = None
    stdout: str = ""
    stderr: str = ""
    started_at: float | None = None   # wall clock; None when it never started
    finished_at: float = field(default_factory=time.time)
    duration_s: float = 0.0

    def to_wire(self) -> dict:
        """What the master records (protocol.RESULT): the key and state, and of the rest only what is set (no nil,
        no empty output), in this order."""
        # str(): the state's plain text, as the schema's checks (outbox.fit) and the master's decode take it
        wire: dict[str, Any] = {"id": self.id, "attempt": self.attempt, "state": str(self.state)}
        if self.exit_code is not None:
            wire["exit_code"] = self.exit_code
        if self.value is not None:
            wire["value"] = self.value
        if self.error is not None:
            wire["error"] = self.error.to_wire()
        if self.stdout:
            wire["stdout"] = self.stdout
        if self.stderr:
            wire["stderr"] = self.stderr
        if self.started_at is not None:
            wire["started_at"] = self.started_at
        return wire

    @classmethod
    def cancelled_before_start(cls, task_id: str, attempt: int, reason: str) -> AttemptResult:
        """An attempt stopped while it waited for a slot."""
        return cls(task_id, attempt, TaskState.CANCELLED, error=TaskError("Cancelled", reason))

    @classmethod
    def refused(cls, task_id: str, attempt: int, reason: str) -> AttemptResult:
        """An attempt this worker's allow-lists refuse: permanent, since the fleet's settings refuse it, not chance
        (docs/architecture.md, "Failures that are not retried")."""
        return cls(task_id, attempt, TaskState.FAILED, error=TaskError("Forbidden", reason, permanent=True))

    @classmethod
    def crashed(cls, task_id: str, attempt: int, error: Exception) -> AttemptResult:
        """An attempt whose executor raised instead of returning its result."""
        return cls(task_id, attempt, TaskState.FAILED, error=TaskError(type(error).__name__, str(error)))


def timeout_error(timeout_s: float) -> TaskError:
    return TaskError("Timeout", f"exceeded timeout of {timeout_s:g} s")


def cancel_error(reason: str) -> TaskError:
    """The error of an attempt stopped while it ran."""
    return TaskError("Cancelled", f"cancelled: {reason}")


def exception_error(e: BaseException) -> TaskError:
    """The error of a call's exception, even one whose own __str__ raises."""
    try:
        message = str(e)
    except Exception:  # noqa: BLE001 - the user's __str__ is broken; its type still says what happened
        message = f"<{type(e).__name__}: str() failed>"
    # Drop this frame: the user's traceback starts at their callable (or the import).
    tb = "".join(traceback.format_exception(type(e), e, e.__traceback__.tb_next if e.__traceback__ else None))
    return TaskError(type(e).__name__, message, tb)
