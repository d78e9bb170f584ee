"""Linux cgroup v2 directories that hold each task attempt's processes, so a kill reaches every one of them.

A process can leave its session (`setsid`) and its parent (a double fork reparents it to init), but not its
cgroup: whatever a task forks is born in the task's cgroup. See docs/architecture.md, "Worker: a task's processes".
"""
from __future__ import annotations

import itertools
import logging
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

logger = logging.getLogger(__name__)

# Run by /bin/sh as `sh -c LAUNCHER <cgroup.procs> <argv...>`: the shell writes its own pid into the run's
# cgroup, then becomes the task (exec keeps the pid and the session), so the task starts inside the cgroup.
LAUNCHER = '{ echo $$ >"$0"; } 2>/dev/null; exec "$@"'
_PREFIX = "zmqgrid-"
_FREE_RUNS = 64   # emptied run cgroups kept for reuse (a worker rarely runs more at once)


def launch_argv(procs_file: str, argv: list[str]) -> list[str]:
    """`argv`, started so that it first joins the cgroup whose `cgroup.procs` is `procs_file`."""
    return ["/bin/sh", "-c", LAUNCHER, procs_file, *argv]


def launch_shell(procs_file: str, command: str) -> list[str]:
    """A shell command that first joins the cgroup: the same one shell, the join put in front on the command's
    first line (so line numbers in its errors stay), saving the launcher's second exec."""
    return ["/bin/sh", "-c", f"{{ echo $$ >{shlex.quote(procs_file)}; }} 2>/dev/null; {command}"]


class RunCgroup:
    """The cgroup of one attempt: its members are read, signalled and killed; it is removed once empty."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.procs_file = str(path / "cgroup.procs")

    def pids(self) -> list[int]:
        try:
            return [int(line) for line in Path(self.procs_file).read_text().split()]
        except (OSError, ValueError):
            return []

    def signal(self, sig: int) -> None:
        # A pid read from cgroup.procs is a member at that moment: there is no older process it could be.
        for pid in self.pids():
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                continue
            except PermissionError as e:
                logger.warning("cannot signal pid=%d of %s: %s", pid, self.path.name, e)

    def kill(self) -> None:
        """SIGKILL every member at once (cgroup.kill, Linux 5.14+), else each member read from cgroup.procs."""
        try:
            (self.path / "cgroup.kill").write_text("1")
        except OSError:
            self.signal(signal.SIGKILL)

    def remove(self) -> bool:
        """Remove the directory; False while a process is still in it."""
        try:
            self.path.rmdir()
            return True
        except FileNotFoundError:
            return True
        except OSError:
            return False


class CgroupTree:
    """The worker's own cgroup directory `zmqgrid-<pid>`, holding one child per attempt (`run-<n>`)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._numbers = itertools.count(1)
        self._lock = threading.Lock()
        self._left: list[RunCgroup] = []   # runs that ended with processes still in them
        # Emptied runs, used again: a read of cgroup.procs costs a third of an rmdir and a mkdir (each a css brought
        # online or offline in the kernel), paid for every shell task.
        self._free: list[RunCgroup] = []

    @classmethod
    def create(cls) -> CgroupTree | None:
        """The tree under this process's own cgroup v2, if it can hold a task; None (said once) if not."""
        if not sys.platform.startswith("linux"):
            return None
        own = _own_cgroup_dir()
        if own is None:
            logger.info("no cgroup v2 hierarchy: task processes are tracked by session and by descendants seen")
            return None
        _remove_stale(own)
        tree = cls(own / f"{_PREFIX}{os.getpid()}")
        try:
            tree.path.mkdir(exist_ok=True)
            usable = tree._probe()
        except OSError as e:
            usable, reason = False, str(e)
        else:
            reason = "moving a process into it failed"
        if not usable:
            tree.close()
            logger.info("cannot use a cgroup under %s (%s): task processes are tracked by session and by "
                        "descendants seen", own, reason)
            return None
        logger.debug("task processes are tracked by cgroups under %s", tree.path)
        return tree

    def new_run(self) -> RunCgroup | None:
        """An empty cgroup for one attempt (None if it cannot be made: the attempt is tracked without one)."""
        with self._lock:
            if self._free:
                return self._free.pop()
            if self._left:
                self._left = [run for run in self._left if not run.remove()]
            run = RunCgroup(self.path / f"run-{next(self._numbers)}")
        try:
            run.path.mkdir()
        except OSError as e:
            logger.warning("cannot create %s: %s", run.path, e)
            return None
        return run

    def release(self, run: RunCgroup) -> None:
        """The attempt ended: its cgroup is kept for the next one when empty, else until what it left running ended
        (then removed)."""
        empty = not run.pids()
        with self._lock:
            if empty and len(self._free) < _FREE_RUNS:
                self._free.append(run)
                return
        if not run.remove():
            with self._lock:
                self._left.append(run)

    def close(self) -> None:
        with self._lock:
            self._left = [run for run in self._left + self._free if not run.remove()]
            self._free = []
            if self._left:
                logger.info("leaving %d task cgroups with processes still running under %s", len(self._left),
                            self.path)
                return
        try:
            self.path.rmdir()
        except OSError as e:
            logger.debug("cannot remove %s: %s", self.path, e)

    def _probe(self) -> bool:
        """Start one short shell through the launcher: usable when it then finds itself among the members."""
        run = self.new_run()
        if run is None:
            return False
        try:
            proc = subprocess.Popen(launch_argv(run.procs_file, ["/bin/sh", "-c", 'cat "$0"', run.procs_file]),
                                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            out, _ = proc.communicate(timeout=10)
            return str(proc.pid) in out.decode(errors="replace").split()
        except (OSError, subprocess.SubprocessError):
            return False
        finally:
            run.remove()


def _own_cgroup_dir() -> Path | None:
    """This process's cgroup v2 directory: its mount (/proc/self/mountinfo) joined with its path (/proc/self/cgroup)."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
        mounts = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return None
    own = next((line[3:] for line in lines if line.startswith("0::")), None)
    for mount in mounts:
        fields = mount.split()
        if "-" not in fields:
            continue
        dash = fields.index("-")
        if dash + 1 < len(fields) and fields[dash + 1] == "cgroup2" and own is not None:
            root, point = fields[3], fields[4]
            if own == root or own.startswith(root.rstrip("/") + "/") or root == "/":
                relative = own[len(root.rstrip("/")):].lstrip("/") if root != "/" else own.lstrip("/")
                path = Path(point) / relative
                return path if path.is_dir() else None
    return None


def _remove_stale(own: Path) -> None:
    """Remove the empty trees of workers no longer alive (a SIGKILLed worker cannot remove its own)."""
    for tree in own.glob(f"{_PREFIX}*"):
        pid = tree.name[len(_PREFIX):]
        if not pid.isdigit() or int(pid) == os.getpid() or Path(f"/proc/{pid}").exists():
            continue
        for run in tree.glob("run-*"):
            RunCgroup(run).remove()   # refused while a process is in it: a live task is never lost
        try:
            tree.rmdir()
        except OSError:
            continue


def missing_program(argv: list[str], env: dict[str, str] | None, cwd: str | None) -> str | None:
    """The error Popen would raise for a program that cannot be found, else None.

    Through the launcher a missing program would be the shell's exit 127; looked up first, it stays a StartError.
    """
    program = argv[0] if argv else ""
    if "/" in program:
        path = os.path.join(cwd or os.getcwd(), program)
        found = os.path.isfile(path) and os.access(path, os.X_OK)
    else:
        found = bool(program) and shutil.which(program, path=(env or os.environ).get("PATH", os.defpath)) is not None
    return None if found else f"[Errno 2] No such file or directory: {program!r}"
