"""Inline python calls (`python_pool = "inline"`): `python` tasks run in the worker's own loop thread.

No pipe write, no child to wake and no reply to wait for: the quickest way to run short, trusted calls, at the
price of the pool children's isolation (docs/architecture.md, "Worker: inline python calls").
"""
from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from typing import Any

from ..model import TaskState
from ..protocol import packb, unpackb
from .failures import UNRESOLVED, judged_call
from .pypool import CappedBuffer, TextSink, _resolve
from .results import AttemptResult, exception_error, timeout_error

logger = logging.getLogger(__name__)
TURN_BUDGET_S = 0.05   # calls run back to back for at most this long before the loop goes around
REFIRE_S = 0.25        # a timed-out call that goes on is interrupted again this often


class CallTimeout(BaseException):
    """Raised in a call by the timer. A BaseException, so a call's `except Exception` does not swallow it."""


class _Capture(TextSink):
    """A text stream writing into a CappedBuffer: what a call prints, head and tail kept."""

    def __init__(self, buffer: CappedBuffer) -> None:
        self._buffer = buffer

    def _put(self, text: str) -> None:
        self._buffer.write(text.encode("utf-8", errors="replace"))


class InlineCalls:
    """Runs python tasks in the calling thread. Make it in the thread that will run the calls: timeouts are
    enforced (SIGALRM) only when that is the main thread of a POSIX process."""

    def __init__(self, max_output_bytes: int, default_timeout_s: float | None) -> None:
        self.max_output_bytes = max_output_bytes
        self.default_timeout_s = default_timeout_s
        self.cache: dict[str, Any] = {}
        self._armed = False
        self.enforces_timeouts = hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
        if self.enforces_timeouts:
            signal.signal(signal.SIGALRM, self._on_alarm)

    def run(self, tasks: list[dict]) -> tuple[list[AttemptResult], list[dict]]:
        """Run `tasks` in order until TURN_BUDGET_S is spent: (their results, the tasks not run)."""
        results: list[AttemptResult] = []
        deadline = time.monotonic() + TURN_BUDGET_S
        for index, task in enumerate(tasks):
            if index and time.monotonic() >= deadline:
                return results, tasks[index:]
            results.append(self.call(task))
        return results, []

    def call(self, task: dict) -> AttemptResult:
        """Run one task's call and return its result (done, failed or timed_out); never raises."""
        timeout = task.get("timeout")
        timeout_s = self.default_timeout_s if timeout is None else float(timeout)
        out, err = CappedBuffer("stdout", self.max_output_bytes), CappedBuffer("stderr", self.max_output_bytes)
        saved = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = _Capture(out), _Capture(err)
        state, value, error = TaskState.DONE, None, None
        fn, args, kwargs = UNRESOLVED, task.get("args") or [], task.get("kwargs") or {}
        started_at, t0 = time.time(), time.monotonic()
        try:
            try:
                self._arm(timeout_s)
                fn = _resolve(task["function"], self.cache)
                value = fn(*args, **kwargs)
            finally:
                self._disarm()
            value = _wire_copy(value)
        except CallTimeout:
            state, value = TaskState.TIMED_OUT, None
        except BaseException as e:  # noqa: B036 - SystemExit from user code must not end the worker
            state, value, error = TaskState.FAILED, None, judged_call(exception_error(e), e, fn, args, kwargs)
        finally:
            sys.stdout, sys.stderr = saved
        duration = time.monotonic() - t0
        if timeout_s is not None and duration > timeout_s:   # also a call that swallowed the timer's exception
            state, value = TaskState.TIMED_OUT, None
        if state == TaskState.TIMED_OUT:
            error = timeout_error(timeout_s)
        if len(self.cache) > 1000:   # many distinct functions: forget them, they are imported again
            self.cache.clear()
        return AttemptResult(task["id"], task["attempt"], state, value=value, error=error, stdout=out.text(),
                             stderr=err.text(), started_at=started_at, duration_s=duration)

    def _arm(self, timeout_s: float | None) -> None:
        if self.enforces_timeouts and timeout_s is not None:
            self._armed = True
            # Fires again every REFIRE_S until disarmed: a call that swallowed the exception gets it again.
            signal.setitimer(signal.ITIMER_REAL, max(timeout_s, 1e-6), REFIRE_S)

    def _disarm(self) -> None:
        if self._armed:
            self._armed = False   # first: a signal already on its way finds the timer disarmed
            signal.setitimer(signal.ITIMER_REAL, 0)

    def _on_alarm(self, signum: int, frame: Any) -> None:
        # Raised only into the call's own code: never into this module's bookkeeping around it (it would escape
        # call() from an except or finally clause), nor after the call (a late signal). Ignored, it fires again.
        if self._armed and (frame is None or frame.f_globals is not _THIS_MODULE):
            raise CallTimeout()


_THIS_MODULE = globals()


def _wire_copy(value: Any) -> Any:
    """The value as msgpack carries it: the outbox then holds no live object a later call could change, and a value
    msgpack cannot carry (or whose own code raises while it is packed) fails this call, not a later send."""
    try:
        return unpackb(packb(value))
    except Exception as e:
        raise TypeError(f"return value of type {type(value).__name__} is not msgpack-serialisable: "
                        f"{exception_error(e).message}") from None
