"""The long-lived python child processes that run `python` tasks: the child's side, and the parent's handle.

Children are started with the spawn method (never fork: the worker holds a ZeroMQ context), one
per slot, lazily, and reused across calls; each becomes the leader of its own session on POSIX so
a timeout or cancel kills whatever the callable started, and each dies with the worker (docs/architecture.md,
"When the worker dies"). The callable's `sys.stdout`/`sys.stderr` writes are forwarded to the worker in small
batches, so output up to a kill is kept; output written straight to file descriptors 1 and 2 (C extensions,
`os.system`) is not captured.
"""
from __future__ import annotations

import ctypes
import importlib
import io
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..model import TaskError
from ..protocol import packb, unpackb
from .failures import UNRESOLVED, judged_call
from .proctree import describe_exit, kill_tree
from .pyroot import CallRoot
from .results import exception_error

if TYPE_CHECKING:
    from .pyspawn import Launch

logger = logging.getLogger(__name__)

_FLUSH_INTERVAL_S = 0.05
_FLUSH_BYTES = 16384
MAX_BATCH = 16              # calls handed to a child in one message
REPLY_FLUSH_S = 0.05       # results held back longer than this are sent mid-batch


class CappedBuffer:
    """Keeps the first and the last half of at most `max_bytes` of a stream, counting what was cut.

    The tail is a queue of the chunks as they were read, dropped from the front once the rest covers it: a task
    printing 100 MB costs the worker no copy of it (the thread reading the pipe would hold Python's lock while
    copying, and the worker's loop would wait for it). Small writes are gathered into chunks of about
    `coalesce_bytes`, so a stream of tiny lines does not keep one object per line.
    """

    coalesce_bytes = 1 << 16

    def __init__(self, name: str, max_bytes: int) -> None:
        self.name = name
        self.total = 0
        self.max_bytes = max_bytes
        self._head_cap = max_bytes // 2
        self._tail_cap = max_bytes - self._head_cap
        self._head = bytearray()
        self._tail: deque[bytes | bytearray] = deque()
        self._tail_len = 0

    def write(self, data: bytes) -> None:
        self.total += len(data)
        room = self._head_cap - len(self._head)
        if room > 0:
            self._head += data[:room]
            data = data[room:]
        if data and self._tail_cap:
            small = self.coalesce_bytes
            if len(data) < small and self._tail and isinstance(self._tail[-1], bytearray) \
                    and len(self._tail[-1]) < small:
                self._tail[-1] += data
            else:
                self._tail.append(bytearray(data) if len(data) < small else data)
            self._tail_len += len(data)
            while self._tail_len - len(self._tail[0]) >= self._tail_cap:
                self._tail_len -= len(self._tail.popleft())

    def live_part(self, data: bytes) -> bytes:
        """What of `data`, just written, is still streamed live: the master keeps no more than the cap of live
        output either, so what lies beyond it is not sent (the result carries the head and the tail)."""
        return data[:max(0, self.max_bytes - (self.total - len(data)))]

    def text(self) -> str:
        tail = b"".join(self._tail)[-self._tail_cap:] if self._tail_cap else b""
        cut = self.total - len(self._head) - len(tail)
        if cut <= 0:
            return (bytes(self._head) + tail).decode("utf-8", errors="replace")
        marker = f"\n[... zmqgrid: {cut} bytes of {self.name} cut ...]\n"
        return (bytes(self._head).decode("utf-8", errors="replace") + marker
                + tail.decode("utf-8", errors="replace"))


@dataclass
class CallOutcome:
    """How a call ended when its child died: the error and the child's exit code."""

    status: str
    value: Any = None
    error: TaskError | None = None
    exit_code: int | None = None


class _Child:
    """The worker's handle on one child. `current` (index of the call of the batch being run, -1 before the
    first, len(batch) after the last), `started` (its monotonic start) and `skip` (calls not to run) live in
    shared memory, so the worker sees progress and cancels unstarted calls without a message or a wake-up."""

    def __init__(self, ctx: Any, launch: Launch | None = None) -> None:
        self.conn, child_conn = ctx.Pipe(duplex=True)
        self.current = ctx.RawValue("i", -1)
        self.started = ctx.RawValue("d", 0.0)
        self.skip = ctx.RawArray("b", MAX_BATCH)
        args = (child_conn, self.current, self.started, self.skip)
        if launch is None:   # the worker's own interpreter
            self.process = ctx.Process(target=child_main, args=args, name="zmqgrid-pychild")
            self.process.start()
        else:   # another interpreter: a bootstrap it can unpickle whatever it has installed (pyspawn)
            from .pyspawn import CHILD, child_namespace, interpreter   # here: a child never needs it
            self.process = ctx.Process(target=exec, args=(CHILD, child_namespace(args)), name="zmqgrid-pychild")
            with interpreter(launch):
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
            self.conn.send_bytes(packb(None))
        except OSError as e:
            logger.debug("python child pid=%d gone before retire: %s", self.pid, e)
        self.process.join(timeout=1.0)
        self.discard(grace_s)


def _died(child: _Child, why: str = "") -> CallOutcome:
    child.process.join(timeout=2.0)
    code = child.process.exitcode
    how = "did not exit" if code is None else describe_exit(code)
    message = f"python child pid={child.pid} died during the call: {how}" + (f" ({why})" if why else "")
    return CallOutcome("died", error=TaskError("WorkerChildDied", message), exit_code=code)


# ---- child side -------------------------------------------------------------------------------

class TextSink(io.TextIOBase):
    """A call's `sys.stdout`/`sys.stderr`: a UTF-8 text stream whose writes go to `_put`."""

    @property
    def encoding(self) -> str:
        return "utf-8"

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        self._put(text)
        return len(text)

    def _put(self, text: str) -> None:
        raise NotImplementedError


class _Forwarder(TextSink):
    """A text stream that batches writes and sends them to the worker as ("out", name, text, call index)."""

    def __init__(self, name: str, conn: Any, send_lock: threading.Lock, current: Any) -> None:
        self.name = name
        self._conn = conn
        self._current = current
        self._send_lock = send_lock
        self._lock = threading.Lock()
        self._parts: list[str] = []
        self._size = 0

    def _put(self, text: str) -> None:
        with self._lock:
            self._parts.append(text)
            self._size += len(text)
            if self._size >= _FLUSH_BYTES:
                self._flush_locked()

    def flush(self) -> None:
        with self._lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        # Sent under our lock so a later flush (and the final reply) cannot overtake this batch.
        if self._parts:
            text, self._parts, self._size = "".join(self._parts), [], 0
            with self._send_lock:
                # The main thread flushes after each call, before `current` moves on: the text is that call's.
                self._conn.send_bytes(packb(("out", self.name, text, self._current.value)))


def _resolve(function: str, cache: dict[str, Any]) -> Any:
    fn = cache.get(function)
    if fn is None:
        module_name, _, attr_path = function.partition(":")
        fn = importlib.import_module(module_name)
        for attr in attr_path.split("."):
            fn = getattr(fn, attr)
        cache[function] = fn
    return fn


if os.name == "posix":
    import resource

    _RSS_UNIT = 1 if sys.platform == "darwin" else 1024

    def _rss() -> int:
        """Peak resident memory in bytes: one getrusage call."""
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * _RSS_UNIT
else:
    def _rss() -> int:
        import psutil
        return psutil.Process().memory_info().rss


PR_SET_PDEATHSIG = 1   # linux/prctl.h


def _die_with_parent() -> None:
    """Linux: have the kernel SIGKILL this child when the worker's thread that spawned it (its loop's) ends, however
    the worker died; unlike `_watch_parent`, this needs no GIL, so a call stuck in C code dies too."""
    parent = multiprocessing.parent_process()
    if parent is None or not sys.platform.startswith("linux"):
        return
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
        if prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            return   # refused (not on this kernel): _watch_parent still sees the worker go
    except (OSError, AttributeError):
        return
    if os.getppid() != parent.pid:   # the worker died before the call: no signal will come
        os._exit(70)


def _watch_parent() -> None:
    parent = multiprocessing.parent_process()
    if parent is not None:
        multiprocessing.connection.wait([parent.sentinel])
        # The worker died: never run on as an orphan, nor leave what a call started (it is in our group).
        if os.name == "posix" and os.getpgid(0) == os.getpid():
            os.killpg(os.getpid(), signal.SIGKILL)
        os._exit(70)


class _Replies:
    """Results of a batch, sent together when it ends, or by the flush thread once they wait REPLY_FLUSH_S
    (so a long call does not hold back its batch-mates' results): ("results", [[status, value, duration]...],
    peak rss, final)."""

    def __init__(self, conn: Any, send_lock: threading.Lock) -> None:
        self._conn, self._lock = conn, send_lock
        self._items: list[tuple] = []
        self._since = 0.0

    def add(self, item: tuple) -> None:
        with self._lock:
            if not self._items:
                self._since = time.monotonic()
            self._items.append(item)

    def send(self, final: bool) -> None:
        with self._lock:
            if self._items or final:
                self._conn.send_bytes(_reply(self._items, _rss() if final else 0, final))
                self._items = []

    def flush(self) -> None:
        if self._items and time.monotonic() - self._since >= REPLY_FLUSH_S:
            self.send(final=False)


def child_main(conn: Any, current: Any, started: Any, skip: Any) -> None:
    """Entry point of a pool child: run batches of calls from `conn` until told to stop or the worker goes away."""
    _die_with_parent()
    if os.name == "posix":
        os.setsid()
    threading.Thread(target=_watch_parent, name="zmqgrid-parent-watch", daemon=True).start()
    send_lock = threading.Lock()
    out, err = _Forwarder("stdout", conn, send_lock, current), _Forwarder("stderr", conn, send_lock, current)
    replies = _Replies(conn, send_lock)
    threading.Thread(target=_flush_forever, args=(out, err, replies), name="zmqgrid-flush", daemon=True).start()
    cache: dict[str, Any] = {}
    in_copy = CallRoot()   # a project's call runs in its copy
    # This process runs nothing but calls: its streams are the forwarders for good, not per call.
    sys.stdout, sys.stderr = out, err
    while True:
        try:
            message = unpackb(conn.recv_bytes())
        except (EOFError, OSError):
            return
        if message is None:
            return
        for index, (function, args, kwargs, *project) in enumerate(message[1]):
            if skip[index]:   # cancelled by the worker before it started
                replies.add(("skipped", None, 0.0))
                continue
            root = project[0] if project else None
            # `started` before `current`: a worker that reads `current` first never pairs it with an older start.
            started.value = t0 = time.monotonic()
            current.value = index
            fn = UNRESOLVED
            try:
                in_copy.enter(root, cache)
                fn = _resolve(function, cache)
                value = fn(*args, **kwargs)
            except BaseException as e:  # noqa: B036 - SystemExit from user code must not end the child
                # The pipe carries it as its wire dict: the worker reads it back with TaskError.from_wire.
                status, value = "error", judged_call(exception_error(e), e, fn, args, kwargs).to_wire()
            else:
                status = "ok"
            finally:
                in_copy.leave(root)
            if sys.stdout is not out or sys.stderr is not err:   # a callable swapped them: take them back
                sys.stdout, sys.stderr = out, err
            out.flush()
            err.flush()
            replies.add((status, value, time.monotonic() - t0))
        current.value = len(message[1])
        replies.send(final=True)


def _checked(status: str, value: Any, duration: float) -> tuple:
    """A value msgpack cannot carry becomes that call's error, not a failure of the whole batch's reply."""
    if status == "ok":
        try:
            packb(value)
        except (TypeError, ValueError, OverflowError) as e:
            return ("error", TaskError("TypeError", f"return value of type {type(value).__name__} is not "
                                                    f"msgpack-serialisable: {e}").to_wire(), duration)
    return (status, value, duration)


def _reply(items: list[tuple], rss: int, final: bool) -> bytes:
    try:
        return packb(("results", items, rss, final))
    except (TypeError, ValueError, OverflowError):
        return packb(("results", [_checked(*item) for item in items], rss, final))


def _flush_forever(out: _Forwarder, err: _Forwarder, replies: _Replies) -> None:
    while True:
        time.sleep(_FLUSH_INTERVAL_S)
        try:
            out.flush()
            err.flush()
            replies.flush()
        except (OSError, ValueError):
            return
