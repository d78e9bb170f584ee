"""Task processes yield the CPU: niceness added to a task's process, or to one thread of the worker (POSIX)."""
from __future__ import annotations

import logging
import os
import sys
import threading

logger = logging.getLogger(__name__)

_POSIX = os.name == "posix"


def lower_this_thread(nice: int) -> None:
    """`lower_priority` for the calling thread alone, where a thread has a niceness of its own (Linux)."""
    if sys.platform.startswith("linux"):
        lower_priority(threading.get_native_id(), nice)


def lower_priority(pid: int, nice: int) -> None:
    """Make a task's process `nice` steps nicer than it is (POSIX; its children inherit it). Best effort: a
    task that already ended, or a platform without niceness, just runs as it is."""
    if nice <= 0 or not _POSIX:
        return
    try:
        os.setpriority(os.PRIO_PROCESS, pid, min(19, os.getpriority(os.PRIO_PROCESS, pid) + nice))
    except OSError as e:
        logger.debug("cannot lower the priority of pid=%d: %s", pid, e)
