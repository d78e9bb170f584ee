"""The Python environments of projects on a worker (docs/architecture.md, Projects, "The worker's cache and
environments"): a virtualenv per (requirements, interpreter), built once with uv or venv + pip and shared by every
version of every project with the same requirements.

Layout under `root` (the worker's `<state_dir>/envs/`), one folder per key `<16 hex>-<interpreter tag>`:

    <key>/lock          held (flock / msvcrt) by whoever builds or reads this key's state
    <key>/current       the name of the ready build, replaced atomically when a build ends well
    <key>/build-<n>/    a virtualenv; only the one `current` names is ever used
    <key>/build.log     the installer's output of the last build
    <key>/failed.json   the last build's failure and the copy it was built for
    <key>/installer.json  the pid and start time of the installer step running now
    <key>/used          its mtime: when a worker last used this environment (zmqgrid.projects.envprune)

A build happens at its final path (a venv is not relocatable: console scripts such as `bin/scrapy` name the
interpreter by absolute path) and is published by replacing `current`; a build killed mid-way is a `build-<n>` that
`current` never names, deleted by the next build of its key. A rebuild publishes a new `build-<n+1>` beside the old
one, so tasks still running in the old one are not pulled from under; the next build of that key deletes it.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..text import printable
from .envfiles import (ask_interpreter, env_python, file_lock, next_build, read_current, read_json, remove_builds,
                       scripts_dir, write_atomic, write_finder)
from .envkey import REQUIREMENTS, Interpreter, requirements_key
from .envprune import is_key, mark_used
from .installer import (INSTALLER_RECORD, StepFailed, end_leftover_installer, find_uv, installer_environ, run_step,
                        tail_of)

logger = logging.getLogger(__name__)

INSTALLERS = ("auto", "uv", "pip")
MAX_REMEMBERED_COPIES = 4096



@dataclass(frozen=True)
class EnvResult:
    """Where a copy's tasks run, or why they cannot.

    `python` is the interpreter to start `python` pool children and `script` tasks with; `env_dir` the virtualenv
    (None when the copy has no requirements.txt: `python` is then the interpreter the worker was given).
    `zmqgrid_importable` says a pool child can start there (`import zmqgrid.worker.pypool` succeeded with that
    interpreter's own `sys.path`, which `sys_path` holds: multiprocessing's spawn gives a child its parent's
    sys.path, so a child started from another interpreter must be handed this one instead).
    On failure `ok` is False, `reason` is one line and `output` the installer's last lines (sanitised, bounded);
    `remembered` says it is an earlier build's failure, not tried again (`rebuild=True` tries again).
    """

    ok: bool
    python: Path | None = None
    env_dir: Path | None = None
    key: str | None = None
    zmqgrid_importable: bool = False
    sys_path: tuple[str, ...] = ()
    built: bool = False
    remembered: bool = False
    reason: str = ""
    output: str = ""
    build_s: float = 0.0

    def environ(self, base: Mapping[str, str]) -> dict[str, str]:
        """`base` with this environment activated, for `shell` and `script` tasks: its scripts folder first on
        PATH and VIRTUAL_ENV set, as `activate` does (PYTHONHOME dropped). `base` unchanged without a venv."""
        env = dict(base)
        if self.env_dir is None:
            return env
        env["VIRTUAL_ENV"] = str(self.env_dir)
        env["PATH"] = os.pathsep.join(p for p in (str(scripts_dir(self.env_dir)), base.get("PATH", "")) if p)
        env.pop("PYTHONHOME", None)
        return env

    def error_text(self) -> str:
        """The reason and the installer's last lines, as a failed task's error message shows them."""
        return f"{self.reason}\n{self.output}" if self.output else self.reason


@dataclass
class _Key:
    name: str
    folder: Path
    ready: EnvResult | None = None
    threads: threading.Lock = field(default_factory=threading.Lock)


class Environments:
    """The environments of one worker for one interpreter; `for_copy` is safe from several threads and processes.

    `installer`: "auto" (uv when `find_uv()` finds it, else venv + pip), "uv" or "pip". `install_args` go to the
    install step as they are (index settings from the worker's config: `--index-url URL`, `--no-index`,
    `--find-links DIR`; pip and uv both take these); the installers also read their own environment variables
    (PIP_INDEX_URL, UV_INDEX_URL, ...) and pip its pip.conf. `timeout_s` bounds one whole build; past it the
    installer's process tree is killed and the build fails.
    """

    def __init__(self, root: Path, python: str = sys.executable, installer: str = "auto", timeout_s: float = 900.0,
                 install_args: Sequence[str] = ()) -> None:
        if installer not in INSTALLERS:
            raise ValueError(f"installer must be one of {', '.join(INSTALLERS)}, not {installer!r}")
        self.root = Path(root)
        self.python = python
        self.installer = installer
        self.timeout_s = timeout_s
        self.install_args = tuple(install_args)
        self._lock = threading.Lock()
        self._keys: dict[str, _Key] = {}
        self._names: dict[str, str] = {}   # a copy's resolved path: its key
        self._interpreter: Interpreter | None = None
        self._plain: EnvResult | None = None

    # ---- the one call the worker makes ------------------------------------------------------------------------

    def for_copy(self, copy_dir: Path, *, rebuild: bool = False) -> EnvResult:
        """The environment a project copy's tasks run in, built first if it must be (this blocks for the build:
        call it from a thread of its own). `rebuild=True` builds anew even when a build is ready or failed."""
        try:
            result = self._for_copy(Path(copy_dir), rebuild)
            if result.ok and result.env_dir is not None:
                mark_used(result.env_dir.parent)   # what pruning goes by (envprune)
            return result
        except OSError as e:   # the envs folder unwritable, a full disk: the build's failure, not the worker's
            return EnvResult(False, reason=f"the environment of {copy_dir} cannot be prepared: {printable(e, 300)}")

    def _for_copy(self, copy_dir: Path, rebuild: bool) -> EnvResult:
        if not (copy_dir / REQUIREMENTS).is_file():
            return self._without_env()
        try:
            interpreter = self._interpreter_info()
        except (OSError, RuntimeError, ValueError, subprocess.TimeoutExpired) as e:
            return EnvResult(False, reason=f"the interpreter {self.python} cannot be run: {printable(e, 300)}")
        try:
            key = self._key_of(copy_dir, interpreter)
        except OSError as e:
            return EnvResult(False, reason=f"cannot read {REQUIREMENTS} of {copy_dir}: {printable(e, 300)}")
        if not rebuild and (ready := _still_ready(key)) is not None:
            return ready
        # One thread of this process at a time per key, then one process (the file lock).
        with key.threads, file_lock(key.folder, self.timeout_s + 60.0) as locked:
            if not locked:
                return EnvResult(False, key=key.name, reason=f"another build of environment {key.name} did not end "
                                 f"within {self.timeout_s + 60.0:.0f} s")
            if not rebuild:
                if (ready := _still_ready(key)) is not None:
                    return ready
                current = read_current(key.folder)
                if current is not None:
                    key.ready = self._prepared(key, key.folder / current, built=False, build_s=0.0)
                    return key.ready
                failed = read_json(key.folder / "failed.json")
                if failed is not None and failed.get("copy") == str(copy_dir.resolve()):
                    return EnvResult(False, key=key.name, remembered=True, reason=str(failed.get("reason", "")),
                                     output=str(failed.get("output", "")))
            result = self._build(key, copy_dir, interpreter)
            if result.ok:
                key.ready = replace(result, built=False, build_s=0.0)
            return result

    def state(self, copy_dir: Path) -> str:
        """What `projects show` tells of a copy's environment, without building: "none" (no requirements.txt),
        "ready", "failed" or "absent" (not built yet)."""
        copy_dir = Path(copy_dir)
        if not (copy_dir / REQUIREMENTS).is_file():
            return "none"
        try:
            folder = self._key_of(copy_dir, self._interpreter_info()).folder
        except (OSError, RuntimeError, ValueError, subprocess.TimeoutExpired):
            return "absent"
        if read_current(folder) is not None:
            return "ready"
        return "failed" if (folder / "failed.json").exists() else "absent"

    def end_leftover_installers(self) -> int:
        """End the installers that builders killed mid-way left running (a worker SIGKILLed while it built): call
        it at the worker's start. A key whose lock is held has a live builder and is left alone. Returns how many
        keys had one."""
        ended = 0
        for record in sorted(self.root.glob(f"*/{INSTALLER_RECORD}")):
            if not is_key(record.parent):   # a pruned key's folder, being deleted
                continue
            with file_lock(record.parent, 0.0) as locked:
                if locked:
                    ended += 1
                    end_leftover_installer(record.parent)
        return ended

    # ---- building ---------------------------------------------------------------------------------------------

    def _build(self, key: _Key, copy_dir: Path, interpreter: Interpreter) -> EnvResult:
        started = time.monotonic()
        deadline = started + self.timeout_s
        # numbered past every build there, the half ones included: an installer a killed worker left running
        # may still write into its folder after the removal below
        target = key.folder / f"build-{next_build(key.folder)}"
        remove_builds(key.folder, keep=read_current(key.folder))
        end_leftover_installer(key.folder)
        log = key.folder / "build.log"
        try:
            steps = self._steps(interpreter, key.name, target)
        except StepFailed as e:
            return self._failed(key, copy_dir, target, e.reason, "", started)
        env = installer_environ(os.environ)
        try:
            with open(log, "wb") as out:
                for what, argv in steps:
                    out.write(f"$ {' '.join(argv)}\n".encode())
                    out.flush()
                    run_step(what, argv, copy_dir, env, out, deadline, self.timeout_s, key.folder / INSTALLER_RECORD)
            result = self._prepared(key, target, built=True, build_s=time.monotonic() - started)
            write_atomic(key.folder / "current", target.name)
        except StepFailed as e:
            return self._failed(key, copy_dir, target, e.reason, tail_of(log), started)
        except OSError as e:
            return self._failed(key, copy_dir, target, f"building environment {key.name} failed: "
                                f"{printable(e, 300)}", tail_of(log), started)
        (key.folder / "failed.json").unlink(missing_ok=True)
        logger.info("environment %s built with %s in %.1f s", key.name, steps[-1][0], result.build_s)
        return result

    def _steps(self, interpreter: Interpreter, prompt: str, target: Path) -> list[tuple[str, list[str]]]:
        uv = find_uv() if self.installer in ("auto", "uv") else None
        if self.installer == "uv" and uv is None:
            raise StepFailed("installer uv is not on the PATH nor beside this Python; install it (pip install uv) "
                              "or set the installer to pip")
        req = ["-r", REQUIREMENTS, *self.install_args]
        if uv is not None:
            return [("uv venv", [uv, "venv", "--quiet", "--python", interpreter.path,
                                 "--prompt", prompt, str(target)]),
                    ("uv pip install", [uv, "pip", "install", "--python", str(env_python(target)), *req])]
        return [("python -m venv", [interpreter.path, "-m", "venv", "--prompt", prompt, str(target)]),
                ("pip install", [str(env_python(target)), "-m", "pip", "install", "--disable-pip-version-check",
                                 "--no-input", *req])]

    def _failed(self, key: _Key, copy_dir: Path, target: Path, reason: str, output: str,
                started: float) -> EnvResult:
        shutil.rmtree(target, ignore_errors=True)
        try:
            write_atomic(key.folder / "failed.json", json.dumps({"copy": str(copy_dir.resolve()), "reason": reason,
                                                                   "output": output, "at": time.time()}))
        except OSError as e:   # a full disk: the failure is still answered, only not remembered
            logger.warning("cannot remember the failure of environment %s: %s", key.name, e)
        logger.warning("environment %s failed to build: %s", key.name, reason)
        return EnvResult(False, key=key.name, reason=reason, output=output, build_s=time.monotonic() - started)

    # ---- what a pool child needs ------------------------------------------------------------------------------

    def _prepared(self, key: _Key, env_dir: Path, *, built: bool, build_s: float) -> EnvResult:
        """The env with the worker's finder written into it (again: where zmqgrid lives may have changed since
        it was built) and asked what it can import."""
        write_finder(env_dir)
        probe = ask_interpreter(env_python(env_dir), env_dir)
        return EnvResult(True, python=env_python(env_dir), env_dir=env_dir, key=key.name,
                         zmqgrid_importable=probe.get("zmqgrid") is not None,
                         sys_path=tuple(probe.get("sys_path", ())), built=built, build_s=build_s)

    def _without_env(self) -> EnvResult:
        with self._lock:
            if self._plain is None:
                if self.python == sys.executable:
                    probe = {"zmqgrid": "", "sys_path": sys.path}
                else:   # asked from a folder of ours: `-c` puts the working directory first on its path
                    self.root.mkdir(parents=True, exist_ok=True)
                    probe = ask_interpreter(Path(self.python), self.root)
                self._plain = EnvResult(True, python=Path(self.python), zmqgrid_importable=probe.get("zmqgrid")
                                        is not None, sys_path=tuple(probe.get("sys_path", ())))
            return self._plain

    def _interpreter_info(self) -> Interpreter:
        with self._lock:
            if self._interpreter is None:
                self._interpreter = Interpreter.of(self.python)
            return self._interpreter

    def _key_of(self, copy_dir: Path, interpreter: Interpreter) -> _Key:
        # A copy never changes once it is in the cache (a version is its content's hash), so its requirements are
        # hashed once per process, not at every task.
        where = str(copy_dir.resolve())
        with self._lock:
            name = self._names.get(where)
        if name is None:
            name = f"{requirements_key(copy_dir)}-{interpreter.tag}"
        with self._lock:
            if len(self._names) >= MAX_REMEMBERED_COPIES:
                self._names.clear()
            self._names[where] = name
            key = self._keys.get(name)
            if key is None:
                key = self._keys[name] = _Key(name, self.root / name)
            return key


def _still_ready(key: _Key) -> EnvResult | None:
    ready = key.ready
    return ready if ready is not None and ready.python is not None and ready.python.exists() else None
