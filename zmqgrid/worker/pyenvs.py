"""A worker's other interpreters (config `python_envs`; docs/architecture.md, "Worker: interpreters per worker"):
each asked once, at the worker's start, for its real version, its own `sys.path`, whether it is a virtualenv and
whether a python pool child can start in it."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import tempfile
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from ..model import PYTHON_ENV_TAG
from ..text import printable
from .pyspawn import FINDER, Launch
from ..projects.envfiles import worker_module_places

logger = logging.getLogger(__name__)
PROBE_TIMEOUT_S = 10.0

_PROBE = FINDER + '''
import json, platform
out = {"version": platform.python_version(), "sys_path": [p for p in sys.path if p], "prefix": sys.prefix,
       "venv": sys.prefix != getattr(sys, "base_prefix", sys.prefix), "error": None}
try:
    import zmqgrid.worker.pypool
except BaseException as e:
    out["error"] = type(e).__name__ + ": " + str(e)
print(json.dumps(out))
'''


@dataclass(frozen=True)
class PythonEnv:
    """One `python_envs` entry as its interpreter answered. `version` is empty when it could not be run at all (it
    is then not advertised); `call_error` says why a pool child cannot start in it (its python calls then fail)."""

    name: str
    executable: str
    version: str = ""
    sys_path: tuple[str, ...] = ()
    venv: str | None = None          # its sys.prefix, when it is a virtualenv
    call_error: str = ""

    @property
    def tag(self) -> str:
        return PYTHON_ENV_TAG + self.name

    @property
    def launch(self) -> Launch:
        return Launch(self.executable, self.sys_path)

    def environ(self, base: Mapping[str, str], own: Mapping[str, str] | None = None) -> dict[str, str]:
        """The worker's environment `base` and the task's `own` variables for a task of this env: the interpreter's
        folder first on PATH (a virtualenv's bin) and VIRTUAL_ENV set when it is one, as `activate` does. The
        worker's PYTHONPATH and PYTHONHOME are left out (they are the worker's, perhaps of another Python); the
        task's own are kept."""
        env = {k: v for k, v in base.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
        env.update(own or {})
        folder = os.path.dirname(self.executable)   # not resolved: a venv's bin/python links out of the venv
        env["PATH"] = os.pathsep.join(p for p in (folder, env.get("PATH", "")) if p)
        if self.venv is not None:
            env["VIRTUAL_ENV"] = self.venv
        return env


def probe(name: str, executable: str) -> PythonEnv:
    """Ask `executable` (-E -s: the worker's PYTHONPATH and user site left out) what it is, from an empty folder."""
    code = f"PLACES = {worker_module_places()!r}\n" + _PROBE
    try:
        with tempfile.TemporaryDirectory(prefix="zmqgrid-probe-") as empty:
            done = subprocess.run([executable, "-E", "-s", "-c", code], cwd=empty, capture_output=True, text=True,
                                  timeout=PROBE_TIMEOUT_S, stdin=subprocess.DEVNULL)
        answer = json.loads(done.stdout.strip().splitlines()[-1])
        version = str(answer["version"])
    except (OSError, ValueError, IndexError, KeyError, TypeError, subprocess.TimeoutExpired) as e:
        why = printable(getattr(e, "strerror", None) or e, 300)
        return PythonEnv(name, executable, call_error=f"python env {name} ({executable}) cannot be run: {why}")
    error = answer.get("error")
    call_error = "" if error is None else (
        f"python env {name} ({executable}, Python {version}) cannot start a python pool child: "
        f"{printable(error, 300)}; it needs Python 3.10 or later, and msgpack and psutil that load in it "
        "(pip install msgpack psutil with that interpreter)")
    return PythonEnv(name, executable, printable(version, 64), tuple(str(p) for p in answer.get("sys_path", ())),
                     str(answer["prefix"]) if answer.get("venv") else None, call_error)


def probe_all(python_envs: Mapping[str, str]) -> dict[str, PythonEnv]:
    """Every entry, asked in parallel; each one that cannot be run is logged as an ERROR (and not advertised)."""
    if not python_envs:
        return {}
    with ThreadPoolExecutor(min(8, len(python_envs)), thread_name_prefix="zmqgrid-pyenv") as pool:
        found = dict(zip(python_envs, pool.map(probe, python_envs, python_envs.values())))
    for env in found.values():
        if not env.version:
            logger.error("%s; its tasks are not taken here", env.call_error)
        elif env.call_error:
            logger.warning("%s; its shell and script tasks run, its python tasks fail", env.call_error)
        else:
            logger.info("python env %s: Python %s at %s", env.name, env.version, env.executable)
    return found


def advertised(envs: Mapping[str, PythonEnv]) -> list[PythonEnv]:
    """The entries that run: their tags go in Register.tags and [name, version, executable] in python_envs."""
    return [env for env in envs.values() if env.version]
