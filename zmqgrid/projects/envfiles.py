"""An environment's files on disk (zmqgrid.projects.envs): where its interpreter is, the `current` pointer and its
builds, the lock of its key, atomic writes, and the finder that lets a pool child in the environment import the
worker's zmqgrid (and only what that needs)."""
from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..text import printable
from .envkey import PROBE_TIMEOUT_S

logger = logging.getLogger(__name__)

POSIX = os.name == "posix"

# What a python pool child (zmqgrid.worker.pypool) imports from outside the standard library. A venv built here
# sees these, and nothing else of the worker's, through a finder its site-packages installs at start
# (`_zmqgrid_worker.py`, below): zmqgrid ahead of the venv's own packages (the child must speak its worker's
# protocol), msgpack and psutil after them (a project that pins its own version of either keeps it).
WORKER_FIRST = ("zmqgrid",)
WORKER_FALLBACK = ("msgpack", "psutil")
FINDER_MODULE = "_zmqgrid_worker"
FINDER_PTH = "zmqgrid-worker.pth"



def scripts_dir(env_dir: Path) -> Path:
    return env_dir / ("bin" if POSIX else "Scripts")


def env_python(env_dir: Path) -> Path:
    return scripts_dir(env_dir) / ("python" if POSIX else "python.exe")



_FINDER_SOURCE = '''\
"""Written by zmqgrid (zmqgrid/projects/envfiles.py) and loaded by {pth} at start: the modules of the worker that a
python pool child needs, and nothing else of the worker's packages. zmqgrid comes first, {fallback} only when
this environment has none of its own."""
import importlib.machinery
import sys

_PLACES = {places!r}


class _WorkerModules:
    def __init__(self, names):
        self.names = names

    def find_spec(self, name, path=None, target=None):
        if path is not None or name not in self.names:
            return None
        return importlib.machinery.PathFinder.find_spec(name, [_PLACES[name]])


sys.meta_path.insert(0, _WorkerModules({first!r}))
sys.meta_path.append(_WorkerModules({fallback!r}))
'''


def worker_module_places() -> dict[str, str]:
    """The folder each module a pool child needs is imported from in this process (the worker's)."""
    places = {}
    for name in WORKER_FIRST + WORKER_FALLBACK:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            continue
        origin = Path(spec.origin)
        # a package's folder holds __init__.py; its parent is what goes on a path
        places[name] = str(origin.parent.parent if spec.submodule_search_locations else origin.parent)
    return places


def site_packages(env_dir: Path) -> Path:
    found = sorted(env_dir.glob("lib/*/site-packages")) + sorted(env_dir.glob("Lib/site-packages"))
    if not found:
        raise OSError(f"no site-packages folder in {env_dir}")
    return found[0]


def write_finder(env_dir: Path) -> None:
    site = site_packages(env_dir)
    source = _FINDER_SOURCE.format(pth=FINDER_PTH, places=worker_module_places(), first=WORKER_FIRST,
                                   fallback=WORKER_FALLBACK)
    _write_if_changed(site / f"{FINDER_MODULE}.py", source)
    _write_if_changed(site / FINDER_PTH, f"import {FINDER_MODULE}\n")


def _write_if_changed(path: Path, text: str) -> None:
    try:
        if path.read_text(encoding="utf-8") == text:
            return
    except OSError:
        pass
    write_atomic(path, text)


_PROBE = """\
import json, sys
out = {"sys_path": [p for p in sys.path if p], "zmqgrid": None}
try:
    import zmqgrid.worker.pypool
    out["zmqgrid"] = zmqgrid.worker.pypool.__file__
except Exception as e:
    out["error"] = type(e).__name__ + ": " + str(e)
print(json.dumps(out))
"""


def ask_interpreter(python: Path, cwd: Path) -> dict:
    """What `python` imports on its own (-E -s: the worker's PYTHONPATH and user site left out), run from a
    folder that holds no zmqgrid."""
    try:
        done = subprocess.run([str(python), "-E", "-s", "-c", _PROBE], cwd=cwd, capture_output=True, text=True,
                              timeout=PROBE_TIMEOUT_S, stdin=subprocess.DEVNULL)
        probe = json.loads(done.stdout)
    except (OSError, ValueError, subprocess.TimeoutExpired) as e:
        logger.warning("cannot ask %s what it imports: %s", python, e)
        return {}
    if probe.get("zmqgrid") is None:
        logger.warning("zmqgrid cannot be imported with %s: %s", python, printable(probe.get("error"), 300))
    return probe


def read_current(folder: Path) -> str | None:
    try:
        name = (folder / "current").read_text(encoding="utf-8").strip()
    except OSError:
        return None
    # an empty or damaged pointer (a crash before its bytes reached the disk) is no build: build again
    if not re.fullmatch(r"build-\d+", name) or not env_python(folder / name).exists():
        return None
    return name


def read_json(path: Path) -> dict | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def next_build(folder: Path) -> int:
    numbers = [int(p.name[6:]) for p in folder.glob("build-*") if p.name[6:].isdigit()]
    current = read_current(folder)
    if current is not None:
        numbers.append(int(current[6:]))
    return max(numbers, default=0) + 1


def remove_builds(folder: Path, keep: str | None) -> None:
    """Every build but `keep`: those killed mid-way and those a rebuild replaced."""
    for path in folder.glob("build-*"):
        if path.name != keep and path.is_dir():
            shutil.rmtree(path, ignore_errors=True)


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


@contextmanager
def file_lock(folder: Path, wait_s: float) -> Iterator[bool]:
    """Holds `<folder>/lock` (flock on POSIX, msvcrt on Windows), waiting up to `wait_s`; yields False when it
    could not. The lock goes with the process: a builder killed mid-way leaves no lock behind. A lock taken on a
    file that is no longer `<folder>/lock` (a pruner renamed the folder away meanwhile) is let go and the new one
    taken instead, so two callers never both hold "the" lock of a key."""
    deadline = time.monotonic() + wait_s
    while True:
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / "lock", "a+b") as f:
            while not _try_lock(f):
                if time.monotonic() > deadline:
                    yield False
                    return
                time.sleep(0.05)
            if not _still_there(f, folder / "lock"):   # pruned while we waited (envprune): lock the new one
                _unlock(f)
                continue
            try:
                yield True
            finally:
                _unlock(f)
            return


def _still_there(f: object, path: Path) -> bool:
    """Whether the locked file is still the one at `path` (a pruner renames a key's folder away under its lock)."""
    if not POSIX:
        return True   # there a pruner empties the folder and keeps its lock file
    try:
        here = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(f.fileno())
    return (here.st_ino, here.st_dev) == (mine.st_ino, mine.st_dev)


def _try_lock(f: object) -> bool:
    if POSIX:
        import fcntl
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True
    import msvcrt
    try:
        f.seek(0)
        msvcrt.locking(f.fileno(), msvcrt.LK_NBLCK, 1)
    except OSError:
        return False
    return True


def _unlock(f: object) -> None:
    if POSIX:
        import fcntl
        fcntl.flock(f.fileno(), fcntl.LOCK_UN)
    else:
        import msvcrt
        f.seek(0)
        msvcrt.locking(f.fileno(), msvcrt.LK_UNLCK, 1)
