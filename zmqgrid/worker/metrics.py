"""psutil sampling for heartbeats: a static description of the host and cheap periodic metrics."""
from __future__ import annotations

import logging
import os
import platform
import socket
import sys

import psutil

logger = logging.getLogger(__name__)

_MB = 1024 * 1024


def system_info(python_executable: str) -> dict:
    """What a worker tells the master about its host once, at register."""
    uname = platform.uname()
    return {
        "hostname": socket.gethostname(),
        "os": f"{uname.system} {uname.release} {uname.machine}".strip(),
        "python_version": platform.python_version(),
        "python_executable": python_executable or sys.executable,
        "cpu_count": psutil.cpu_count() or 1,
        "memory_total_mb": psutil.virtual_memory().total // _MB,
    }


def _disk_percent() -> float:
    # The root of the working directory's drive: "/" on POSIX, e.g. "C:\\" on Windows.
    root = os.path.abspath(os.sep)
    try:
        return float(psutil.disk_usage(root).percent)
    except OSError as e:
        logger.debug("disk usage of %s unavailable: %s", root, e)
        return 0.0


def sample_metrics() -> dict:
    """Resource usage now; never blocks (the first cpu_percent after start reads 0.0)."""
    memory = psutil.virtual_memory()
    try:
        load_1m, load_5m, load_15m = psutil.getloadavg()
    except (OSError, AttributeError) as e:
        logger.debug("load average unavailable: %s", e)
        load_1m = load_5m = load_15m = 0.0
    return {
        "cpu_percent": float(psutil.cpu_percent(interval=None)),
        "memory_percent": float(memory.percent),
        "disk_percent": _disk_percent(),
        "load_1m": float(load_1m),
        "load_5m": float(load_5m),
        "load_15m": float(load_15m),
        "memory_available_mb": memory.available / _MB,
    }
