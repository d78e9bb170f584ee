"""Child processes of a benchmark run: each logged to a file, in a session of its own, and every one stopped by its
PID at the end (SIGTERM, then SIGKILL, then whatever it left behind), also on an error, Ctrl-C or the deadline."""
from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import psutil

from tests.helpers import REPO

STARTED: list[subprocess.Popen] = []   # every child still to stop, in the order started


def clean_env(repo: Path = REPO, **settings: str) -> dict[str, str]:
    """This process's environment without any ZMQGRID_* variable (nothing of the caller's shell leaks into a
    measurement), `repo` first on PYTHONPATH (the children run that checkout's zmqgrid), plus `settings`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZMQGRID_")}
    env["PYTHONPATH"] = str(repo) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.update(settings)
    return env


def free_port_block(count: int = 3) -> int:
    """A port p with p..p+count-1 free on 127.0.0.1 (the master binds port, port+1 and port+2), p chosen by the
    kernel. Not the test harness's picker: its slices start at the same port in every process, so a tool run beside
    a test suite on the same machine would race the suite's masters for their ports (and could query one of them)."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base + count > 65535:
            continue
        try:
            for p in range(base, base + count):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
    raise RuntimeError(f"no block of {count} free ports on 127.0.0.1")


def spawn(argv: list[str], *, cwd: Path, env: dict, log: Path) -> subprocess.Popen:
    """Start a child whose output goes to `log`; it is stopped by stop_all() unless stopped before."""
    with open(log, "ab") as out:
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    STARTED.append(proc)
    return proc


def adopt(proc: subprocess.Popen) -> subprocess.Popen:
    """Have stop_all() stop a child started elsewhere (a cluster's master and workers)."""
    STARTED.append(proc)
    return proc


def descendants(pid: int) -> list[int]:
    try:
        return [c.pid for c in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def stop_process(proc: subprocess.Popen, grace_s: float = 10.0) -> None:
    """SIGTERM one child by PID, wait, SIGKILL it if needed, then SIGKILL whatever it left behind."""
    kids = descendants(proc.pid) if proc.poll() is None else []   # a reaped child's PID may be another's now
    if proc.poll() is None:
        try:
            proc.terminate()
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
        except ProcessLookupError:
            pass
    for kid in kids:
        try:
            p = psutil.Process(kid)
            try:
                p.wait(2)
            except psutil.TimeoutExpired:
                p.kill()
        except psutil.NoSuchProcess:
            pass
    forget(proc)


def forget(proc: subprocess.Popen) -> None:
    """Stopped (or waited for) by its owner: stop_all() leaves it alone."""
    if proc in STARTED:
        STARTED.remove(proc)


def stop_all() -> None:
    while STARTED:
        stop_process(STARTED.pop())


def tail(path: Path, n: int = 1500) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return "(no output)"
