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

A build happens at its final path (a venv is not relocatable: console scripts such as `bin/scrapy` name the
interpreter by absolute path) and is published by replacing `current`; a build killed mid-way is a `build-<n>` that
`current` never names, deleted by the next build of its key. A rebuild publishes a new `build-<n+1>` beside the old
one, so tasks still running in the old one are not pulled from under; the next build of that key deletes it.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import psutil

from ..text import printable
from ..worker.proctree import kill_tree

logger = logging.getLogger(__name__)

_POSIX = os.name == "posix"
INSTALLERS = ("auto", "uv", "pip")
REQUIREMENTS = "requirements.txt"
INSTALLER_RECORD = "installer.json"
TAIL_LINES = 20
TAIL_LINE_CHARS = 300
TAIL_READ_BYTES = 64 * 1024
KILL_GRACE_S = 2.0
PROBE_TIMEOUT_S = 60.0
MAX_REMEMBERED_COPIES = 4096

# What a python pool child (zmqgrid.worker.pypool) imports from outside the standard library. A venv built here
# sees these, and nothing else of the worker's, through a finder its site-packages installs at start
# (`_zmqgrid_worker.py`, below): zmqgrid ahead of the venv's own packages (the child must speak its worker's
# protocol), msgpack and psutil after them (a project that pins its own version of either keeps it).
WORKER_FIRST = ("zmqgrid",)
WORKER_FALLBACK = ("msgpack", "psutil")
FINDER_MODULE = "_zmqgrid_worker"
FINDER_PTH = "zmqgrid-worker.pth"

# A user:password in an index URL (`--index-url https://u:p@host/simple` in requirements.txt or pip's messages).
_URL_CREDENTIALS = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@]+@")
_PATH_SUFFIXES = (".whl", ".zip", ".tar.gz", ".tgz", ".tar.bz2", ".tar")
_INCLUDE_FLAGS = ("-r", "--requirement", "-c", "--constraint")
_SKIPPED_IN_FOLDERS = ("__pycache__", ".git")


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


@dataclass(frozen=True)
class Interpreter:
    """A Python interpreter as the key of an environment: its path as given, and a tag naming its implementation,
    version and real location (two Pythons 3.11 at two places build two environments)."""

    path: str
    tag: str
    version: str

    @classmethod
    def of(cls, python: str, timeout_s: float = PROBE_TIMEOUT_S) -> Interpreter:
        """Asks `python` (this process itself when it is sys.executable); OSError or RuntimeError when it cannot
        be run."""
        if python == sys.executable:
            return cls(python, _tag(sys.implementation.cache_tag, sys.executable), sys.version.split()[0])
        done = subprocess.run([python, "-E", "-s", "-c", "import sys, json; print(json.dumps([sys.implementation."
                               "cache_tag, sys.version.split()[0], sys.executable]))"],
                              capture_output=True, text=True, timeout=timeout_s, stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            last = done.stderr.strip().splitlines()[-1:] or [""]
            raise RuntimeError(f"{python} exited with code {done.returncode}: {printable(last[0], 200)}")
        cache_tag, version, executable = json.loads(done.stdout)
        return cls(python, _tag(cache_tag, executable or python), version)


def _tag(cache_tag: str | None, executable: str) -> str:
    where = hashlib.sha256(os.path.realpath(executable).encode()).hexdigest()[:8]
    return f"{cache_tag or 'python'}-{where}"


def scripts_dir(env_dir: Path) -> Path:
    return env_dir / ("bin" if _POSIX else "Scripts")


def env_python(env_dir: Path) -> Path:
    return scripts_dir(env_dir) / ("python" if _POSIX else "python.exe")


def find_uv() -> str | None:
    """The uv executable: on PATH, else beside this interpreter (`pip install uv` into the worker's own
    environment puts it there without touching PATH)."""
    found = shutil.which("uv")
    if found:
        return found
    beside = shutil.which("uv", path=sysconfig.get_path("scripts"))
    return beside


def requirements_key(copy_dir: Path) -> str:
    """16 hex digits of the sha256 of requirements.txt and of every local file it names by a relative path inside
    the copy (a wheel, a source folder, a `-r`/`-c` file): a wheel rebuilt under the same name is a new key."""
    digest = hashlib.sha256()
    root = copy_dir.resolve()
    seen: set[Path] = set()

    def add_file(path: Path) -> None:
        digest.update(b"\0file\0" + path.relative_to(root).as_posix().encode() + b"\0")
        with open(path, "rb") as f:
            while block := f.read(1 << 20):
                digest.update(block)

    def add(path: Path, depth: int) -> None:
        if path in seen:
            return
        seen.add(path)
        if path.is_dir():
            for sub in sorted(path.rglob("*")):
                if sub.is_file() and not any(part in _SKIPPED_IN_FOLDERS for part in sub.relative_to(path).parts):
                    add_file(sub)
            return
        add_file(path)
        if depth == 0 or path.suffix == ".txt" and depth < 8:
            for token in _local_paths(path.read_text(encoding="utf-8", errors="replace")):
                named = _inside(root, path.parent / token)
                if named is not None and named.exists():
                    add(named, depth + 1)

    add(root / REQUIREMENTS, 0)
    return digest.hexdigest()[:16]


def _local_paths(text: str) -> Iterator[str]:
    """The tokens of a requirements file that may name a local file or folder."""
    for line in text.replace("\\\n", " ").splitlines():
        line = line.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        tokens = line.split()
        for i, token in enumerate(tokens):
            if "=" in token and token.split("=", 1)[0] in _INCLUDE_FLAGS:
                yield token.split("=", 1)[1]
            elif i > 0 and tokens[i - 1] in _INCLUDE_FLAGS:
                yield token
            elif not token.startswith("-") and "://" not in token and (
                    token.startswith(".") or "/" in token or "\\" in token or token.endswith(_PATH_SUFFIXES)):
                yield token


def _inside(root: Path, path: Path) -> Path | None:
    resolved = path.resolve()
    return resolved if resolved == root or root in resolved.parents else None


def tail_of(log: Path) -> str:
    """The installer's last lines: at most TAIL_LINES non-empty ones of the log's last 64 KiB, each one printable
    line of at most TAIL_LINE_CHARS, credentials in URLs hidden."""
    try:
        with open(log, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - TAIL_READ_BYTES))
            data = f.read()
    except OSError:
        return ""
    lines = [line for line in data.decode("utf-8", errors="replace").splitlines() if line.strip()]
    return "\n".join(printable(_URL_CREDENTIALS.sub(r"\1****@", line.rstrip()), TAIL_LINE_CHARS)
                     for line in lines[-TAIL_LINES:])


class _StepFailed(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


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
            return self._for_copy(Path(copy_dir), rebuild)
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
        with key.threads, _file_lock(key.folder, self.timeout_s + 60.0) as locked:
            if not locked:
                return EnvResult(False, key=key.name, reason=f"another build of environment {key.name} did not end "
                                 f"within {self.timeout_s + 60.0:.0f} s")
            if not rebuild:
                if (ready := _still_ready(key)) is not None:
                    return ready
                current = _read_current(key.folder)
                if current is not None:
                    key.ready = self._prepared(key, key.folder / current, built=False, build_s=0.0)
                    return key.ready
                failed = _read_json(key.folder / "failed.json")
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
        if _read_current(folder) is not None:
            return "ready"
        return "failed" if (folder / "failed.json").exists() else "absent"

    def end_leftover_installers(self) -> int:
        """End the installers that builders killed mid-way left running (a worker SIGKILLed while it built): call
        it at the worker's start. A key whose lock is held has a live builder and is left alone. Returns how many
        keys had one."""
        ended = 0
        for record in sorted(self.root.glob(f"*/{INSTALLER_RECORD}")):
            with _file_lock(record.parent, 0.0) as locked:
                if locked:
                    ended += 1
                    _end_leftover_installer(record.parent)
        return ended

    # ---- building ---------------------------------------------------------------------------------------------

    def _build(self, key: _Key, copy_dir: Path, interpreter: Interpreter) -> EnvResult:
        started = time.monotonic()
        deadline = started + self.timeout_s
        # numbered past every build there, the half ones included: an installer a killed worker left running
        # may still write into its folder after the removal below
        target = key.folder / f"build-{_next_build(key.folder)}"
        _remove_builds(key.folder, keep=_read_current(key.folder))
        _end_leftover_installer(key.folder)
        log = key.folder / "build.log"
        try:
            steps = self._steps(interpreter, key.name, target)
        except _StepFailed as e:
            return self._failed(key, copy_dir, target, e.reason, "", started)
        env = _installer_environ(os.environ)
        try:
            with open(log, "wb") as out:
                for what, argv in steps:
                    out.write(f"$ {' '.join(argv)}\n".encode())
                    out.flush()
                    _run(what, argv, copy_dir, env, out, deadline, self.timeout_s, key.folder / INSTALLER_RECORD)
            result = self._prepared(key, target, built=True, build_s=time.monotonic() - started)
            _write_atomic(key.folder / "current", target.name)
        except _StepFailed as e:
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
            raise _StepFailed("installer uv is not on the PATH nor beside this Python; install it (pip install uv) "
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
            _write_atomic(key.folder / "failed.json", json.dumps({"copy": str(copy_dir.resolve()), "reason": reason,
                                                                   "output": output, "at": time.time()}))
        except OSError as e:   # a full disk: the failure is still answered, only not remembered
            logger.warning("cannot remember the failure of environment %s: %s", key.name, e)
        logger.warning("environment %s failed to build: %s", key.name, reason)
        return EnvResult(False, key=key.name, reason=reason, output=output, build_s=time.monotonic() - started)

    # ---- what a pool child needs ------------------------------------------------------------------------------

    def _prepared(self, key: _Key, env_dir: Path, *, built: bool, build_s: float) -> EnvResult:
        """The env with the worker's finder written into it (again: where zmqgrid lives may have changed since
        it was built) and asked what it can import."""
        _write_finder(env_dir)
        probe = _probe(env_python(env_dir), env_dir)
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
                    probe = _probe(Path(self.python), self.root)
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


# ---- the pieces -------------------------------------------------------------------------------------------------

def _installer_environ(base: Mapping[str, str]) -> dict[str, str]:
    env = dict(base)
    for name in ("VIRTUAL_ENV", "PYTHONHOME", "CONDA_PREFIX"):
        env.pop(name, None)   # the installers would take them for the environment to install into
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env["UV_PYTHON_DOWNLOADS"] = "never"   # uv venv uses the interpreter it is given, never one it fetches
    env.setdefault("PYTHONIOENCODING", "utf-8")
    return env


def _run(what: str, argv: list[str], cwd: Path, env: dict[str, str], out: object, deadline: float,
         timeout_s: float, record: Path) -> None:
    """Run one installer step with its output into `out`; _StepFailed when it fails or the deadline passes (its
    whole process tree killed first: pip's build backends and uv's workers are its children). While it runs,
    `record` names it (pid and start time), so a builder after a killed worker ends what that worker left."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise _StepFailed(f"building the environment took longer than its {timeout_s:.0f} s ({what} not started)")
    try:
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=_POSIX,
                                creationflags=0 if _POSIX else subprocess.CREATE_NEW_PROCESS_GROUP)
    except OSError as e:
        raise _StepFailed(f"{what} could not start: {e}") from None
    try:
        try:
            _write_atomic(record, json.dumps({"pid": proc.pid, "started": psutil.Process(proc.pid).create_time()}))
        except psutil.NoSuchProcess:
            pass   # it ended already
        code = proc.wait(timeout=left)
    except subprocess.TimeoutExpired:
        kill_tree(proc.pid, grace_s=KILL_GRACE_S, own_session=_POSIX)
        proc.wait()
        raise _StepFailed(f"building the environment took longer than its {timeout_s:.0f} s; {what} was killed") \
            from None
    except BaseException:
        kill_tree(proc.pid, grace_s=KILL_GRACE_S, own_session=_POSIX)
        proc.wait()
        raise
    finally:
        record.unlink(missing_ok=True)
    if code != 0:
        raise _StepFailed(f"{what} exited with code {code}")


def _end_leftover_installer(folder: Path) -> None:
    """Kill the installer a builder killed mid-way left running (its record names a process that still runs with
    the same start time: a reused pid is left alone), so it writes nothing more into its half build."""
    record = _read_json(folder / INSTALLER_RECORD)
    if record is None:
        return
    try:
        proc = psutil.Process(int(record["pid"]))
        if abs(proc.create_time() - float(record["started"])) < 0.01:
            logger.warning("ending installer pid=%d left by a builder of %s that did not finish", proc.pid, folder.name)
            kill_tree(proc.pid, grace_s=KILL_GRACE_S, own_session=_POSIX)
    except (psutil.Error, KeyError, TypeError, ValueError):
        pass   # gone, or not ours to signal
    (folder / INSTALLER_RECORD).unlink(missing_ok=True)


_FINDER_SOURCE = '''\
"""Written by zmqgrid (zmqgrid/projects/envs.py) and loaded by {pth} at start: the modules of the worker that a
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


def _site_packages(env_dir: Path) -> Path:
    found = sorted(env_dir.glob("lib/*/site-packages")) + sorted(env_dir.glob("Lib/site-packages"))
    if not found:
        raise OSError(f"no site-packages folder in {env_dir}")
    return found[0]


def _write_finder(env_dir: Path) -> None:
    site = _site_packages(env_dir)
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
    _write_atomic(path, text)


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


def _probe(python: Path, cwd: Path) -> dict:
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


def _read_current(folder: Path) -> str | None:
    try:
        name = (folder / "current").read_text(encoding="utf-8").strip()
    except OSError:
        return None
    # an empty or damaged pointer (a crash before its bytes reached the disk) is no build: build again
    if not re.fullmatch(r"build-\d+", name) or not env_python(folder / name).exists():
        return None
    return name


def _read_json(path: Path) -> dict | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _next_build(folder: Path) -> int:
    numbers = [int(p.name[6:]) for p in folder.glob("build-*") if p.name[6:].isdigit()]
    current = _read_current(folder)
    if current is not None:
        numbers.append(int(current[6:]))
    return max(numbers, default=0) + 1


def _remove_builds(folder: Path, keep: str | None) -> None:
    """Every build but `keep`: those killed mid-way and those a rebuild replaced."""
    for path in folder.glob("build-*"):
        if path.name != keep and path.is_dir():
            shutil.rmtree(path, ignore_errors=True)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


@contextmanager
def _file_lock(folder: Path, wait_s: float) -> Iterator[bool]:
    """Holds `<folder>/lock` (flock on POSIX, msvcrt on Windows), waiting up to `wait_s`; yields False when it
    could not. The lock goes with the process: a builder killed mid-way leaves no lock behind."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "lock", "a+b") as f:
        deadline = time.monotonic() + wait_s
        while not _try_lock(f):
            if time.monotonic() > deadline:
                yield False
                return
            time.sleep(0.05)
        try:
            yield True
        finally:
            _unlock(f)


def _try_lock(f: object) -> bool:
    if _POSIX:
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
    if _POSIX:
        import fcntl
        fcntl.flock(f.fileno(), fcntl.LOCK_UN)
    else:
        import msvcrt
        f.seek(0)
        msvcrt.locking(f.fileno(), msvcrt.LK_UNLCK, 1)
