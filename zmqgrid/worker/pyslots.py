"""Python tasks driven from the worker's own poll loop: one long-lived spawn child per slot, no thread per call.

The worker's poller watches each child's pipe and death sentinel. Calls of functions known to be fast go to a
child in batches (one message out, one back), since a pipe write that wakes a sleeping child costs more than
a no-op call. The child publishes which call it is running in shared memory, so timeouts are enforced per
call, on the monotonic clock, and an unstarted call can be cancelled without killing its batch-mates.
When a child is killed (timeout, cancel) or dies, the call it was running ends; its batch-mates that had not
reported go back to the worker's queue and run again (at-least-once, as when a worker dies).
"""
from __future__ import annotations

import logging
import multiprocessing
import time
from collections import deque
from typing import Callable

from ..config import Config
from ..model import TaskError, TaskState
from ..protocol import packb, unpackb
from .priority import lower_priority
from .projects import copy_of
from .pycalls import Batch, Call, OutputCallback
from .pypool import MAX_BATCH, _Child, _died
from .pyspawn import Launch
from .results import AttemptResult, cancel_error, timeout_error
from .proctree import kill_tree
from .procrecord import ProcessRecord

logger = logging.getLogger(__name__)
FAST_CALL_S = 0.005      # a function whose calls take less than this (observed) may be batched
TINY_CALL_S = 0.0005     # ... and under this, its calls are not spread over several children
SPIN_S = 0.0005          # a lone tiny call's reply is awaited awake for at most this long


class PySlots:
    """`start`/`start_batch` hand calls to an idle child; `handle(fd)`, `expire(now)` and `kill` return finished
    results; calls that must run again are given to `requeue`."""

    def __init__(self, *, size: int, max_output_bytes: int, default_timeout_s: float | None,
                 watch: Callable[[int], None], unwatch: Callable[[int], None],
                 requeue: Callable[[list[dict]], None] | None = None, kill_grace_s: float = 3.0,
                 max_tasks_per_child: int = Config.max_tasks_per_child,
                 max_child_memory_mb: int = Config.max_child_memory_mb, nice: int = 0,
                 record: ProcessRecord | None = None, launch: Launch | None = None,
                 room: Callable[[], int] | None = None) -> None:
        self.ctx = multiprocessing.get_context("spawn")
        # None: children of the worker's own interpreter (the default pool); else another interpreter's (pyspawn)
        self.launch = launch
        # how many more children the worker allows (PyPools counts every pool's); alone, this pool's own room
        self.room = room or (lambda: self.size - len(self.idle) - self.busy_children)
        self.last_used = time.monotonic()
        self.size, self.max_output_bytes, self.default_timeout_s = size, max_output_bytes, default_timeout_s
        self.watch, self.unwatch = watch, unwatch
        self.requeue, self.nice, self.grace_s = requeue or (lambda tasks: None), nice, kill_grace_s
        self.max_tasks = max_tasks_per_child or float("inf")
        self.max_rss = (max_child_memory_mb << 20) or float("inf")
        self.record = record   # each child's session is noted there for a reaper (orphans.py)
        self.entries: dict[int, int | None] = {}   # child pid -> its entry in the record
        self.idle: list[_Child] = []
        self.batches: dict[int, Batch] = {}      # fd (pipe or sentinel) of a busy child -> its batch
        self.watched: set[int] = set()           # fds of live children, registered with the worker's poller
        self.by_key: dict[tuple[str, int], Call] = {}
        self.durations: dict[str, float] = {}    # function -> recent call duration (rises at once, decays slowly)

    def pids(self) -> list[int]:
        return [c.pid for c in self.idle] + [b.child.pid for b in self._busy()]

    def _busy(self) -> list[Batch]:
        return list({id(b): b for b in self.batches.values()}.values())

    @property
    def busy_children(self) -> int:
        return len(self.batches) // 2

    def _start_pool(self) -> None:
        """Start every child the pool lacks at once, at its first call: the next calls find theirs booted, and a
        worker that runs no python task starts none (each costs an interpreter's boot and its memory)."""
        while len(self.idle) + self.busy_children < self.size and self.room() > 0:
            child = self._try_spawn()
            if child is None:
                return
            self.idle.append(child)

    def _spawn(self) -> _Child:
        child = _Child(self.ctx, self.launch)
        if self.record is not None:
            self.entries[child.pid] = self.record.add_session(child.pid)
        lower_priority(child.pid, self.nice)
        # Watched for its whole life, not per call: (un)registering with the poller costs more than a call.
        for fd in (child.conn.fileno(), child.process.sentinel):
            self.watched.add(fd)
            self.watch(fd)
        return child

    def _discard(self, child: _Child, grace_s: float) -> None:
        self._unwatch(child)
        child.discard(grace_s)
        self._forget(child)

    def _forget(self, child: _Child) -> None:
        """The child and its tree are gone: its entry leaves the record."""
        entry = self.entries.pop(child.pid, None)
        if self.record is not None:
            self.record.remove(entry)

    # ------------------------------------------------------------ starting

    def reply_due(self) -> bool:
        """A lone call of a function seen to return in microseconds is out, sent less than SPIN_S ago: the worker
        polls without sleeping until its reply comes (a poll that sleeps costs a wake-up, as much as the call's whole
        round trip to the child)."""
        if len(self.batches) != 2:   # one busy child: its pipe and its sentinel
            return False
        batch = next(iter(self.batches.values()))
        return (len(batch.calls) == 1 and time.monotonic() - batch.sent_at < SPIN_S
                and self.observed(batch.calls[0].task) < TINY_CALL_S)

    def batch_size(self, waiting: deque[dict], free_children: int) -> int:
        """How many of the tasks at the front of `waiting` the next child takes: one, unless they are python
        calls of functions seen to be fast, shared out over the free children (at most MAX_BATCH). Calls seen to
        take under TINY_CALL_S all go to one child, up to MAX_BATCH: spreading them over processes costs more in
        wake-ups than running them side by side gains."""
        if not waiting:
            return 0
        tiny = self.observed(waiting[0]) < TINY_CALL_S
        share = MAX_BATCH if tiny else min(MAX_BATCH, -(-len(waiting) // max(1, free_children)))
        limit = TINY_CALL_S if tiny else FAST_CALL_S
        n = 0
        while n < min(share, len(waiting)) and self.observed(waiting[n]) < limit:
            n += 1
        return max(1, n)

    def observe(self, function: str, duration: float) -> None:
        """Remember how long a call of `function` took: a slow call counts at once, fast ones decay towards it."""
        if len(self.durations) > 1000:   # many distinct functions: forget, they are measured again
            self.durations.clear()
        last = self.durations.get(function, 0.0)
        self.durations[function] = duration if duration > last else 0.8 * last + 0.2 * duration

    def observed(self, task: dict) -> float:
        """Recent duration of the task's function; infinite when unknown or not a python call."""
        if task.get("kind") != "python":
            return float("inf")
        return self.durations.get(task.get("function"), float("inf"))

    def start(self, task: dict, on_output: OutputCallback | None = None) -> AttemptResult | None:
        """Begin one call; returns a result at once only if it could not start."""
        return (self.start_batch([(task, on_output)]) or [None])[0]

    def start_batch(self, items: list[tuple[dict, OutputCallback | None]]) -> list[AttemptResult]:
        """Hand calls to one idle child in one message; returns results of calls that could not start."""
        if not 0 < len(items) <= MAX_BATCH:
            raise ValueError(f"a batch holds 1 to {MAX_BATCH} calls, not {len(items)}")
        calls = []
        for index, (task, on_output) in enumerate(items):
            timeout = task.get("timeout")
            calls.append(Call(task, on_output, self.max_output_bytes,
                              self.default_timeout_s if timeout is None else float(timeout), index))
        self.last_used = time.monotonic()
        child = self._checkout()
        if child is None:
            return [c.result(TaskState.FAILED, 0.0,
                             error=TaskError("StartError", "cannot start a python child process")) for c in calls]
        child.current.value = -1
        child.skip[:] = bytes(MAX_BATCH)
        try:
            child.conn.send_bytes(packb(("calls", [(c.task["function"], c.task.get("args") or [],
                                                    c.task.get("kwargs") or {}, *_in_copy(c.task)) for c in calls])))
        except OSError as e:
            self._discard(child, 0.0)
            return [c.result(TaskState.FAILED, 0.0, error=TaskError("WorkerChildDied", f"cannot send the call: {e}"))
                    for c in calls]
        batch = Batch(child, calls)
        for call in calls:
            call.batch = batch
            self.by_key[call.key] = call
        self.batches[child.conn.fileno()] = self.batches[child.process.sentinel] = batch
        return []

    def _checkout(self) -> _Child | None:
        # No child alive: the first call, or every child has died. A pool of another interpreter starts one child
        # per call that finds none idle: it shares the worker's slots with the others (PyPools).
        if self.launch is None and not (self.idle or self.batches):
            self._start_pool()
        while self.idle:
            child = self.idle.pop()
            if child.process.is_alive():
                return child
            logger.warning("python child pid=%d died while idle (exit code %s)", child.pid, child.process.exitcode)
            self._discard(child, 0.0)
        return self._try_spawn()

    def retire_idle(self) -> bool:
        """Stop one idle child (another pool needs its room); False when none is idle."""
        if not self.idle:
            return False
        child = self.idle.pop(0)
        self._unwatch(child)
        child.retire(self.grace_s)
        self._forget(child)
        return True

    def _unwatch(self, child: _Child) -> None:
        for fd in (child.conn.fileno(), child.process.sentinel):
            if fd in self.watched:
                self.watched.discard(fd)
                self.unwatch(fd)

    def _try_spawn(self) -> _Child | None:
        try:
            return self._spawn()
        except (OSError, RuntimeError) as e:   # the next call that finds no idle child tries again
            logger.error("cannot start a python child: %s", e)
            return None

    # ------------------------------------------------------------ replies

    def handle(self, fd: int) -> list[AttemptResult]:
        """The child's pipe or death sentinel is readable: output, results, or the child's death."""
        batch = self.batches.get(fd)
        if batch is None:
            self._reap_idle(fd)
            return []
        child = batch.child
        if fd == child.conn.fileno():
            try:
                # One message per readable event: the poller reports the pipe again if more is waiting, and
                # Connection.poll() would build a selector per call.
                reply = unpackb(child.conn.recv_bytes())
            except (EOFError, OSError):
                reply = None
            if reply is not None:
                return self._reply(batch, reply)
        if not child.process.is_alive() or fd == child.process.sentinel:
            return self._end_batch(batch, None, TaskState.FAILED, None)
        return []

    def _reply(self, batch: Batch, reply: list) -> list[AttemptResult]:
        if reply[0] == "out":
            _, stream, text, index = reply
            call = batch.calls[min(max(index, 0), len(batch.calls) - 1)]
            data = text.encode("utf-8", errors="replace")
            buffer = call.buffer("stdout" if stream == "stdout" else "stderr")
            buffer.write(data)
            if call.on_output is not None and text and buffer.live_part(data):   # chunks of <= 16 KB: whole
                try:
                    call.on_output(stream, text)
                except Exception:
                    logger.exception("output callback failed task=%s", call.task["id"])
            return []
        _, items, rss, final = reply
        results = []
        for status, value, duration in items:
            call = batch.calls[batch.received]
            batch.received += 1
            self.by_key.pop(call.key, None)
            if status != "skipped":   # a skipped call says nothing about how long the function takes
                self.observe(call.task["function"], duration)
            if status == "ok":
                results.append(call.result(TaskState.DONE, duration, value=value))
            elif status == "skipped":
                results.append(call.result(TaskState.CANCELLED, 0.0, error=TaskError("Cancelled", call.cancel_reason)))
            else:
                results.append(call.result(TaskState.FAILED, duration, error=TaskError.from_wire(value)))
        if final:
            self._release(batch, rss)
        return results

    def _release(self, batch: Batch, rss: int) -> None:
        child = batch.child
        for fd in (child.conn.fileno(), child.process.sentinel):
            self.batches.pop(fd, None)
        child.tasks_done += len(batch.calls)
        if child.tasks_done < self.max_tasks and rss <= self.max_rss:
            self.idle.append(child)
            return
        logger.info("recycling python child pid=%d after %d tasks, rss=%d MB", child.pid, child.tasks_done,
                    rss >> 20)
        self._discard(child, self.grace_s)
        # Its successor boots now (about 0.1 s) while the other children work, and is handed calls last: a call
        # given to it at once would wait for the boot.
        if (successor := self._try_spawn()) is not None:
            self.idle.insert(0, successor)

    def _reap_idle(self, fd: int) -> None:
        """An idle child's sentinel fired (it died) or its pipe closed: drop it; the next call starts another."""
        for child in list(self.idle):
            if fd in (child.conn.fileno(), child.process.sentinel) and not child.process.is_alive():
                logger.warning("python child pid=%d died while idle (exit code %s)", child.pid,
                               child.process.exitcode)
                self.idle.remove(child)
                self._discard(child, 0.0)

    # ------------------------------------------------------------ ending calls early

    def _end_batch(self, batch: Batch, culprit: Call | None, state: TaskState, error: TaskError | None,
                   everyone: bool = False) -> list[AttemptResult]:
        """The child is killed (`culprit` timed out or was cancelled) or died by itself (culprit None: the call
        it was on). What it had sent is kept; the call it was running ends as `state`; the rest run again."""
        child = batch.child
        if child.process.exitcode is None:
            kill_tree(child.pid, grace_s=self.grace_s, own_session=True)
        running = batch.running()
        results = []
        try:   # results and output sent before it died are still in the pipe
            while batch.received < len(batch.calls) and child.conn.poll():
                results += self._reply(batch, unpackb(child.conn.recv_bytes()))
        except (EOFError, OSError):
            pass
        for fd in (child.conn.fileno(), child.process.sentinel):
            self.batches.pop(fd, None)
        if child in self.idle:   # its final reply was in the pipe and released it: it is being discarded
            self.idle.remove(child)
        culprit = culprit or (running[0] if running and child.current.value >= 0 else None)
        again = []
        for call in batch.calls[batch.received:]:
            self.by_key.pop(call.key, None)
            if call is not culprit and not everyone:
                again.append(call.task)
            elif state == TaskState.FAILED:
                died = _died(child)
                results.append(call.result(state, time.monotonic() - batch.sent_at, error=died.error,
                                           exit_code=died.exit_code))
            else:
                results.append(call.result(state, time.monotonic() - batch.sent_at, error=error))
        self._discard(child, self.grace_s)
        if again:
            logger.info("python child pid=%d ended mid-batch: %d calls run again", child.pid, len(again))
            self.requeue(again)
        return results

    def expire(self, now: float) -> list[AttemptResult]:
        """Calls past their deadline: their child is killed, and they end as timed_out."""
        results = []
        for batch in self._busy():
            running = batch.running()
            if running is not None and running[0].timeout_s is not None and now >= running[1] + running[0].timeout_s:
                call = running[0]
                results += self._end_batch(batch, call, TaskState.TIMED_OUT,
                                           timeout_error(call.timeout_s))
        return results

    def next_deadline(self) -> float | None:
        deadlines = [r[1] + r[0].timeout_s for b in self._busy()
                     if (r := b.running()) is not None and r[0].timeout_s is not None]
        return min(deadlines) if deadlines else None

    def kill(self, key: tuple[str, int], reason: str) -> list[AttemptResult]:
        """Cancel a call: an unstarted one is skipped by its child (its result comes back as cancelled), a
        running one ends with its child's tree."""
        call = self.by_key.get(key)
        if call is None or call.batch is None:
            return []
        current = call.batch.child.current.value
        if call.index > current:
            call.cancel_reason = f"cancelled: {reason}"
            call.batch.child.skip[call.index] = 1
            return []
        if call.index < current:   # it has finished; its result is on the way
            return []
        return self._end_batch(call.batch, call, TaskState.CANCELLED, cancel_error(reason))

    def cancel_all(self, reason: str) -> list[AttemptResult]:
        """Stop every call now (the worker is going away): each unreported one ends as cancelled."""
        results = []
        for batch in self._busy():
            error = cancel_error(reason)
            results += self._end_batch(batch, None, TaskState.CANCELLED, error, everyone=True)
        return results

    def close(self) -> None:
        for batch in self._busy():
            for call in batch.calls:
                self.by_key.pop(call.key, None)
            self._discard(batch.child, self.grace_s)
        self.batches.clear()
        for child in self.idle:
            self._unwatch(child)
            child.retire(self.grace_s)
            self._forget(child)
        self.idle = []


def _in_copy(task: dict) -> tuple[str] | tuple[()]:
    """The project copy a call runs in: its folder first on the child's sys.path, and its working directory (the
    child is one of the copy's environment's interpreter, when it has one: PyPools)."""
    copy = copy_of(task)
    return (copy.root,) if copy is not None else ()
