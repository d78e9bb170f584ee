"""Python tasks driven from the worker's own poll loop: one long-lived spawn child per slot, no thread per call.

The children are pypool's (same `child_main`, same pipe protocol, same output capture); what differs is who
waits: the worker's poller watches each child's pipe and death sentinel, so a no-op call costs two pipe
messages and no thread, lock or selector of its own. Timeouts and kills are enforced here, on the monotonic
clock, by killing the child's whole session; the next call gets a fresh child.
"""
from __future__ import annotations

import logging
import multiprocessing
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from ..protocol import packb, unpackb
from .pypool import CappedBuffer, _Child, _died, _error
from .proctree import kill_tree

logger = logging.getLogger(__name__)
OutputCallback = Callable[[str, str], None]


@dataclass
class _Call:
    task: dict
    child: _Child
    deadline: float | None
    timeout_s: float | None
    on_output: OutputCallback | None
    out: CappedBuffer
    err: CappedBuffer
    started_at: float = field(default_factory=time.time)
    t0: float = field(default_factory=time.monotonic)

    @property
    def key(self) -> tuple[str, int]:
        return self.task["id"], self.task["attempt"]

    def result(self, state: str, *, value: Any = None, error: dict | None = None,
               exit_code: int | None = None) -> dict:
        return {"id": self.task["id"], "attempt": self.task["attempt"], "state": state, "exit_code": exit_code,
                "value": value, "error": error, "stdout": self.out.text(), "stderr": self.err.text(),
                "started_at": self.started_at, "finished_at": time.time(), "duration_s": time.monotonic() - self.t0}


class PySlots:
    """`start` hands a call to an idle child; `handle(fd)` and `expire(now)` return finished result dicts."""

    def __init__(self, *, size: int, max_output_bytes: int, default_timeout_s: float | None,
                 watch: Callable[[int], None], unwatch: Callable[[int], None], kill_grace_s: float = 3.0,
                 max_tasks_per_child: int = 10_000, max_child_memory_mb: int = 1024) -> None:
        self.ctx = multiprocessing.get_context("spawn")
        self.size, self.max_output_bytes, self.default_timeout_s = size, max_output_bytes, default_timeout_s
        self.watch, self.unwatch = watch, unwatch
        self.grace_s, self.max_tasks, self.max_rss = kill_grace_s, max_tasks_per_child, max_child_memory_mb << 20
        self.idle: list[_Child] = []
        self.calls: dict[int, _Call] = {}        # fd (pipe or sentinel) -> call in progress
        self.watched: set[int] = set()           # fds of live children, registered with the worker's poller
        self.by_key: dict[tuple[str, int], _Call] = {}

    def pids(self) -> list[int]:
        return [c.pid for c in self.idle] + [c.child.pid for c in self.by_key.values()]

    def prestart(self) -> None:
        """Start every child now, so the first tasks do not wait for an interpreter to boot."""
        while len(self.idle) + len(self.by_key) < self.size:
            self.idle.append(self._spawn())

    def _spawn(self) -> _Child:
        child = _Child(self.ctx)
        # Watched for its whole life, not per call: (un)registering with the poller costs more than a call.
        for fd in (child.conn.fileno(), child.process.sentinel):
            self.watched.add(fd)
            self.watch(fd)
        return child

    def _discard(self, child: _Child, grace_s: float) -> None:
        for fd in (child.conn.fileno(), child.process.sentinel):
            if fd in self.watched:
                self.watched.discard(fd)
                self.unwatch(fd)
        child.discard(grace_s)

    def start(self, task: dict, on_output: OutputCallback | None = None) -> dict | None:
        """Begin a call; returns a result dict at once only if it could not start."""
        timeout = task.get("timeout")
        timeout_s = self.default_timeout_s if timeout is None else float(timeout)
        out, err = CappedBuffer("stdout", self.max_output_bytes), CappedBuffer("stderr", self.max_output_bytes)
        child = self._checkout()
        call = _Call(task, child, None, timeout_s, on_output, out, err)
        call.deadline = None if timeout_s is None else call.t0 + timeout_s
        if child is None:
            return call.result("failed", error=_error("StartError", "cannot start a python child process"))
        try:
            child.conn.send_bytes(packb(("call", task["function"], task.get("args") or [], task.get("kwargs") or {})))
        except OSError as e:
            self._discard(child, 0.0)
            return call.result("failed", error=_error("WorkerChildDied", f"cannot send the call: {e}"))
        self.by_key[call.key] = call
        self.calls[child.conn.fileno()] = self.calls[child.process.sentinel] = call
        return None

    def _checkout(self) -> _Child | None:
        while self.idle:
            child = self.idle.pop()
            if child.process.is_alive():
                return child
            logger.warning("python child pid=%d died while idle (exit code %s)", child.pid, child.process.exitcode)
            self._discard(child, 0.0)
        try:
            return self._spawn()
        except (OSError, RuntimeError) as e:
            logger.error("cannot start a python child: %s", e)
            return None

    def _release(self, call: _Call, keep: bool) -> None:
        for fd in (call.child.conn.fileno(), call.child.process.sentinel):
            self.calls.pop(fd, None)
        self.by_key.pop(call.key, None)
        if keep:
            self.idle.append(call.child)
        else:
            self._discard(call.child, self.grace_s)

    def handle(self, fd: int) -> dict | None:
        """The child's pipe or death sentinel is readable: output, the call's end, or the child's death."""
        call = self.calls.get(fd)
        if call is None:
            self._reap_idle(fd)
            return None
        if fd == call.child.conn.fileno():
            try:
                # One message per readable event: the poller reports the pipe again if more is waiting, and
                # Connection.poll() would build a selector per call.
                reply = unpackb(call.child.conn.recv_bytes())
            except (EOFError, OSError):
                reply = None
            if reply is not None:
                if reply[0] == "out":
                    self._output(call, reply[1], reply[2])
                    return None
                return self._finish(call, reply)
        if not call.child.process.is_alive() or fd == call.child.process.sentinel:
            self._release(call, keep=False)
            died = _died(call.child)
            return call.result("failed", error=died.error, exit_code=died.exit_code)
        return None

    def _reap_idle(self, fd: int) -> None:
        """An idle child's sentinel fired (it died) or its pipe closed: drop it; the next call starts another."""
        for child in list(self.idle):
            if fd in (child.conn.fileno(), child.process.sentinel) and not child.process.is_alive():
                logger.warning("python child pid=%d died while idle (exit code %s)", child.pid,
                               child.process.exitcode)
                self.idle.remove(child)
                self._discard(child, 0.0)

    def _output(self, call: _Call, stream: str, text: str) -> None:
        (call.out if stream == "stdout" else call.err).write(text.encode("utf-8", errors="replace"))
        if call.on_output is not None and text:
            try:
                call.on_output(stream, text)
            except Exception:
                logger.exception("output callback failed task=%s", call.task["id"])

    def _finish(self, call: _Call, reply: list) -> dict:
        status, value, rss = reply
        call.child.tasks_done += 1
        keep = call.child.tasks_done < self.max_tasks and rss <= self.max_rss
        if not keep:
            logger.info("recycling python child pid=%d after %d tasks, rss=%d MB", call.child.pid,
                        call.child.tasks_done, rss >> 20)
        self._release(call, keep)
        if status != "ok":
            return call.result("failed", error=value)
        return call.result("done", value=value)

    def _stop(self, call: _Call, state: str, error: dict) -> dict:
        kill_tree(call.child.pid, grace_s=self.grace_s, own_session=True)
        try:   # output the child sent before it died is still in the pipe: keep it
            while call.child.conn.poll():
                reply = unpackb(call.child.conn.recv_bytes())
                if reply[0] == "out":
                    self._output(call, reply[1], reply[2])
        except (EOFError, OSError):
            pass
        self._release(call, keep=False)
        return call.result(state, error=error)

    def expire(self, now: float) -> list[dict]:
        """Calls past their deadline: their child is killed, and they end as timed_out."""
        return [self._stop(c, "timed_out", _error("Timeout", f"exceeded timeout of {c.timeout_s:g} s"))
                for c in list(self.by_key.values()) if c.deadline is not None and now >= c.deadline]

    def next_deadline(self) -> float | None:
        deadlines = [c.deadline for c in self.by_key.values() if c.deadline is not None]
        return min(deadlines) if deadlines else None

    def kill(self, key: tuple[str, int], reason: str) -> dict | None:
        call = self.by_key.get(key)
        if call is None:
            return None
        return self._stop(call, "cancelled", _error("Cancelled", f"cancelled: {reason}"))

    def close(self) -> None:
        for call in list(self.by_key.values()):
            self._stop(call, "cancelled", _error("Cancelled", "cancelled: the worker is shutting down"))
        for child in self.idle:
            for fd in (child.conn.fileno(), child.process.sentinel):
                if fd in self.watched:
                    self.watched.discard(fd)
                    self.unwatch(fd)
            child.retire(self.grace_s)
        self.idle = []
