"""Importable task functions that tests run by dotted path ("tests.tasks:add") in real workers."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil


def noop() -> None:
    return None


def add(a: float, b: float) -> float:
    return a + b


def echo(*args: Any, **kwargs: Any) -> dict:
    """Prints a line on stdout and one on stderr, and returns what it was given."""
    print(f"echo to stdout: {args!r}")
    print(f"echo to stderr: {kwargs!r}", file=sys.stderr)
    return {"args": list(args), "kwargs": kwargs}


def getpid() -> int:
    return os.getpid()


def raise_value_error(message: str = "bad value") -> None:
    raise ValueError(message)


def raise_type_error() -> None:
    """A TypeError from inside a function whose arguments bind: the function's own, retried like any error."""
    return len(5)  # type: ignore[arg-type]


def import_missing() -> None:
    """Resolves (this module imports), then imports at call time a module nobody has."""
    import zmqgrid_no_such_dependency  # noqa: F401


NOT_CALLABLE = 42


def sleep(seconds: float, message: str = "") -> float:
    """Prints `message` first (if any), then sleeps: output before a timeout must be kept."""
    if message:
        print(message, flush=True)
    time.sleep(seconds)
    return seconds


def return_unserialisable() -> Any:
    return object()


def print_bytes(n: int) -> int:
    """Prints n characters of output in 1000-character lines."""
    line = "x" * 999
    for _ in range(n // 1000):
        print(line)
    return n


def spawn_grandchild(pid_file: str, seconds: float = 60.0) -> None:
    """Starts a sleeping grandchild, writes "child_pid grandchild_pid" to pid_file, then sleeps."""
    grandchild = subprocess.Popen([sys.executable, "-c", f"import time; time.sleep({seconds})"])
    tmp = pid_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(f"{os.getpid()} {grandchild.pid}\n")
    os.replace(tmp, pid_file)
    time.sleep(seconds)


def exit_hard(code: int = 3) -> None:
    os._exit(code)


def kill_self() -> None:
    os.kill(os.getpid(), signal.SIGKILL if hasattr(signal, "SIGKILL") else signal.SIGTERM)


def allocate(megabytes: int) -> int:
    """Allocates and keeps `megabytes` MB in this process (so its RSS grows), returns the size."""
    global _hoard
    _hoard = bytearray(megabytes * 1024 * 1024)
    for i in range(0, len(_hoard), 4096):
        _hoard[i] = 1  # touch every page so RSS really grows
    return megabytes


_hoard: bytearray | None = None


def system_exit(code: int = 5) -> None:
    sys.exit(code)


def kill_worker() -> None:
    """A poison task: SIGKILLs the worker that runs it (the pool child's parent), every time."""
    os.kill(os.getppid(), signal.SIGKILL)
    time.sleep(30)   # until it dies with its worker: it must never return a result


def kill_worker_after(seconds: float) -> None:
    """A poison task that kills its worker late: runs `seconds`, then SIGKILLs the worker process among its
    ancestors, or itself when it runs inline in the worker (found by its command line, so it does not depend on how
    many processes stand in between)."""
    import psutil
    time.sleep(seconds)
    me = psutil.Process()
    worker = next(p for p in [me, *me.parents()] if {"--mode", "worker"} <= set(p.cmdline()))
    worker.send_signal(signal.SIGKILL)
    os._exit(1)   # nothing of it outlives its worker


def chatty(lines: int, pause: float) -> int:
    """Prints a numbered line, then pauses, `lines` times: output that arrives while the task runs."""
    for i in range(lines):
        print(f"line {i}", flush=True)
        time.sleep(pause)
    return lines


def always_last(loads: list) -> int:
    """A user load-balancing strategy: always the last eligible worker."""
    return len(loads) - 1


def niceness() -> int:
    return os.nice(0)


def swallow_timeout(seconds: float) -> str:
    """Sleeps, catching anything raised meanwhile (an inline call's timer too), and returns."""
    try:
        time.sleep(seconds)
    except BaseException:  # noqa: B036 - the point: a call that swallows the timeout
        return "swallowed"
    return "slept"


def swallow_once(seconds: float) -> str:
    """Catches the first interruption of a sleep (an inline call's timer), then sleeps again without catching."""
    try:
        time.sleep(seconds)
    except BaseException:  # noqa: B036 - the point: a call that swallows the timeout once, then goes on
        pass
    time.sleep(seconds)
    return "slept twice"


class _Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no text for this one")


def raise_unprintable() -> None:
    raise _Unprintable()


class _BrokenDict(dict):
    def items(self):  # msgpack calls it while packing: user code that raises
        raise RuntimeError("items() is broken")


def return_broken_dict() -> dict:
    return _BrokenDict(a=1)


_grown: list = []


def grow() -> list:
    """Appends to a module-level list and returns that same list (a shared, mutable return value)."""
    _grown.append(len(_grown))
    return _grown


def nested(depth: int) -> list:
    """A list `depth` lists deep: a value the wire schema refuses past its depth bound (32)."""
    value: list = []
    for _ in range(depth - 1):
        value = [value]
    return value


def text(n: int) -> str:
    """A return value of `n` characters."""
    return "x" * n


# A task tree for the tests of a killed worker (tests/faults/test_killed_worker_trees.py). Run in the background by
# the task's process: a child, a shell with a child of its own and a nested shell (grandchildren); each writes its
# pid to PIDS.
TREE = ("sleep 300 & echo $! >> {pids}; "
        "sh -c 'sleep 300 & echo $! >> {pids}; sh -c \"sleep 300\" & echo $! >> {pids}; wait' & echo $! >> {pids}; "
        "echo $$ >> {pids}; wait")
TREE_PIDS = 5


def survivors(workdir: str) -> list[int]:
    """The pids in WORKDIR/pids that still run (a zombie, dead but not reaped, does not)."""
    alive = []
    for pid in {int(p) for p in Path(workdir, "pids").read_text().split()}:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.append(pid)
        except psutil.NoSuchProcess:
            continue
    return sorted(alive)


def tree_once(workdir: str) -> str:
    """First attempt: writes its own pid, starts TREE, and sleeps. A later one (WORKDIR/started exists) says
    whether any process of the first still runs: it must not, or the task ran twice at once."""
    started = Path(workdir, "started")
    if started.exists():
        alive = survivors(workdir)
        if alive:
            raise RuntimeError(f"the first attempt's processes still run: {alive}")
        return "no process of the first attempt runs"
    started.touch()
    pids = Path(workdir, "pids")
    with open(pids, "a") as f:
        f.write(f"{os.getpid()}\n")
    subprocess.Popen(["sh", "-c", TREE.format(pids=pids)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL)
    time.sleep(300)   # the first attempt runs until its worker's death ends it
    return "slept"


def tree_once_command(workdir: str) -> str:
    """tree_once as a shell command: the task's own shell starts TREE itself; a later attempt checks in python."""
    check = f"{sys.executable} -c 'from tests.tasks import tree_once; print(tree_once(\"{workdir}\"))'"
    return f"if [ -e {workdir}/started ]; then exec {check}; fi; touch {workdir}/started; " \
           + TREE.format(pids=f"{workdir}/pids")


def hold_gil(pid_file: str) -> None:
    """Writes its pid, then stays in C code that holds the GIL (a regex backtracking for ages): no other thread of
    this process runs meanwhile."""
    Path(pid_file).write_text(str(os.getpid()))
    re.match(r"(a+)+$", "a" * 64 + "b")
