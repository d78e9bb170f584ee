"""Between the tasks a worker takes and its slots: a task of a project passes once its version has a good copy on
this worker, and waits here (holding no slot) while the copy is checked or fetched (docs/architecture.md,
Projects, "The worker's cache and environments")."""
from __future__ import annotations

import itertools
import logging
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..config import Config
from ..model import TaskError, TaskState
from ..projects.cache import Damaged, ProjectCache
from ..projects.envprune import EnvPruner
from ..projects.envs import EnvResult, Environments
from ..projects.fetch import BadData, Download
from ..projects.messages import ProjectData, ProjectFetch
from ..protocol import Error
from .cache_report import CacheReport, brief
from .jobthread import JobThread
from .results import AttemptResult

logger = logging.getLogger(__name__)
MIB = 1 << 20
DOWNLOAD_TRIES = 3                                # downloads that did not match their version, then the tasks fail
TRANSIENT = frozenset({"too_large", "unavailable"})   # the master's answers that mean "ask again later"
_VERSION = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class ProjectCopy:
    """Where a task of a project runs: its version's copy, the interpreter its scripts and python calls use (a pool
    of its own: PyPools), and its environment (None: the worker's own interpreter and packages). One per version,
    made when its environment is ready; a task dict holds it under "_project", set here only (a value from the wire
    is plain data, never one of these)."""

    root: str
    python: str
    env: EnvResult | None = None

    @classmethod
    def of(cls, root: Path, env: EnvResult, python_executable: str) -> ProjectCopy:
        if env.env_dir is None:   # no requirements.txt: the worker's interpreter and packages
            return cls(str(root), python_executable)
        return cls(str(root), str(env.python), env)

    def environ(self, base: dict[str, str]) -> dict[str, str]:
        """`base` with the copy's environment activated (shell and script tasks)."""
        return self.env.environ(base) if self.env is not None else base


def copy_of(task: dict) -> ProjectCopy | None:
    """The copy a task runs in, as the gate bound it (None: not a task of a project)."""
    copy = task.get("_project")
    return copy if isinstance(copy, ProjectCopy) else None


class EnvFailed(Exception):
    """A copy's environment could not be built: its tasks fail with the installer's reason."""


class ProjectGate:
    """`admit` passes the tasks that can run now and keeps the others until `release` can take them (or `fail`
    their results). `on_data`/`on_error` take the master's answers; `tick` runs each loop turn."""

    def __init__(self, config: Config, *, send: Callable[[ProjectFetch], None], connected: Callable[[], bool],
                 wake: Callable[[], None], release: Callable[[list[dict]], None],
                 fail: Callable[[list[AttemptResult]], None], active_ids: Callable[[], set[str]]) -> None:
        self.config = config
        # Absolute: a call chdirs into its copy, and the copy is first on its sys.path. One folder per device: the
        # workers of a machine share a state_dir, and none may delete what another is writing or running.
        folder = Path(config.state_dir).resolve() / "projects" / config.device_id.replace(":", "_")
        self.cache = ProjectCache(folder, config.project_cache_mb * MIB)
        # Shared by the workers of a machine (a lock per environment): one build serves them all.
        self.envs = Environments(Path(config.state_dir).resolve() / "envs", python=config.python_executable)
        self.pruner = EnvPruner(self.envs.root, config.env_keep_days)   # environments unused for env_keep_days
        self.bound: dict[str, ProjectCopy] = {}     # version -> where its tasks run, once its environment is ready
        self._send, self._connected, self._wake = send, connected, wake
        self._release, self._fail, self._active_ids = release, fail, active_ids
        self.lock = threading.Lock()                # guards `waiting` for the heartbeat thread
        self.waiting: dict[str, list[dict]] = {}    # version -> tasks waiting for its copy
        self.good: set[str] = set()                 # versions whose copy was checked since this worker started
        self.busy: dict[str, str] = {}              # version -> "verify", "download" or "install"
        self.downloads: dict[str, Download] = {}
        self.by_request: dict[int, str] = {}        # a G's req_id -> its version
        self.tries: dict[str, int] = {}
        self.released: dict[str, str] = {}          # task id -> the version it runs in (what pruning keeps)
        self.req_ids = itertools.count(1)
        self.jobs = JobThread(wake)                 # checking, unpacking and building, one at a time, off the loop
        self.states = CacheReport()                 # what heartbeats tell the master of this cache
        self.names: dict[str, str] = {}             # version -> the project a sync named it by
        self.rebuild_wanted: set[str] = set()       # versions a sync asked to build the environment of anew

    def start(self) -> None:
        """At the worker's start: what a killed predecessor left half done goes."""
        self.cache.clean()
        self.envs.end_leftover_installers()
        self.jobs.submit(self.states.survey, self.cache, self.envs)

    def close(self) -> None:
        for download in self.downloads.values():
            download.close()
        self.jobs.close()

    # ------------------------------------------------------------ tasks

    def admit(self, tasks: list[dict]) -> list[dict]:
        """The tasks that may go to the slots now; those of a version without a good copy wait here."""
        ready = []
        for task in tasks:
            task.pop("_project", None)
            ref = task.get("project")
            if not ref:
                ready.append(task)
                continue
            version = str(ref).partition("@")[2]
            if not _VERSION.fullmatch(version):
                self._fail([_failed(task, f"project {str(ref)[:80]!r} names no full version", True)])
                continue
            if version in self.good and self.cache.has_copy(version):
                ready.append(self._bind(task, version))
                continue
            with self.lock:
                self.waiting.setdefault(version, []).append(task)
            if version not in self.busy:
                self._begin(version)
        return ready

    def keys(self) -> list[list]:
        """[id, attempt] of the tasks waiting for a copy: held, for heartbeats and Registers."""
        with self.lock:
            return [[t["id"], t["attempt"]] for tasks in self.waiting.values() for t in tasks]

    def count(self) -> int:
        with self.lock:
            return sum(len(tasks) for tasks in self.waiting.values())

    def drop(self, wanted: set) -> list[dict]:
        """Take out the waiting tasks whose (id, attempt) is in `wanted` (cancelled, or given to another worker)."""
        dropped = []
        with self.lock:
            for version, tasks in self.waiting.items():
                dropped += [t for t in tasks if (t["id"], t["attempt"]) in wanted]
                self.waiting[version] = [t for t in tasks if (t["id"], t["attempt"]) not in wanted]
        return dropped

    def _bind(self, task: dict, version: str) -> dict:
        task["_project"] = copy = self.bound[version]
        root = Path(copy.root)
        if task.get("kind") != "python":   # a relative cwd is taken inside the copy
            cwd = task.get("cwd")
            task["cwd"] = str(root / cwd) if cwd and not Path(cwd).is_absolute() else (cwd or str(root))
        self.released[task["id"]] = version
        self.cache.touch(version)   # what pruning orders by: the last use
        return task

    def _ready(self, version: str) -> None:
        self.good.add(version)
        self.states.set(version, "cached", "ready" if self.bound[version].env is not None else "none")
        with self.lock:
            tasks = self.waiting.pop(version, [])
        self.busy.pop(version, None)
        self.tries.pop(version, None)
        if tasks:
            self._release([self._bind(task, version) for task in tasks])

    def _give_up(self, version: str, why: str, permanent: bool, kind: str = "ProjectUnavailable") -> None:
        """Every task waiting for `version` fails with `why`; its download, if any, is dropped."""
        self._abort(version)
        self.busy.pop(version, None)
        self.tries.pop(version, None)
        env_failed, said = kind == "env_build_failed", brief(why.removeprefix(self._named(version)).lstrip(": "))
        self.states.set(version, "cached" if env_failed else "failed", "failed" if env_failed else "unknown", said)
        with self.lock:
            tasks = self.waiting.pop(version, [])
        if tasks:
            logger.error("project version %s unavailable (%d tasks fail): %s", version[:12], len(tasks), why)
            self._fail([_failed(task, why, permanent, kind) for task in tasks])
        else:   # a sync's, or its tasks were cancelled or given to another worker meanwhile
            logger.warning("project version %s: no task waits for it: %s", version[:12], why)

    # ------------------------------------------------------------ checking, downloading, unpacking

    def _begin(self, version: str) -> None:
        self.states.set(version, "fetching")
        if self.cache.has_copy(version):
            self._job(version, "verify", self.cache.verify)
        else:
            self._download(version)

    def _job(self, version: str, what: str, work: Callable[[str], None]) -> None:
        self.busy[version] = what
        self.jobs.run(version, what, work)

    def _download(self, version: str) -> None:
        self.busy[version] = "download"
        self.tries[version] = self.tries.get(version, 0) + 1
        try:
            # a Y must fit the DEALER's max_message_bytes with room to spare, or libzmq drops the connection
            download = Download(version, self.cache.part(version), self.req_ids, self._ask,
                                self.config.max_message_bytes // 2)
        except OSError as e:
            self._give_up(version, f"cannot write {self.cache.part(version)}: {e.strerror}", False)
            return
        self.downloads[version] = download
        if self._connected():
            download.pump(time.monotonic())

    def _ask(self, msg: ProjectFetch) -> None:
        self.by_request[msg.req_id] = msg.version
        if self._connected():
            self._send(msg)

    def _abort(self, version: str) -> None:
        download = self.downloads.pop(version, None)
        if download is not None:
            download.close()
            for req_id in download.pending:
                self.by_request.pop(req_id, None)
            self.cache.part(version).unlink(missing_ok=True)

    def on_data(self, msg: ProjectData) -> None:
        version = self.by_request.pop(msg.req_id, None)
        download = self.downloads.get(version) if version is not None else None
        if download is None or msg.req_id not in download.pending or msg.version != version:
            return   # an answer to a request asked again, or of a download dropped since
        try:
            download.take(msg)
        except BadData as e:
            logger.warning("project version %s: %s; downloading again", version[:12], e)
            self._retry(version, str(e))
            return
        except OSError as e:
            self._give_up(version, f"cannot write {download.path}: {e.strerror}", False)
            return
        if download.done:
            download.close()
            del self.downloads[version]
            digest = download.sha256   # hashed as it came (None: the copy reads the file for it)
            self._job(version, "install", lambda v: self.cache.install(v, digest))
        else:
            download.pump(time.monotonic())

    def on_error(self, msg: Error) -> bool:
        """An `E` answering one of our requests (True), or not ours (False)."""
        version = self.by_request.get(msg.req_id)
        if version is None:
            return False
        if msg.code in TRANSIENT:   # still pending: asked again after ASK_AGAIN_S
            logger.info("project version %s: the master said %s (%s); asking again later", version[:12], msg.code,
                        msg.message)
            return True
        self.by_request.pop(msg.req_id, None)
        self._give_up(version, f"{self._named(version)} cannot be fetched from the master: {msg.message}", True)
        return True

    def _retry(self, version: str, why: str) -> None:
        self._abort(version)
        if self.tries.get(version, 0) >= DOWNLOAD_TRIES:
            self._give_up(version, f"{self._named(version)}: {DOWNLOAD_TRIES} downloads in a row failed ({why})",
                          True)
        else:
            self._download(version)

    def _named(self, version: str) -> str:
        with self.lock:
            tasks = self.waiting.get(version) or [{}]
        named = f"{self.names[version]}@{version}" if version in self.names else f"version {version[:12]}"
        return f"project {tasks[0].get('project') or named}"

    # ------------------------------------------------------------ the loop's turn

    def tick(self, now: float) -> None:
        """Take the jobs that ended; ask again what went unanswered too long; now and then, prune environments."""
        for ended in self.jobs.ended():
            self._job_ended(*ended)
        if self.pruner.due(now):
            self.prune_envs()
        if self.downloads and self._connected():
            for download in list(self.downloads.values()):
                download.ask_again(now)
                download.pump(now)

    def registered(self) -> None:
        """Registered with a master (perhaps a new one): every unanswered request goes again."""
        now = time.monotonic()
        for download in list(self.downloads.values()):
            download.ask_again(now, all_of_them=True)
            download.pump(now)

    def sync(self, name: str, version: str, seq: int, rebuild: bool) -> None:
        """A `sync` command: this version's copy and environment made ready now, with no task of it yet."""
        if not _VERSION.fullmatch(version):
            logger.warning("sync of project %s ignored: %r is no full version", name, version[:80])
            return
        self.names = {**self.names, version: name} if len(self.names) < 4096 else {version: name}
        if rebuild:
            self.rebuild_wanted.add(version)
        if version not in self.busy:
            if version not in self.good or version not in self.bound or not self.cache.has_copy(version):
                self._begin(version)
            elif rebuild:
                self._build_env(version)
            else:
                self.states.set(version, "cached", "ready" if self.bound[version].env is not None else "none")
        self.states.synced(version, seq)

    def _build_env(self, version: str) -> None:
        rebuild = version in self.rebuild_wanted
        self.rebuild_wanted.discard(version)
        self.states.set(version, "cached", "building")
        self._job(version, "environment", lambda v: self._environment(v, rebuild))

    def _environment(self, version: str, rebuild: bool = False) -> None:
        """In the jobs thread: the copy's environment, built if it has a requirements.txt (seconds to minutes),
        or built anew (`rebuild`: a sync asked for it)."""
        root = self.cache.copy(version)
        env = self.envs.for_copy(root, rebuild=rebuild)
        if not env.ok:
            raise EnvFailed(env.error_text())
        self.bound[version] = ProjectCopy.of(root, env, self.config.python_executable)

    def _job_ended(self, version: str, what: str, error: Exception | None) -> None:
        if error is None and what != "environment" or what == "environment" and version in self.rebuild_wanted:
            if what == "install":
                logger.info("project version %s unpacked into %s", version[:12], self.cache.copy(version))
                self.cache.touch(version)   # a new copy is the one wanted last: pruned after the others
                self._prune()
            self._build_env(version)   # a rebuild asked while an environment was prepared follows it
        elif error is None:
            env = self.bound[version].env
            if env is not None and env.built:
                logger.info("project version %s: environment built in %.1fs at %s", version[:12], env.build_s,
                            env.env_dir)
                for other, copy in list(self.bound.items()):   # a rebuild moved every copy of its key to it
                    if copy.env is not None and copy.env.key == env.key:
                        self.bound[other] = ProjectCopy.of(Path(copy.root), env, self.config.python_executable)
            self._ready(version)
        elif isinstance(error, EnvFailed):
            self._give_up(version, f"{self._named(version)}: its environment could not be built: {error}", True,
                          "env_build_failed")
        elif isinstance(error, Damaged) and what == "verify":
            logger.warning("project copy %s is damaged (%s): deleted, fetching it again", version[:12], error)
            self.cache.delete(version)
            self._download(version)
        elif isinstance(error, Damaged):
            logger.warning("project version %s: %s", version[:12], error)
            self._retry(version, str(error))
        else:
            logger.error("project version %s: %s failed: %s", version[:12], what, error)
            self._give_up(version, f"{self._named(version)}: the worker could not {what} its copy ({error})", False)

    def prune_envs(self) -> None:
        """Mark the environments this worker's tasks hold, run or wait for as used; delete in the jobs thread those
        unused past env_keep_days. A version bound to one that goes is checked and bound again at its next task
        (its environment job comes after the deletion: one jobs thread)."""
        active = self._active_ids()
        with self.lock:
            versions = {v for tid, v in self.released.items() if tid in active} | set(self.waiting)
        in_use = {copy.env.key for v in versions if (copy := self.bound.get(v)) and copy.env and copy.env.key}
        self.pruner.mark(in_use)
        stale = set(self.pruner.stale(in_use))
        if not stale:
            return
        for version in [v for v, copy in self.bound.items() if copy.env is not None and copy.env.key in stale]:
            self.good.discard(version)
            del self.bound[version]
            self.states.set(version, "cached", "not_built")
        self.jobs.submit(self.pruner.prune, sorted(stale))

    def _prune(self) -> None:
        """Past project_cache_mb: least recently used copies go, never one a task here holds or runs."""
        active = self._active_ids()
        self.released = {tid: v for tid, v in self.released.items() if tid in active}
        with self.lock:
            keep = set(self.released.values()) | set(self.waiting) | set(self.busy)
        for version in self.cache.prune(keep):
            self.good.discard(version)
            self.states.drop(version)
            self.bound.pop(version, None)
            logger.info("project copy %s deleted: the cache is over project_cache_mb (%d MiB)", version[:12],
                        self.config.project_cache_mb)


def _failed(task: dict, why: str, permanent: bool, kind: str = "ProjectUnavailable") -> AttemptResult:
    return AttemptResult(task["id"], task["attempt"], TaskState.FAILED, error=TaskError(kind, why, permanent=permanent))
