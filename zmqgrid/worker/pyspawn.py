"""Starting a python pool child from another interpreter than the worker's (docs/architecture.md, "A pool per
interpreter"): multiprocessing's spawn, with that interpreter as the executable, that interpreter's own `sys.path`
instead of the worker's, and a bootstrap that any Python can unpickle (the builtin `exec` of a short text) which
finds the worker's zmqgrid, msgpack and psutil before it runs the child's loop.

multiprocessing takes the executable and the child's preparation (its `sys.path`, the parent's `__main__` to import)
from module functions of `multiprocessing.spawn`, for the whole process; they are wrapped here once, so that only a
start inside `interpreter(...)`, on the thread that starts it, gets other ones.
"""
from __future__ import annotations

import multiprocessing.spawn as _spawn
import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from ..projects.envfiles import WORKER_FALLBACK, WORKER_FIRST, worker_module_places

_chosen = threading.local()
_executable, _preparation = _spawn.get_executable, _spawn.get_preparation_data

# What the child (or the probe, zmqgrid.worker.pyenvs) runs first: PLACES (module name -> the folder the worker
# imports it from) is defined before it. zmqgrid comes from the worker ahead of the interpreter's own packages (the
# child must speak its worker's protocol); msgpack and psutil only when the interpreter has none of its own.
FINDER = f'''\
import importlib.machinery
import sys


class _WorkerModules:
    def __init__(self, names):
        self.names = names

    def find_spec(self, name, path=None, target=None):
        if path is not None or name not in self.names or name not in PLACES:
            return None
        return importlib.machinery.PathFinder.find_spec(name, [PLACES[name]])


sys.meta_path.insert(0, _WorkerModules({WORKER_FIRST!r}))
sys.meta_path.append(_WorkerModules({WORKER_FALLBACK!r}))
'''
CHILD = FINDER + '''
from zmqgrid.worker.pypool import child_main
child_main(*ARGS)
'''


@dataclass(frozen=True)
class Launch:
    """How a pool's children start: `python` the interpreter, `sys_path` its own path (asked of it)."""

    python: str
    sys_path: tuple[str, ...]


def _chosen_executable() -> str | bytes:
    default = _executable()
    python = getattr(_chosen, "python", None)
    if python is None:
        return default
    return os.fsencode(python) if isinstance(default, bytes) else python   # as multiprocessing keeps its own


def _chosen_preparation(name: str) -> dict:
    data = _preparation(name)
    sys_path = getattr(_chosen, "sys_path", None)
    if sys_path is not None:
        data["sys_path"] = list(sys_path)
        # the worker's main module (main.py imports the CLI) is nothing the other interpreter could import
        data.pop("init_main_from_path", None)
        data.pop("init_main_from_name", None)
    return data


_spawn.get_executable = _chosen_executable
_spawn.get_preparation_data = _chosen_preparation


@contextmanager
def interpreter(launch: Launch) -> Iterator[None]:
    """A `Process.start()` inside this, on this thread, starts `launch.python` with `launch.sys_path`."""
    if os.name == "posix":   # started now with the worker's own interpreter, not the child's
        from multiprocessing import resource_tracker
        resource_tracker.ensure_running()
    _chosen.python, _chosen.sys_path = launch.python, tuple(launch.sys_path)
    try:
        yield
    finally:
        _chosen.python = _chosen.sys_path = None


def child_namespace(args: Sequence) -> dict:
    """The globals the bootstrap `CHILD` runs with: the child's arguments and where the worker's modules are."""
    return {"__name__": "__zmqgrid_child__", "ARGS": tuple(args), "PLACES": worker_module_places()}
