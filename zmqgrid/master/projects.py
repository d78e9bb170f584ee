"""The master's side of projects (docs/architecture.md, Projects): pushes received in chunks into files beside
the ledger, checked and named by their hash, indexed in the turn's commit; listing and removal."""
from __future__ import annotations

import hashlib
import logging
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from ..errors import LimitExceeded, ProjectNotFound, StoreError, UsageError
from ..projects.archive import ArchiveRefused, check_archive
from ..projects.messages import CHUNK_BYTES, PROJECT_PATTERN, ProjectChunk, ProjectPush
from ..store.project_store import ProjectStore
from .keep_versions import AT_START, KeepVersions

if TYPE_CHECKING:
    from .syncs import Syncs

logger = logging.getLogger(__name__)
MIB = 1 << 20
WINDOW = 4                  # chunks a client may have unanswered
MAX_UPLOADS = 4             # pushes in progress at once, all clients together
UPLOAD_IDLE_S = 60.0        # an upload not added to for this long is dropped with its file
SYNC_EVERY_BYTES = 8 * MIB  # an upload is synced as it grows, so its last sync has little left
MIN_VERSION_PREFIX = 6
_PROJECT = re.compile(PROJECT_PATTERN)
_VERSION_PREFIX = re.compile(r"[0-9a-f]{6,64}")

Answer = tuple[Any, bool]   # (reply data, whether it reports this turn's writes: sent only after the commit)


def short(version: str) -> str:
    return version[:12]


@dataclass
class Upload:
    """A push in progress: its file, how much of it came, and the hash so far."""

    id: int
    account: bytes
    name: str
    version: str
    size: int
    fd: int
    last_mono: float
    received: int = 0
    synced: int = 0
    digest: Any = field(default_factory=hashlib.sha256)


class Projects:
    """Pushes, listing and removal; `expire` (at each liveness check) drops idle uploads and deletes archives that
    a committed removal left unnamed."""

    def __init__(self, store: ProjectStore, max_project_mb: int, max_project_files: int) -> None:
        self.store = store
        self.max_bytes, self.max_files = max_project_mb * MIB, max_project_files
        self.max_project_mb = max_project_mb
        self.uploads: dict[int, Upload] = {}
        self.next_upload = 1
        # version -> the commit a removal of its rows is staged for: its archive goes once that commit is over
        self.removed: dict[str, int] = {}
        # (name, version) -> the commit its removal is staged for (ProjectStore.staged_now): a Submit later in
        # that turn reads the ledger before the commit, and must not pin what is going
        self.dropping: dict[tuple[str, str], int] = {}
        self.syncs: Syncs | None = None   # what workers hold, for `projects show` (set by the master)
        self.kept: KeepVersions | None = None   # version retention, set by `retain`

    # ------------------------------------------------------------ push

    def push(self, msg: ProjectPush, account: bytes, by: str, now_mono: float, now: float) -> Answer:
        if msg.size > self.max_bytes:
            raise LimitExceeded(f"project {msg.name} of {msg.size / MIB:.1f} MiB is over max_project_mb "
                                f"({self.max_project_mb} MiB)",
                                "leave files out with .zmqgridignore, or raise max_project_mb on the master")
        if msg.files > self.max_files:
            raise LimitExceeded(f"project {msg.name} of {msg.files} files is over max_project_files "
                                f"({self.max_files})",
                                "leave files out with .zmqgridignore, or raise max_project_files on the master")
        if self.store.archive(msg.version).exists():
            row = self.store.row_of_version(msg.version)
            files = row["files"] if row else check_archive(self.store.archive(msg.version), self.max_files)
            size = self.store.archive(msg.version).stat().st_size
            self._staged_push(msg.name, msg.version, size, files, now, by)
            return {"name": msg.name, "version": msg.version, "size": size, "files": files, "have": True}, True
        if msg.size == 0:
            raise UsageError(f"project {msg.name}: an archive of 0 bytes", "push the folder again")
        self.expire(now_mono)
        if len(self.uploads) >= MAX_UPLOADS:
            raise LimitExceeded(f"{MAX_UPLOADS} project pushes are in progress already",
                                "try again when one of them ends")
        upload_id, self.next_upload = self.next_upload, self.next_upload + 1
        path = self.store.upload_path(upload_id)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        except OSError as e:
            raise StoreError(f"cannot write {path}: {e.strerror}", "check the disk beside the ledger") from e
        self.uploads[upload_id] = Upload(upload_id, account, msg.name, msg.version, msg.size, fd, now_mono)
        return {"upload": upload_id, "chunk_bytes": CHUNK_BYTES, "window": WINDOW}, False

    def chunk(self, msg: ProjectChunk, account: bytes, by: str, now_mono: float, now: float) -> Answer:
        up = self.uploads.get(msg.upload)
        if up is None or up.account != account:
            raise ProjectNotFound(f"no project upload {msg.upload} in progress (it ended, idled past "
                                  f"{UPLOAD_IDLE_S:g} s, or the master restarted)", "push again")
        end = msg.offset + len(msg.data)
        if msg.offset != up.received or end > up.size:
            self._drop(up)
            raise UsageError(f"project {up.name}: a chunk at bytes {msg.offset}..{end} where {up.received} of "
                             f"{up.size} were expected", "push again")
        try:
            view = memoryview(msg.data)
            while view:
                view = view[os.write(up.fd, view):]
            if end - up.synced >= SYNC_EVERY_BYTES or end == up.size:
                os.fdatasync(up.fd)
                up.synced = end
        except OSError as e:
            self._drop(up)
            raise StoreError(f"cannot write project {up.name}'s archive: {e.strerror}",
                             "free disk space beside the ledger and push again") from e
        up.digest.update(msg.data)
        up.received, up.last_mono = end, now_mono
        if end < up.size:
            return {"received": end}, False
        return self._finish(up, by, now)

    def _finish(self, up: Upload, by: str, now: float) -> Answer:
        """The last chunk came: check the archive and name it by its hash; its index row commits with the turn."""
        self._drop(up, keep_file=True)
        path = self.store.upload_path(up.id)
        try:
            if up.digest.hexdigest() != up.version:
                raise UsageError(f"project {up.name}: the archive does not match its version {short(up.version)}",
                                 "push the folder again")
            files = check_archive(path, self.max_files)
            self.store.install(path, up.version)
        except (ArchiveRefused, UsageError):
            path.unlink(missing_ok=True)
            raise
        except OSError as e:
            path.unlink(missing_ok=True)
            raise StoreError(f"cannot store project {up.name}'s archive: {e.strerror}",
                             "check the disk beside the ledger and push again") from e
        self._staged_push(up.name, up.version, up.size, files, now, by)
        logger.info("project %s@%s stored: %d bytes, %d files", up.name, short(up.version), up.size, files)
        return {"name": up.name, "version": up.version, "size": up.size, "files": files, "have": False}, True

    def _staged_push(self, name: str, version: str, size: int, files: int, now: float, by: str) -> None:
        self.store.stage_push(name, version, size, files, now, by)
        self.removed.pop(version, None)
        self.dropping.pop((name, version), None)
        if self.kept is not None:
            self.kept.pushed(name, self.store.staged_now())

    def _drop(self, up: Upload, keep_file: bool = False) -> None:
        self.uploads.pop(up.id, None)
        os.close(up.fd)
        if not keep_file:
            self.store.upload_path(up.id).unlink(missing_ok=True)

    def expire(self, now_mono: float) -> None:
        """Drop uploads idle past UPLOAD_IDLE_S; delete the archives of committed removals no row names; stage
        the removal of the versions retention lets go."""
        for up in [u for u in self.uploads.values() if now_mono - u.last_mono > UPLOAD_IDLE_S]:
            logger.info("project upload %d of %s dropped: idle for %g s", up.id, up.name, UPLOAD_IDLE_S)
            self._drop(up)
        now = self.store.staged_now()
        for version in [v for v, commit in self.removed.items() if commit != now]:   # their commit is over
            del self.removed[version]
            if not self.store.is_named(version):
                self.store.drop_archive(version)
        if self.kept is not None:
            self._prune_versions()

    # ------------------------------------------------------------ list, show, remove

    def query(self, params: dict, room: int) -> list[dict]:
        """Without a name: each project with its latest version. With one: its versions, newest first, each with the
        workers that hold it (`Syncs.holders`, within `room` bytes); with a `version` too, that version alone."""
        name = params.get("name")
        if name is None:
            latest: dict[str, dict] = {}
            counts: dict[str, int] = {}
            for row in self.store.rows():
                latest[row["name"]] = row
                counts[row["name"]] = counts.get(row["name"], 0) + 1
            return [dict(row, versions=counts[n]) for n, row in sorted(latest.items())]
        rows = self.store.rows(self._name(name))
        if not rows:
            raise ProjectNotFound(f"no project {name!r}")
        if params.get("version") is not None:
            rows = [self.resolve(name, rows, params["version"])]
        rows = rows[::-1]
        return self.syncs.holders(rows, room) if self.syncs is not None else rows

    def remove(self, params: dict, pinned: Callable[[], Counter]) -> Answer:
        """Remove a project, or one version of it; refused whole if an unfinished task pins any of what it names
        (`pinned`: NAME@VERSION -> how many unfinished tasks pin it)."""
        name = self._name(params.get("name"))
        rows = self._rows(name)
        version = params.get("version")
        if version is not None:
            rows = [self.resolve(name, rows, version)]
        pins = pinned()
        held = [(row["version"], pins[f"{name}@{row['version']}"]) for row in rows]
        held = [(v, n) for v, n in held if n]
        if held:
            what = ", ".join(f"{name}@{short(v)} is pinned by {n} unfinished task{'s' if n > 1 else ''}"
                             for v, n in held)
            raise UsageError(f"project {what} (a task runs the version it pinned at submit)",
                             "cancel those tasks or let them end, then remove it")
        for row in rows:
            self._stage_remove(name, row["version"])
        return {"name": name, "removed": [row["version"] for row in rows]}, True

    def _stage_remove(self, name: str, version: str) -> None:
        self.store.stage_remove(name, version)
        self.removed[version] = self.dropping[(name, version)] = self.store.staged_now()

    # ------------------------------------------------------------ retention

    def retain(self, keep: int, pinned: Callable[[], Counter]) -> None:
        """Keep the newest `keep` versions of each name and those unfinished tasks pin (0: every version); every
        name is looked at once, at the next `expire`, then each after its push's commit."""
        self.kept = KeepVersions(keep, pinned)
        for name in {row["name"] for row in self.store.rows()}:
            self.kept.pushed(name, AT_START)

    def _prune_versions(self) -> None:
        """Stage the removal of what retention lets go of each due name (docs/architecture.md, "The master's
        store"); the archives go at a later `expire`, once the commit is over."""
        now = self.store.staged_now()
        names = self.kept.take_due(now)
        if not names:
            return
        pins = self.kept.pinned()
        # a removal staged for this turn's commit is not out of the ledger's rows yet
        staged = {pair for pair, commit in self.dropping.items() if commit == now}
        for name in sorted(names):
            rows = [row for row in self.store.rows(name) if (name, row["version"]) not in staged]
            for row in self.kept.surplus(name, rows, pins):
                self._stage_remove(name, row["version"])
                logger.info("project %s@%s pruned: older than its newest %d versions and pinned by no unfinished "
                            "task", name, short(row["version"]), self.kept.keep)

    def pin(self, ref: str) -> str:
        """A task's `project` (NAME or NAME@VERSION, checked by spec_limits.project) as NAME@<full version>: the
        version named, or without one the latest now (docs/architecture.md, Projects, "Pinning at submit")."""
        name, _, version = ref.partition("@")
        rows = self._rows(name)
        return f"{name}@{(self.resolve(name, rows, version) if version else rows[-1])['version']}"

    def _rows(self, name: str) -> list[dict]:
        """The name's committed rows, oldest push first, without those a removal of this turn deletes."""
        now = self.store.staged_now()
        self.dropping = {pair: turn for pair, turn in self.dropping.items() if turn == now}   # the others are over
        rows = [row for row in self.store.rows(name) if (name, row["version"]) not in self.dropping]
        if not rows:
            raise ProjectNotFound(f"no project {name!r} on the master", "`projects list` lists the projects it holds")
        return rows

    @staticmethod
    def resolve(name: str, rows: list[dict], version: Any) -> dict:
        """The one row of `rows` whose version is `version` or starts with it (at least 6 digits)."""
        if not isinstance(version, str) or not _VERSION_PREFIX.fullmatch(version):
            raise UsageError(f"version {str(version)[:80]!r} of project {name} is not 6-64 hex digits",
                             "give the version as projects show lists it")
        found = [row for row in rows if row["version"].startswith(version)]
        if len(found) != 1:
            if found:
                raise UsageError(f"version {version} of project {name} matches several versions",
                                 "type more of the version")
            raise ProjectNotFound(f"project {name} has no version {version!r}",
                                  f"`projects show {name}` lists its versions")
        return found[0]

    @staticmethod
    def name_of(name: Any) -> str:
        """`name` if it is a project name, else UsageError."""
        return Projects._name(name)

    @staticmethod
    def _name(name: Any) -> str:
        if not isinstance(name, str) or not _PROJECT.fullmatch(name):
            raise UsageError(f"project name {str(name)[:80]!r} is not allowed",
                             "a name is 1-64 of A-Z a-z 0-9 _ . - starting with a letter or digit")
        return name
