"""The project gate's work off the worker's loop (checking, unpacking, building environments, pruning them), one job
at a time in a thread of its own; the loop hears of each job's end when it takes `ended()`."""
from __future__ import annotations

import queue
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor


class JobThread:
    """`run(version, what, work)` calls `work(version)` in the thread and wakes the loop when it ends; `ended()`
    yields (version, what, the exception or None) of the jobs that ended; `submit` runs anything else there in turn."""

    def __init__(self, wake: Callable[[], None]) -> None:
        self._wake = wake
        self._pool: ThreadPoolExecutor | None = None   # made at the first job
        self._ended: queue.SimpleQueue = queue.SimpleQueue()

    def submit(self, fn: Callable, *args: object) -> Future:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="zmqgrid-projects")
        return self._pool.submit(fn, *args)

    def run(self, version: str, what: str, work: Callable[[str], None]) -> None:
        def job() -> None:
            try:
                work(version)
                self._ended.put((version, what, None))
            except Exception as e:  # Damaged, or the disk (full, unwritable): the loop decides
                self._ended.put((version, what, e))
            self._wake()

        self.submit(job)

    def ended(self) -> Iterator[tuple[str, str, Exception | None]]:
        while not self._ended.empty():
            yield self._ended.get_nowait()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
