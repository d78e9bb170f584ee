"""One task process watched from one thread: its stdout and stderr read, its exit, its deadline and a kill request.

On POSIX a single poll() covers all of them: both pipes, a pidfd (Linux 5.3+) that becomes readable when the process
exits, and a wake pipe that `wake()` writes to. A shell task then costs the worker no thread of its own beyond the
one that waits for it (three more, started and joined for every task, cost more than the fork and exec of a short
task). Where there is no pidfd (macOS, an older kernel), one thread waits for the exit and writes to the wake pipe;
where pipes cannot be polled (Windows), `ThreadedWatch` reads each pipe in a thread of its own.
"""
from __future__ import annotations

import codecs
import logging
import os
import select
import sys
import threading
import time
from collections.abc import Callable
from typing import IO

from .priority import lower_this_thread
from .pypool import CappedBuffer

logger = logging.getLogger(__name__)

Emit = Callable[[str, str], None]   # (stream, text) of live output

PIPE_BYTES = 1 << 20      # a pipe widened for a flood, and the most read at once
_READ_BYTES = 1 << 16     # a read while the output is small (a 1 MB read buffer would be mapped and unmapped each time)
_LOWER_AFTER = 1 << 18    # output read before the reading thread yields the CPU (below: never a syscall for it)
_F_SETPIPE_SZ = 1031      # Linux fcntl; not in the fcntl module before Python 3.10 on every platform
_this_thread = threading.local()


def thread_lowered() -> bool:
    """True once a watch in the calling thread made it yield the CPU as a task does (it cannot take it back)."""
    return getattr(_this_thread, "lowered", False)


class Stream:
    """One pipe of the process and what was read of it: the buffer (capped), the live output's decoder."""

    def __init__(self, pipe: IO[bytes], buffer: CappedBuffer, emit: Emit | None) -> None:
        self.pipe, self.fd, self.buffer, self.emit = pipe, pipe.fileno(), buffer, emit
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace") if emit is not None else None
        self.read_size = _READ_BYTES
        self.open = True

    def take(self, data: bytes) -> None:
        self.buffer.write(data)
        if self.decoder is not None and (live := self.buffer.live_part(data)):
            self.emit(self.buffer.name, self.decoder.decode(live))  # type: ignore[misc]

    def end(self) -> None:
        self.open = False
        if self.decoder is not None:
            self.emit(self.buffer.name, self.decoder.decode(b"", final=True))  # type: ignore[misc]


class PolledWatch:
    """`wait_end` until the process exited, `killed()` or the deadline; `drain` reads the pipes to their end."""

    def __init__(self, pid: int, streams: list[Stream], *, flood_bytes_per_s: float, nice: int) -> None:
        self.pid, self.streams = pid, streams
        self.flood_rate, self.nice = flood_bytes_per_s, nice
        self.exited = False
        self._read_total = 0
        self._paused: dict[int, float] = {}   # fd -> when a flooding stream is read again
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        self._pidfd = _pidfd(pid)
        self._waiter: threading.Thread | None = None
        if self._pidfd is None:   # no pidfd: a thread learns of the exit (without reaping) and wakes the poll
            self._waiter = threading.Thread(target=self._wait_exit, daemon=True, name=f"zmqgrid-exit-{pid}")
            self._waiter.start()

    def wake(self) -> None:
        """From any thread: the poll returns now (a kill was asked for)."""
        try:
            os.write(self._wake_w, b"x")
        except (BlockingIOError, OSError):   # full (woken already) or closed (the watch ended)
            pass

    def wait_end(self, deadline: float | None, killed: Callable[[], bool]) -> str:
        """"exited", "killed" or "deadline", whichever came first; the pipes are read meanwhile."""
        while True:
            if self.exited:
                return "exited"
            if killed():
                return "killed"
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                return "deadline"
            self._poll(None if deadline is None else deadline - now)

    def drain(self, timeout_s: float) -> bool:
        """Read both pipes until they close (True) or `timeout_s` passed (False: something still holds one)."""
        until = time.monotonic() + timeout_s
        while any(s.open for s in self.streams):
            left = until - time.monotonic()
            if left <= 0:
                return False
            self._poll(left)
        return True

    def close(self) -> None:
        """Once the process was reaped. The pipes are closed only when they reached their end: a process outside the
        group may still hold one (it then gets EPIPE from the kernel, not from a closed fd reused by another file)."""
        if self._waiter is not None:   # it returned with the exit: joined before its wake fd is closed
            self._waiter.join(timeout=2.0)
        for fd in (self._wake_r, self._wake_w, self._pidfd):
            if fd is not None:
                os.close(fd)
        self._wake_r = self._wake_w = -1
        self._pidfd = None
        if not any(s.open for s in self.streams):
            for s in self.streams:
                s.pipe.close()

    # -- the poll ---------------------------------------------------------------------------

    def _poll(self, timeout_s: float | None) -> None:
        poller = select.poll()
        poller.register(self._wake_r, select.POLLIN)
        if self._pidfd is not None and not self.exited:
            poller.register(self._pidfd, select.POLLIN)
        now = time.monotonic()
        for s in self.streams:
            resume = self._paused.get(s.fd)
            if resume is not None and resume <= now:
                del self._paused[s.fd]
                resume = None
            if s.open and resume is None:
                poller.register(s.fd, select.POLLIN)
            elif s.open:
                timeout_s = resume - now if timeout_s is None else min(timeout_s, resume - now)
        ms = None if timeout_s is None else max(0, int(timeout_s * 1000) + 1)
        for fd, _ in poller.poll(ms):
            if fd == self._wake_r:
                os.read(self._wake_r, 64)
            elif fd == self._pidfd:
                self.exited = True
            else:
                self._read(next(s for s in self.streams if s.fd == fd))

    def _read(self, s: Stream) -> None:
        try:
            data = os.read(s.fd, s.read_size)
        except OSError as e:
            logger.debug("pid=%d: %s pipe closed: %s", self.pid, s.buffer.name, e)
            data = b""
        if not data:
            s.end()
            return
        if len(data) == s.read_size and s.read_size < PIPE_BYTES:   # a flood: a wider pipe, read in larger pieces
            s.read_size = PIPE_BYTES
            widen(s.fd)
        before, self._read_total = self._read_total, self._read_total + len(data)
        if before < _LOWER_AFTER <= self._read_total:
            # A task printing without pause keeps this thread busy: it copies at the task's own lower priority,
            # so the worker's loop (and the other tasks' results) go first.
            lower_this_thread(self.nice)
            _this_thread.lowered = True
        s.take(data)
        if self.flood_rate and s.buffer.total > s.buffer.max_bytes:
            # Past its cap, what a task prints is mostly cut: it is read no faster than the flood rate, and the
            # task waits on its full pipe meanwhile. Read as it came, a flood cost the worker thousands of small
            # chunks a second (each holding the GIL its loop needs) and the task ran flat out beside the others.
            self._paused[s.fd] = time.monotonic() + len(data) / self.flood_rate

    def _wait_exit(self) -> None:
        try:
            # WNOWAIT: learn of the exit without reaping, so the pid stays safe to signal.
            os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOWAIT)
        except ChildProcessError as e:
            logger.warning("lost track of pid=%d: %s", self.pid, e)
        self.exited = True
        self.wake()


def _pidfd(pid: int) -> int | None:
    if not hasattr(os, "pidfd_open"):
        return None
    try:
        return os.pidfd_open(pid)
    except OSError:   # ENOSYS before Linux 5.3, or a seccomp profile that refuses it
        return None


def widen(fd: int) -> None:
    """A 1 MB pipe (Linux) instead of 64 KB: a task writing a flood of output is read in 16 times fewer reads,
    each taking the worker's GIL from its loop. Best effort."""
    if sys.platform.startswith("linux"):
        try:
            import fcntl
            fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", _F_SETPIPE_SZ), PIPE_BYTES)
        except OSError:   # above /proc/sys/fs/pipe-max-size for an unprivileged user: keep the default
            pass


class ThreadedWatch:
    """PolledWatch's duties where pipes cannot be polled (Windows): a thread per pipe and one for the exit."""

    def __init__(self, proc, streams: list[Stream], *, flood_bytes_per_s: float, nice: int) -> None:
        self.streams, self.flood_rate, self.nice = streams, flood_bytes_per_s, nice
        self._wake = threading.Event()
        self._exited = threading.Event()
        self._threads = [threading.Thread(target=self._pump, args=(s,), daemon=True, name=f"zmqgrid-{s.buffer.name}")
                         for s in streams]
        self._threads.append(threading.Thread(target=self._wait_exit, args=(proc,), daemon=True, name="zmqgrid-exit"))
        for thread in self._threads:
            thread.start()

    def wake(self) -> None:
        self._wake.set()

    def wait_end(self, deadline: float | None, killed: Callable[[], bool]) -> str:
        while True:
            if self._exited.is_set():
                return "exited"
            if killed():
                return "killed"
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return "deadline"
            self._wake.wait(remaining)
            self._wake.clear()

    def drain(self, timeout_s: float) -> bool:
        until = time.monotonic() + timeout_s
        for thread in self._threads[:-1]:
            thread.join(timeout=max(0.0, until - time.monotonic()))
        return not any(s.open for s in self.streams)

    def close(self) -> None:
        self._threads[-1].join(timeout=2.0)
        if not any(s.open for s in self.streams):
            for s in self.streams:
                s.pipe.close()

    def _wait_exit(self, proc) -> None:
        proc.wait()
        self._exited.set()
        self._wake.set()

    def _pump(self, s: Stream) -> None:
        lower_this_thread(self.nice)
        read = getattr(s.pipe, "read1", s.pipe.read)
        while True:   # to EOF whatever the cap: a child blocked on a full pipe would never finish
            try:
                data = read(PIPE_BYTES)
            except (OSError, ValueError):
                data = b""
            if not data:
                s.end()
                return
            s.take(data)
            if self.flood_rate and s.buffer.total > s.buffer.max_bytes:
                time.sleep(len(data) / self.flood_rate)


def watch(proc, streams: list[Stream], *, flood_bytes_per_s: float, nice: int) -> PolledWatch | ThreadedWatch:
    """The watch of a process just started with both pipes: polled where it can be."""
    if hasattr(select, "poll") and os.name == "posix":
        return PolledWatch(proc.pid, streams, flood_bytes_per_s=flood_bytes_per_s, nice=nice)
    return ThreadedWatch(proc, streams, flood_bytes_per_s=flood_bytes_per_s, nice=nice)
