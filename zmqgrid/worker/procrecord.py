"""The file where a worker notes the processes of its running tasks, so that what outlives the worker can be found.

One file per worker process, `<state_dir>/<device_id>@<pid>.procs`; the reaper and the next start of the same device
read it (orphans.py). See docs/architecture.md, "When the worker dies".
"""
from __future__ import annotations

import glob
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import psutil

logger = logging.getLogger(__name__)

SUFFIX = ".procs"
MAGIC = "zmqgrid-procs 1"
_COMPACT_LINES = 64   # rewritten once past this many lines and four times the live entries


@dataclass(frozen=True)
class Entry:
    """The processes of one attempt or pool child: a cgroup's members, or a session led by (pid, create time)."""

    cgroup: str | None = None
    pid: int | None = None
    create_time: float | None = None


@dataclass
class Record:
    """A record as read back: its owner (a worker process) and the entries still open in it."""

    path: Path
    owner_pid: int
    owner_create_time: float
    device_id: str
    entries: list[Entry] = field(default_factory=list)

    def owner_running(self) -> bool:
        """True while the worker that wrote it runs (its pid, with the same create time)."""
        return is_running(self.owner_pid, self.owner_create_time)


def is_running(pid: int, create_time: float) -> bool:
    """True while process `pid` with that create time runs (a zombie, dead but not yet reaped, does not)."""
    try:
        proc = psutil.Process(pid)
        return proc.create_time() == create_time and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True   # someone's process by that pid and time: never taken as gone


def create_time_of(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def record_path(state_dir: str | Path, device_id: str, pid: int) -> Path:
    # '@' is in no device id (fields.ID_PATTERN), so `<device_id>@*` never matches another device's files.
    return Path(state_dir) / f"{device_id}@{pid}{SUFFIX}"


def records_of(state_dir: str | Path, device_id: str) -> list[Path]:
    return sorted(Path(state_dir).glob(f"{glob.escape(device_id)}@*{SUFFIX}"))


def read_record(path: Path) -> Record | None:
    """The record at `path`, with its open entries; None if it is gone or has no valid header."""
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        return None
    if not lines:
        return None
    header = lines[0].split(" ")
    if " ".join(header[:2]) != MAGIC or len(header) != 5:
        return None
    try:
        record = Record(path, int(header[2]), float(header[3]), header[4])
    except ValueError:
        return None
    entries: dict[str, Entry] = {}
    for line in lines[1:]:
        # A line that does not parse (a torn write after a power cut) is skipped: the others still count.
        parts = line.split(" ", 2)
        try:
            if parts[0].startswith("+") and parts[1] == "cgroup":
                entries[parts[0][1:]] = Entry(cgroup=parts[2])
            elif parts[0].startswith("+") and parts[1] == "session":
                pid, create_time = parts[2].split(" ")
                entries[parts[0][1:]] = Entry(pid=int(pid), create_time=float(create_time))
            elif parts[0].startswith("-"):
                entries.pop(parts[0][1:], None)
        except (IndexError, ValueError):
            continue
    record.entries = list(entries.values())
    return record


class ProcessRecord:
    """This worker's record: `add_*` when a task's processes begin, `remove` once they ended; safe from any thread.

    Lines are appended with one os.write each and never fsynced: a killed process loses none of them (they are in
    the page cache), and the events that lose unsynced writes (a power cut, an OS crash) end the processes too.
    """

    def __init__(self, state_dir: str | Path, device_id: str) -> None:
        self.path = path = record_path(state_dir, device_id, os.getpid())
        self._lock = threading.Lock()
        self._numbers = 0
        self._live: dict[int, str] = {}   # entry number -> its line
        self._lines = 0
        me = psutil.Process()
        self._header = f"{MAGIC} {me.pid} {me.create_time()!r} {device_id}\n"
        self._fd = self._write_new(path, self._header)

    def add_cgroup(self, path: str) -> int:
        """Before the attempt's process is started: everything in cgroup `path` is the attempt's."""
        return self._add(f"cgroup {path}")

    def add_session(self, pid: int) -> int | None:
        """Just after it started: the session led by `pid` (None when it is already gone: nothing to record)."""
        create_time = create_time_of(pid)
        return None if create_time is None else self._add(f"session {pid} {create_time!r}")

    def remove(self, number: int | None) -> None:
        """Entry `number` ended: its processes were killed or exited."""
        if number is None:
            return
        with self._lock:
            if self._live.pop(number, None) is None:
                return
            self._append(f"-{number}\n")
            if self._lines > _COMPACT_LINES and self._lines > 4 * len(self._live):
                self._compact()

    def close(self) -> None:
        """The worker stopped its attempts: the record goes (its reaper then finds nothing to do)."""
        with self._lock:
            if self._fd < 0:
                return
            os.close(self._fd)
            self._fd = -1
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass

    def _add(self, what: str) -> int:
        with self._lock:
            self._numbers += 1
            line = f"+{self._numbers} {what}\n"
            self._live[self._numbers] = line
            self._append(line)
            return self._numbers

    def _append(self, line: str) -> None:
        if self._fd < 0:
            return
        try:
            os.write(self._fd, line.encode())
            self._lines += 1
        except OSError as e:   # a full disk: the attempt runs on, unrecorded, and we say so
            logger.warning("cannot write the process record %s: %s", self.path, e)

    def _compact(self) -> None:
        text = self._header + "".join(self._live.values())
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        try:
            fd = self._write_new(tmp, text)
            os.replace(tmp, self.path)
        except OSError as e:
            logger.warning("cannot rewrite the process record %s: %s", self.path, e)
            return
        os.close(self._fd)
        self._fd = fd
        self._lines = len(self._live)

    @staticmethod
    def _write_new(path: Path, text: str) -> int:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND | getattr(os, "O_CLOEXEC", 0), 0o600)
        try:
            os.write(fd, text.encode())
        except OSError:
            os.close(fd)
            raise
        return fd
