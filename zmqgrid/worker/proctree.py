"""Portable kill of a whole process tree: SIGTERM to every member, a grace period, then SIGKILL.

`TaskProcesses` is what one shell or script attempt started: its session, its cgroup where there is one
(cgroups.py), else the descendants seen while it ran. See docs/architecture.md, "Worker: a task's processes".
"""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence

import psutil

from .cgroups import RunCgroup

logger = logging.getLogger(__name__)

_POSIX = os.name == "posix"

TRACK_INTERVAL_S = 0.5
"""How often an attempt without a cgroup looks for new descendants (one pass over the process table)."""


class TaskProcesses:
    """Every process of one attempt: the leader's session and tree, its cgroup, and the descendants seen."""

    def __init__(self, leader_pid: int, cgroup: RunCgroup | None) -> None:
        self.leader_pid = leader_pid
        self.cgroup = cgroup
        # psutil.Process keeps the create time it was made with: signalling one whose pid was reused by an
        # unrelated process raises NoSuchProcess instead of hitting it.
        self.seen: dict[int, psutil.Process] = {}

    def observe(self, ppids: dict[int, int]) -> None:
        """Remember every descendant of the leader and of each process seen before, as (pid, create time);
        `ppids` maps each pid of the process table to its parent's."""
        children: dict[int, list[int]] = defaultdict(list)
        for pid, ppid in ppids.items():
            children[ppid].append(pid)
        # A process seen before that ended (or whose pid was reused) is forgotten: the set stays as large as the tree.
        self.seen = {pid: p for pid, p in self.seen.items() if pid in ppids and p.is_running()}
        frontier = [self.leader_pid, *self.seen]
        while frontier:
            for pid in children.get(frontier.pop(), ()):
                if pid in self.seen or pid == self.leader_pid:
                    continue
                try:
                    self.seen[pid] = psutil.Process(pid)
                except psutil.NoSuchProcess:
                    continue
                frontier.append(pid)

    def kill(self, grace_s: float) -> None:
        """SIGTERM to all of them, SIGKILL to what outlives `grace_s`."""
        kill_trees([self.leader_pid], grace_s=grace_s, own_session=True, known=list(self.seen.values()),
                   cgroups=[self.cgroup] if self.cgroup is not None else [])


def is_gone(proc: psutil.Process) -> bool:
    """True when `proc` no longer runs; a zombie counts as gone (PID 1 of a container may never reap it)."""
    try:
        return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True
    except psutil.AccessDenied:
        return False


class DescendantWatch:
    """Looks at the process table every TRACK_INTERVAL_S, once for every attempt that has no cgroup, from one
    thread that runs only while there is such an attempt."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._watched: set[TaskProcesses] = set()
        self._thread: threading.Thread | None = None

    def add(self, procs: TaskProcesses) -> None:
        with self._lock:
            self._watched.add(procs)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, daemon=True, name="zmqgrid-descendants")
                self._thread.start()

    def discard(self, procs: TaskProcesses) -> None:
        with self._lock:
            self._watched.discard(procs)

    def _loop(self) -> None:
        while True:
            time.sleep(TRACK_INTERVAL_S)
            with self._lock:
                watched = list(self._watched)
                if not watched:
                    self._thread = None
                    return
            try:
                ppids = _ppid_map()
                for procs in watched:
                    procs.observe(ppids)
            except Exception:
                logger.exception("looking for the descendants of task processes failed")


def _ppid_map() -> dict[int, int]:
    # psutil's own one-pass map (what Process.children uses), several times cheaper than process_iter
    ppid_map = getattr(psutil, "_ppid_map", None)
    if ppid_map is not None:
        return ppid_map()
    return {p.pid: p.info["ppid"] for p in psutil.process_iter(["ppid"]) if p.info["ppid"] is not None}


def describe_exit(code: int) -> str:
    """A process's exit status for a person: its code, and the signal's name when a signal ended it."""
    if code >= 0:
        return f"exited with code {code}"
    try:
        return f"exited with code {code} (killed by {signal.Signals(-code).name})"
    except ValueError:
        return f"exited with code {code} (killed by signal {-code})"


def kill_tree(pid: int, *, grace_s: float = 3.0, own_session: bool = False) -> None:
    """Kill `pid` and everything below it; see `kill_trees`."""
    kill_trees([pid], grace_s=grace_s, own_session=own_session)


def kill_trees(pids: Iterable[int], *, grace_s: float = 3.0, own_session: bool = False,
               known: Sequence[psutil.Process] = (), cgroups: Sequence[RunCgroup] = ()) -> None:
    """Terminate each process of `pids` with all its descendants, SIGKILL what outlives `grace_s`.

    `known` processes (seen earlier, perhaps since reparented) and every member of `cgroups` go the same way.

    `own_session=True` says each pid was started as the leader of its own session/process group
    (`start_new_session=True` or `os.setsid()`), so its group is signalled too and members whose
    parent already died (reparented to init, out of reach of `children()`) are still found.
    Descendants are collected before any signal, because a shell that dies first orphans its children.
    The caller keeps the duty to reap its own direct children; this function never waits on them.
    """
    leaders = [pid for pid in pids if pid > 0]
    sessions = _own_sessions(leaders) if own_session else []
    procs = _collect(leaders, sessions, known)
    if not procs and not sessions and not cgroups:
        return
    _signal_all(procs, sessions, cgroups, hard=False)
    survivors = _wait_gone(procs, grace_s, cgroups)
    # Members may have been forked between collection and SIGTERM: look again before the hard kill.
    again = _collect([p.pid for p in survivors if not is_gone(p)], sessions, ())
    for proc in again:
        if all(proc != p for p in survivors):
            survivors.append(proc)
    if survivors or sessions or _live_members(cgroups):
        _signal_all(survivors, sessions, cgroups, hard=True)
        left = _wait_gone(survivors, 2.0, cgroups)
        stuck = _live_members(cgroups)
        if left or stuck:
            logger.warning("processes survived SIGKILL: pids=%s", sorted({p.pid for p in left} | set(stuck)))


def _own_sessions(pids: list[int]) -> list[int]:
    if not _POSIX:
        return []
    mine = os.getsid(0)
    sessions = []
    for pid in pids:
        try:
            sid = os.getsid(pid)
        except OSError:
            continue
        # Only a session the pid leads: never signal the worker's own session by mistake.
        if sid == pid and sid != mine:
            sessions.append(sid)
    return sessions


def _collect(pids: list[int], sessions: list[int], known: Sequence[psutil.Process]) -> list[psutil.Process]:
    found: dict[int, psutil.Process] = {}
    roots: list[psutil.Process] = []
    for proc in known:
        try:
            if proc.is_running():   # compares the create time: a pid since reused by another process is left alone
                roots.append(proc)
        except psutil.NoSuchProcess:
            continue
    for pid in pids:
        try:
            roots.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            continue
    for root in roots:
        try:
            found.setdefault(root.pid, root)
            for child in root.children(recursive=True):
                found.setdefault(child.pid, child)
        except psutil.NoSuchProcess:
            continue
        except psutil.AccessDenied as e:
            logger.warning("cannot list children of pid=%d: %s", root.pid, e)
    if sessions:
        wanted = set(sessions)
        for proc in psutil.process_iter():
            try:
                if proc.pid not in found and os.getsid(proc.pid) in wanted:
                    found[proc.pid] = proc
            except OSError:
                continue
    return list(found.values())


def _signal_all(procs: list[psutil.Process], sessions: list[int], cgroups: Sequence[RunCgroup], *,
                hard: bool) -> None:
    for group in cgroups:
        if hard:
            group.kill()
        else:
            group.signal(signal.SIGTERM)
    if _POSIX:
        sig = signal.SIGKILL if hard else signal.SIGTERM
        for sid in sessions:
            try:
                os.killpg(sid, sig)
            except ProcessLookupError:
                continue  # the group already emptied
            except PermissionError as e:
                logger.warning("cannot signal process group %d: %s", sid, e)
    for proc in procs:
        try:
            # psutil checks the create time first, so a reused pid is never hit.
            if hard:
                proc.kill()
            else:
                proc.terminate()
        except psutil.NoSuchProcess:
            continue
        except psutil.AccessDenied as e:
            logger.warning("cannot signal pid=%d: %s", proc.pid, e)


def _wait_gone(procs: list[psutil.Process], timeout_s: float,
               cgroups: Sequence[RunCgroup] = ()) -> list[psutil.Process]:
    # Polls instead of psutil.wait_procs, which would reap (and so steal the exit status of)
    # the caller's own children.
    deadline = time.monotonic() + timeout_s
    alive = [p for p in procs if not is_gone(p)]
    while (alive or _live_members(cgroups)) and time.monotonic() < deadline:
        time.sleep(0.02)
        alive = [p for p in alive if not is_gone(p)]
    return alive


def _live_members(cgroups: Sequence[RunCgroup]) -> list[int]:
    # A zombie may stay listed until its parent reaps it (the leader is reaped only after the kill): gone.
    live = []
    for group in cgroups:
        for pid in group.pids():
            try:
                if not is_gone(psutil.Process(pid)):
                    live.append(pid)
            except psutil.NoSuchProcess:
                continue
    return live


def end_process(proc: subprocess.Popen, grace_s: float = 10.0) -> None:
    """End one child this process started (a gateway, a browser): SIGTERM, up to `grace_s` to exit, then SIGKILL.
    Its own children are its to end."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
