"""Portable kill of a whole process tree: SIGTERM to every member, a grace period, then SIGKILL."""
from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Iterable

import psutil

logger = logging.getLogger(__name__)

_POSIX = os.name == "posix"


def is_gone(proc: psutil.Process) -> bool:
    """True when `proc` no longer runs; a zombie counts as gone (PID 1 of a container may never reap it)."""
    try:
        return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True
    except psutil.AccessDenied:
        return False


def kill_tree(pid: int, *, grace_s: float = 3.0, own_session: bool = False) -> None:
    """Kill `pid` and everything below it; see `kill_trees`."""
    kill_trees([pid], grace_s=grace_s, own_session=own_session)


def kill_trees(pids: Iterable[int], *, grace_s: float = 3.0, own_session: bool = False) -> None:
    """Terminate each process of `pids` with all its descendants, SIGKILL what outlives `grace_s`.

    `own_session=True` says each pid was started as the leader of its own session/process group
    (`start_new_session=True` or `os.setsid()`), so its group is signalled too and members whose
    parent already died (reparented to init, out of reach of `children()`) are still found.
    Descendants are collected before any signal, because a shell that dies first orphans its children.
    The caller keeps the duty to reap its own direct children; this function never waits on them.
    """
    leaders = [pid for pid in pids if pid > 0]
    sessions = _own_sessions(leaders) if own_session else []
    procs = _collect(leaders, sessions)
    if not procs and not sessions:
        return
    _signal_all(procs, sessions, hard=False)
    survivors = _wait_gone(procs, grace_s)
    # Members may have been forked between collection and SIGTERM: look again before the hard kill.
    again = _collect([p.pid for p in survivors if not is_gone(p)], sessions)
    for proc in again:
        if all(proc != p for p in survivors):
            survivors.append(proc)
    if survivors or sessions:
        _signal_all(survivors, sessions, hard=True)
        left = _wait_gone(survivors, 2.0)
        if left:
            logger.warning("processes survived SIGKILL: pids=%s", [p.pid for p in left])


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


def _collect(pids: list[int], sessions: list[int]) -> list[psutil.Process]:
    found: dict[int, psutil.Process] = {}
    for pid in pids:
        try:
            root = psutil.Process(pid)
            found.setdefault(root.pid, root)
            for child in root.children(recursive=True):
                found.setdefault(child.pid, child)
        except psutil.NoSuchProcess:
            continue
        except psutil.AccessDenied as e:
            logger.warning("cannot list children of pid=%d: %s", pid, e)
    if sessions:
        wanted = set(sessions)
        for proc in psutil.process_iter():
            try:
                if proc.pid not in found and os.getsid(proc.pid) in wanted:
                    found[proc.pid] = proc
            except OSError:
                continue
    return list(found.values())


def _signal_all(procs: list[psutil.Process], sessions: list[int], *, hard: bool) -> None:
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


def _wait_gone(procs: list[psutil.Process], timeout_s: float) -> list[psutil.Process]:
    # Polls instead of psutil.wait_procs, which would reap (and so steal the exit status of)
    # the caller's own children.
    deadline = time.monotonic() + timeout_s
    alive = [p for p in procs if not is_gone(p)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.02)
        alive = [p for p in alive if not is_gone(p)]
    return alive
