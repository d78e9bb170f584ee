"""The pool of long-lived python child processes that run `python` tasks.

Children are started with the spawn method (never fork: the worker holds a ZeroMQ context), one
per slot, lazily, and reused across calls; each becomes the leader of its own session on POSIX so
a timeout or cancel kills whatever the callable started. The callable's `sys.stdout`/`sys.stderr`
writes are forwarded to the worker in small batches, so output up to a kill is kept; output written
straight to file descriptors 1 and 2 (C extensions, `os.system`) is not captured.
"""
from __future__ import annotations

import atexit
import importlib
import io
import logging
import multiprocessing
import multiprocessing.connection
import multiprocessing.util  # imported first so our atexit hook runs before its join of children
import os
import signal
import sys
import threading
import time
import traceback
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..protocol import packb, unpackb
from .proctree import kill_tree, kill_trees

logger = logging.getLogger(__name__)

_FLUSH_INTERVAL_S = 0.05
_FLUSH_BYTES = 16384


class CappedBuffer:
    """Keeps the first and the last half of at most `max_bytes` of a stream, counting what was cut."""

    def __init__(self, name: str, max_bytes: int) -> None:
        self.name = name
        self.total = 0
        self._head_cap = max_bytes // 2
        self._tail_cap = max_bytes - self._head_cap
        self._head = bytearray()
        self._tail = bytearray()

    def write(self, data: bytes) -> None:
        self.total += len(data)
        room = self._head_cap - len(self._head)
        if room > 0:
            self._head += data[:room]
            data = data[room:]
        if data:
            self._tail += data
            # Trim lazily so a stream of small writes stays linear.
            if len(self._tail) > 2 * self._tail_cap + 65536:
                del self._tail[: len(self._tail) - self._tail_cap]

    def text(self) -> str:
        tail = self._tail[-self._tail_cap:] if self._tail_cap else b""
        cut = self.total - len(self._head) - len(tail)
        if cut <= 0:
            return (bytes(self._head) + bytes(tail)).decode("utf-8", errors="replace")
        marker = f"\n[... zmqgrid: {cut} bytes of {self.name} cut ...]\n"
        return (bytes(self._head).decode("utf-8", errors="replace") + marker
                + bytes(tail).decode("utf-8", errors="replace"))


@dataclass
class CallOutcome:
    """How one call ended: returned, raised, died, timeout, stopped or start_failed."""

    status: str
    value: Any = None
    error: dict | None = None
    exit_code: int | None = None


class _Child:
    def __init__(self, ctx: Any) -> None:
        self.conn, child_conn = ctx.Pipe(duplex=True)
        self.process = ctx.Process(target=child_main, args=(child_conn,), name="zmqgrid-pychild")
        self.process.start()
        child_conn.close()
        self.pid: int = self.process.pid
        self.tasks_done = 0

    def discard(self, grace_s: float) -> None:
        """Kill the child's whole tree, reap it and close the pipe."""
        if self.process.exitcode is None:
            kill_tree(self.pid, grace_s=grace_s, own_session=True)
        self.process.join(timeout=grace_s + 2.0)
        self.conn.close()

    def retire(self, grace_s: float) -> None:
        """Ask an idle child to exit; kill it if it does not."""
        try:
            self.conn.send(None)
        except OSError as e:
            logger.debug("python child pid=%d gone before retire: %s", self.pid, e)
        self.process.join(timeout=1.0)
        self.discard(grace_s)


class PythonPool:
    """At most `size` reusable spawn children; `call` blocks the calling thread until the call ends."""

    def __init__(self, *, size: int, max_tasks_per_child: int = 1000, max_child_memory_mb: int = 1024,
                 kill_grace_s: float = 3.0) -> None:
        self._ctx = multiprocessing.get_context("spawn")
        self._max_tasks = max_tasks_per_child
        self._max_rss = max_child_memory_mb * 1024 * 1024
        self._grace_s = kill_grace_s
        self._slots = threading.BoundedSemaphore(max(1, size))
        self._lock = threading.Lock()
        self._idle: list[_Child] = []
        self._busy: set[_Child] = set()
        self._closed = False
        ref = weakref.ref(self)

        def close_at_exit() -> None:
            pool = ref()
            if pool is not None:
                pool.close()

        # Non-daemon children (daemons may not start processes of their own) would make
        # multiprocessing's own exit hook join them forever if the worker forgot close().
        self._atexit = close_at_exit
        atexit.register(close_at_exit)

    def pids(self) -> list[int]:
        with self._lock:
            return [c.pid for c in [*self._idle, *self._busy]]

    def call(self, function: str, args: list, kwargs: dict, *, deadline: float | None,
             stop: multiprocessing.connection.Connection,
             on_output: Callable[[str, str], None]) -> CallOutcome:
        """Run `function(*args, **kwargs)` in a child until it ends, `deadline` passes or `stop` is readable."""
        while not self._slots.acquire(timeout=0.05):
            if stop.poll() or self._closed:
                return CallOutcome("stopped")
        try:
            child = self._checkout()
        except (OSError, RuntimeError) as e:
            self._slots.release()
            return CallOutcome("start_failed", error=_error("StartError", f"cannot start python child: {e}"))
        if child is None:
            self._slots.release()
            return CallOutcome("stopped")
        keep = False
        try:
            outcome, keep = self._run_on(child, (function, args, kwargs), deadline, stop, on_output)
            return outcome
        finally:
            with self._lock:
                self._busy.discard(child)
                keep = keep and not self._closed
                if keep:
                    self._idle.append(child)
            if not keep:
                child.discard(self._grace_s)
            self._slots.release()

    def close(self) -> None:
        """Kill every child, idle or busy, with its tree; later calls return 'stopped'."""
        with self._lock:
            self._closed = True
            children, self._idle = [*self._idle, *self._busy], []
        atexit.unregister(self._atexit)
        if children:
            kill_trees([c.pid for c in children], grace_s=self._grace_s, own_session=True)
        for child in children:
            child.process.join(timeout=2.0)
            if child not in self._busy:
                child.conn.close()

    def _checkout(self) -> _Child | None:
        with self._lock:
            if self._closed:
                return None
            while self._idle:
                child = self._idle.pop()
                if child.process.is_alive():
                    self._busy.add(child)
                    return child
                logger.warning("python child pid=%d died while idle (exit code %s); replacing it",
                               child.pid, child.process.exitcode)
                child.discard(0.0)
        child = _Child(self._ctx)  # spawning takes a while: outside the lock
        logger.debug("started python child pid=%d", child.pid)
        with self._lock:
            self._busy.add(child)
            if self._closed:
                self._busy.discard(child)
                child.discard(0.0)
                return None
        return child

    def _run_on(self, child: _Child, call: tuple, deadline: float | None, stop: Any,
                on_output: Callable[[str, str], None]) -> tuple[CallOutcome, bool]:
        try:
            child.conn.send(("call", *call))
        except OSError as e:
            return _died(child, f"cannot send the call: {e}"), False
        while True:
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready = multiprocessing.connection.wait([child.conn, child.process.sentinel, stop], timeout)
            if child.conn in ready:
                try:
                    reply = child.conn.recv()
                except (EOFError, OSError):
                    return _died(child), False
                if reply[0] == "out":
                    on_output(reply[1], reply[2])
                    continue
                child.tasks_done += 1
                return self._finish(child, reply)
            if child.process.sentinel in ready:
                self._drain(child, on_output)
                return _died(child), False
            if stop in ready:
                self._stop(child, on_output)
                return CallOutcome("stopped"), False
            if deadline is not None and time.monotonic() >= deadline:
                self._stop(child, on_output)
                return CallOutcome("timeout"), False

    def _finish(self, child: _Child, reply: tuple) -> tuple[CallOutcome, bool]:
        status, payload, rss = reply[0], reply[1], reply[2]
        keep = child.tasks_done < self._max_tasks and rss <= self._max_rss
        if not keep:
            logger.info("recycling python child pid=%d after %d tasks, rss=%d MB",
                        child.pid, child.tasks_done, rss >> 20)
            child.retire(self._grace_s)
        if status == "ok":
            return CallOutcome("returned", value=unpackb(payload)), keep
        return CallOutcome("raised", error=payload), keep

    def _stop(self, child: _Child, on_output: Callable[[str, str], None]) -> None:
        kill_tree(child.pid, grace_s=self._grace_s, own_session=True)
        self._drain(child, on_output)

    def _drain(self, child: _Child, on_output: Callable[[str, str], None]) -> None:
        # Output the child forwarded before it died still sits in the pipe: keep it.
        try:
            while child.conn.poll():
                reply = child.conn.recv()
                if reply[0] == "out":
                    on_output(reply[1], reply[2])
        except (EOFError, OSError):
            return


def _error(kind: str, message: str, tb: str = "") -> dict:
    return {"type": kind, "message": message, "traceback": tb}


def _died(child: _Child, why: str = "") -> CallOutcome:
    child.process.join(timeout=2.0)
    code = child.process.exitcode
    if code is not None and code < 0:
        try:
            how = f"killed by signal {signal.Signals(-code).name}"
        except ValueError:
            how = f"killed by signal {-code}"
    else:
        how = f"exited with code {code}"
    message = f"python child pid={child.pid} died during the call: {how}" + (f" ({why})" if why else "")
    return CallOutcome("died", error=_error("WorkerChildDied", message), exit_code=code)


# ---- child side -------------------------------------------------------------------------------

class _Forwarder(io.TextIOBase):
    """A text stream that batches writes and sends them to the worker as ("out", name, text)."""

    def __init__(self, name: str, conn: Any, send_lock: threading.Lock) -> None:
        self.name = name
        self._conn = conn
        self._send_lock = send_lock
        self._lock = threading.Lock()
        self._parts: list[str] = []
        self._size = 0

    @property
    def encoding(self) -> str:
        return "utf-8"

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        with self._lock:
            self._parts.append(text)
            self._size += len(text)
            if self._size >= _FLUSH_BYTES:
                self._flush_locked()
        return len(text)

    def flush(self) -> None:
        with self._lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        # Sent under our lock so a later flush (and the final reply) cannot overtake this batch.
        if self._parts:
            text, self._parts, self._size = "".join(self._parts), [], 0
            with self._send_lock:
                self._conn.send(("out", self.name, text))


def _resolve(function: str, cache: dict[str, Any]) -> Any:
    fn = cache.get(function)
    if fn is None:
        module_name, _, attr_path = function.partition(":")
        fn = importlib.import_module(module_name)
        for attr in attr_path.split("."):
            fn = getattr(fn, attr)
        cache[function] = fn
    return fn


_SELF: Any = None


def _rss() -> int:
    """Peak resident memory in bytes: one cheap getrusage call on POSIX (psutil elsewhere)."""
    global _SELF
    if os.name == "posix":
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    if _SELF is None:
        import psutil
        _SELF = psutil.Process()
    return _SELF.memory_info().rss


def _watch_parent() -> None:
    parent = multiprocessing.parent_process()
    if parent is not None:
        multiprocessing.connection.wait([parent.sentinel])
        os._exit(70)  # the worker died: never run on as an orphan


def child_main(conn: Any) -> None:
    """Entry point of a pool child: run calls from `conn` until told to stop or the worker goes away."""
    if os.name == "posix":
        os.setsid()
    threading.Thread(target=_watch_parent, name="zmqgrid-parent-watch", daemon=True).start()
    send_lock = threading.Lock()
    out, err = _Forwarder("stdout", conn, send_lock), _Forwarder("stderr", conn, send_lock)
    threading.Thread(target=_flush_forever, args=(out, err), name="zmqgrid-flush", daemon=True).start()
    cache: dict[str, Any] = {}
    # This process runs nothing but calls: its streams are the forwarders for good, not per call.
    sys.stdout, sys.stderr = out, err
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        _, function, args, kwargs = message
        try:
            value = _resolve(function, cache)(*args, **kwargs)
        except BaseException as e:  # noqa: B036 - SystemExit from user code must not end the child
            # Drop this frame: the user's traceback starts at their callable (or the import).
            tb = "".join(traceback.format_exception(type(e), e, e.__traceback__.tb_next))
            reply: tuple = ("error", _error(type(e).__name__, str(e), tb))
        else:
            reply = _pack(value)
        if sys.stdout is not out or sys.stderr is not err:   # a callable swapped them: take them back
            sys.stdout, sys.stderr = out, err
        out.flush()
        err.flush()
        with send_lock:
            conn.send((*reply, _rss()))


def _pack(value: Any) -> tuple:
    try:
        return ("ok", packb(value))
    except (TypeError, ValueError, OverflowError) as e:
        return ("error", _error("TypeError", f"return value of type {type(value).__name__} is not "
                                             f"msgpack-serialisable: {e}"))


def _flush_forever(*streams: _Forwarder) -> None:
    while True:
        time.sleep(_FLUSH_INTERVAL_S)
        for stream in streams:
            try:
                stream.flush()
            except (OSError, ValueError):
                return
