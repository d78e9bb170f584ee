"""Kills what a dead worker's running tasks left: its reaper process, and the sweep at the next start of its device.

Both read the worker's process record (procrecord.py). See docs/architecture.md, "When the worker dies".
Run as `python -m zmqgrid.worker.orphans RECORD` this module is the reaper.
"""
from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import psutil

from ..errors import ConfigError
from .cgroups import RunCgroup
from .proctree import is_gone
from .procrecord import Entry, ProcessRecord, read_record, records_of

logger = logging.getLogger(__name__)

_ROUNDS = 3            # scans of a kill: a child forked while it went on is found by the next
_AGAIN_S = 0.5         # the reaper's second look: a launcher that was joining its cgroup when the worker died
_GONE_WAIT_S = 2.0
_RUN = re.compile(r"zmqgrid-\d+/run-\d+")


def kill_recorded(entries: Iterable[Entry]) -> list[int]:
    """SIGKILL every process the entries name (docs/architecture.md, "What killing an entry means"); the pids hit."""
    entries = list(entries)
    # Only what a worker makes (cgroups.py): a record naming any other cgroup is not acted on.
    cgroups = [RunCgroup(Path(e.cgroup)) for e in entries
               if e.cgroup and _RUN.fullmatch("/".join(Path(e.cgroup).parts[-2:]))]
    sessions = {e.pid: e.create_time for e in entries if e.pid is not None and e.create_time is not None}
    killed: set[int] = set()
    for _ in range(_ROUNDS):
        procs = _session_members(sessions)
        members = _live([pid for group in cgroups for pid in group.pids()])
        if not procs and not members:
            break
        for group in cgroups:
            group.kill()
        for proc in procs:
            try:
                proc.kill()   # psutil compares the create time first: a reused pid is never hit
            except psutil.NoSuchProcess:
                continue
            except psutil.AccessDenied as e:
                logger.warning("cannot kill pid=%d: %s", proc.pid, e)
        killed.update(members, (p.pid for p in procs))
        deadline = time.monotonic() + _GONE_WAIT_S
        while time.monotonic() < deadline and not (all(is_gone(p) for p in procs) and not _live(members)):
            time.sleep(0.02)
    for group in cgroups:
        if group.remove():
            for idle in group.path.parent.glob("run-*"):   # emptied runs it kept for reuse (refused if populated)
                RunCgroup(idle).remove()
            try:   # the dead worker's zmqgrid-<pid>, once its last run is gone
                group.path.parent.rmdir()
            except OSError:
                pass
    return sorted(killed)


def _session_members(sessions: dict[int, float]) -> list[psutil.Process]:
    """Each recorded leader (if it still runs as itself) with its descendants, and every member of its session."""
    if not sessions:
        return []
    found: dict[int, psutil.Process] = {}
    wanted: dict[int, float] = {}
    for pid, create_time in sessions.items():
        try:
            leader = psutil.Process(pid)
            if leader.create_time() != create_time:
                # The pid was reused. The kernel gives no new process a pid that still names a session with
                # members, so nothing of ours is in a session by that number either: the entry names nothing.
                continue
            found[pid] = leader
            for child in leader.children(recursive=True):
                found.setdefault(child.pid, child)
        except psutil.NoSuchProcess:
            pass   # the leader is gone; its session may still have members
        wanted[pid] = create_time
    for proc in psutil.process_iter():
        try:
            sid = os.getsid(proc.pid)
            if sid in wanted and proc.pid not in found and proc.create_time() >= wanted[sid]:
                found[proc.pid] = proc
                for child in proc.children(recursive=True):
                    found.setdefault(child.pid, child)
        except (OSError, psutil.Error):
            continue
    found.pop(os.getpid(), None)   # never this process, whatever a record says
    return [proc for proc in found.values() if not is_gone(proc)]   # a zombie is dead already: not counted


def _live(pids: list[int]) -> list[int]:
    live = []
    for pid in pids:
        try:
            if not is_gone(psutil.Process(pid)):
                live.append(pid)
        except psutil.NoSuchProcess:
            continue
    return live


def sweep_device(state_dir: str | Path, device_id: str) -> list[int]:
    """Kill what the records of `device_id` whose worker no longer runs name, and delete them; the pids hit."""
    killed: list[int] = []
    for path in records_of(state_dir, device_id):
        record = read_record(path)
        if record is not None and (record.owner_running() or record.device_id != device_id):
            continue   # a worker of this device id that still runs (or a file not ours): its own business
        if record is not None:
            hit = kill_recorded(record.entries)
            if hit:
                logger.warning("killed %d processes left running by the previous worker of device=%s (pid=%d): "
                               "pids=%s", len(hit), device_id, record.owner_pid, hit)
            killed += hit
        try:
            path.unlink()
        except FileNotFoundError:
            pass
    return killed


class Reaper:
    """The worker's side of its reaper: a process that waits for the worker's end and then kills what it recorded."""

    def __init__(self, record: Path) -> None:
        read_end, self._write_end = os.pipe()   # both close-on-exec: no task inherits the write end
        package_root = str(Path(__file__).resolve().parents[2])
        # The reaper imports the zmqgrid this worker runs, wherever it was started from.
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH"))
                                                          if p))
        try:
            self.process = subprocess.Popen([sys.executable, "-m", "zmqgrid.worker.orphans", str(record)],
                                            stdin=read_end, stdout=subprocess.DEVNULL, env=env,
                                            start_new_session=True)   # a signal to the worker's group spares it
        except BaseException:
            os.close(self._write_end)
            raise
        finally:
            os.close(read_end)

    def close(self) -> None:
        """The worker ends normally (its record already deleted): let the reaper go and reap it."""
        if self._write_end >= 0:
            os.close(self._write_end)
            self._write_end = -1
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            logger.warning("the reaper pid=%d did not exit", self.process.pid)


class ProcessGuard:
    """At a worker's start: the sweep of its device's old records, then its own record and its reaper."""

    def __init__(self, state_dir: str, device_id: str) -> None:
        try:
            Path(state_dir).mkdir(parents=True, exist_ok=True, mode=0o700)
            sweep_device(state_dir, device_id)
            self.record = ProcessRecord(state_dir, device_id)
        except OSError as e:
            raise ConfigError(f"cannot write the worker's state_dir {state_dir!r}: {e.strerror or e}",
                              "set state_dir (ZMQGRID_STATE_DIR) to a directory this user may write") from e
        try:
            self.reaper = Reaper(self.record.path)
        except OSError:
            self.record.close()
            raise

    def close(self) -> None:
        self.record.close()
        self.reaper.close()


def main(argv: list[str]) -> int:
    """The reaper: wait for end-of-file on stdin (the worker is gone), then kill what its record names."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if len(argv) != 1:
        print("usage: python -m zmqgrid.worker.orphans RECORD (started by a worker, stdin its pipe)", file=sys.stderr)
        return 3
    path = Path(argv[0])
    while os.read(0, 4096):
        pass
    record = read_record(path)
    if record is None:   # the worker stopped normally and deleted it
        return 0
    killed = set(kill_recorded(record.entries))
    time.sleep(_AGAIN_S)
    killed.update(kill_recorded(record.entries))
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    if killed:
        print(f"zmqgrid reaper: worker pid={record.owner_pid} of device {record.device_id} is gone; killed "
              f"{len(killed)} processes of its running tasks: pids={sorted(killed)}", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
