"""Threads that wait for shell and script runs, kept for the next run: a thread start costs about 0.1 ms of CPU,
as much as the rest of the worker's share of a short task."""
from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

logger = logging.getLogger(__name__)

IDLE_S = 30.0   # an idle thread ends after this long without a run


class Runners:
    """`submit(fn, *args)` runs fn in an idle thread, or in a new one when none is idle. A thread whose run left it
    at a task's niceness (`lowered()` says so) ends instead of waiting for the next."""

    def __init__(self, lowered: Callable[[], bool] = lambda: False, name: str = "zmqgrid-run") -> None:
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()   # only jobs for which an idle thread was claimed
        self._lock = threading.Lock()
        self._idle = 0         # idle threads not yet claimed by a job
        self._closed = False
        self._lowered, self._name = lowered, name

    def submit(self, fn: Callable, *args: object) -> None:
        with self._lock:
            claimed = self._idle > 0 and not self._closed
            if claimed:
                self._idle -= 1
        if claimed:
            self._jobs.put((fn, args))
        else:
            threading.Thread(target=self._serve, args=((fn, args),), daemon=True, name=self._name).start()

    def close(self) -> None:
        """Idle threads end; running ones end after their run."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, 0
        for _ in range(idle):
            self._jobs.put(None)

    def _serve(self, job: tuple | None) -> None:
        while job is not None:
            fn, args = job
            try:
                fn(*args)
            except Exception:   # the job's own handler failed: the thread goes on serving
                logger.exception("a run's thread failed")
            if self._lowered():
                return
            with self._lock:
                if self._closed:
                    return
                self._idle += 1
            job = self._next()

    def _next(self) -> tuple | None:
        while True:
            try:
                return self._jobs.get(timeout=IDLE_S)
            except queue.Empty:
                with self._lock:
                    # More idle threads than jobs queued for them: this one may go. Otherwise a job was queued
                    # for an idle thread, and this one takes it.
                    if self._idle > 0:
                        self._idle -= 1
                        return None
