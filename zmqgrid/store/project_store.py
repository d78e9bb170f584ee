"""Project archives beside the ledger (<db_path>.projects/<version>.tar) and their index, the ledger's `projects`
table: reads straight from the ledger, index writes staged into the turn's one commit (docs/architecture.md,
Projects, "The master's store")."""
from __future__ import annotations

import logging
import os
from pathlib import Path

from .task_store import TaskStore

logger = logging.getLogger(__name__)
_COLUMNS = "name, version, size, files, pushed_at, pushed_by"
_UPSERT = (f"INSERT INTO projects ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(name, version) DO UPDATE SET "
           "pushed_at=excluded.pushed_at, pushed_by=excluded.pushed_by")
_DELETE = "DELETE FROM projects WHERE name = ? AND version = ?"
ARCHIVE_SUFFIX = ".tar"
UPLOAD_PREFIX = "upload-"


def folder_of(db_path: str) -> Path:
    return Path(f"{db_path}.projects")


def _sync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ProjectStore:
    """The archives' folder and the index. At start, uploads a crash cut short and archives no row names go."""

    def __init__(self, store: TaskStore, folder: Path) -> None:
        self.store, self.folder = store, folder
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        named = {row["version"] for row in store.db.query("SELECT DISTINCT version FROM projects")}
        for path in folder.iterdir():
            stale = path.name.startswith(UPLOAD_PREFIX) or (
                path.suffix == ARCHIVE_SUFFIX and path.stem not in named)
            if stale:
                logger.info("removing %s: no project names it", path)
                path.unlink(missing_ok=True)

    # ------------------------------------------------------------ reads

    def rows(self, name: str | None = None) -> list[dict]:
        """Every row (oldest push first), or those of one name."""
        if name is None:
            return list(self.store.db.query(f"SELECT {_COLUMNS} FROM projects ORDER BY pushed_at, name"))
        return list(self.store.db.query(f"SELECT {_COLUMNS} FROM projects WHERE name = ? ORDER BY pushed_at",
                                        (name,)))

    def row_of_version(self, version: str) -> dict | None:
        """Any row naming `version` (its size and file count are the archive's)."""
        return next(iter(self.store.db.query(f"SELECT {_COLUMNS} FROM projects WHERE version = ? LIMIT 1",
                                             (version,))), None)

    def staged_now(self) -> int:
        """Which commit changes staged now go with (TaskStore.commits): a removal staged with another is over."""
        return self.store.commits

    def is_named(self, version: str) -> bool:
        return self.row_of_version(version) is not None

    # ------------------------------------------------------------ archives

    def archive(self, version: str) -> Path:
        return self.folder / f"{version}{ARCHIVE_SUFFIX}"

    def upload_path(self, upload: int) -> Path:
        return self.folder / f"{UPLOAD_PREFIX}{upload}.part"

    def install(self, upload: Path, version: str) -> Path:
        """Name a synced, checked upload as the archive of `version` (durable once this returns)."""
        target = self.archive(version)
        os.replace(upload, target)
        _sync_folder(self.folder)
        return target

    def drop_archive(self, version: str) -> None:
        self.archive(version).unlink(missing_ok=True)

    # ------------------------------------------------------------ staged writes

    def stage_push(self, name: str, version: str, size: int, files: int, now: float, by: str) -> None:
        self.store.stage(_UPSERT, (name, version, size, files, now, by))

    def stage_remove(self, name: str, version: str) -> None:
        self.store.stage(_DELETE, (name, version))
