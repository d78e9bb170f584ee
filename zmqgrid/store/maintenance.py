"""Operating the ledger file: a consistent copy of it while the master runs, and its integrity check."""
from __future__ import annotations

import os
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..errors import StoreError
from .schema import connect_read_only

SQLITE_HEADER = b"SQLite format 3\x00"
STEP_PAGES = 1024   # pages copied per backup step (4 MiB of 4 KiB pages): one progress report each
WAL_SYNC_EVERY_S = 1.0   # while a backup holds its snapshot, it syncs the ledger's WAL this often (see _copy)


class BackupFailed(StoreError):
    """Raised when a backup cannot be read from the ledger, or the copy fails its check: the ledger itself may be
    damaged (`check` tells)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "check the ledger's integrity")


@dataclass
class BackupResult:
    """What `backup` wrote: the copy's path, its size in pages and bytes, the tasks it holds, the seconds taken."""

    source: str
    path: str
    pages: int
    bytes: int
    tasks: int
    seconds: float


@dataclass
class CheckResult:
    """The outcome of `check`: ok, or the first problems SQLite reported (at most the number asked for)."""

    path: str
    check: str                     # "integrity_check" or "quick_check"
    ok: bool
    problems: list[str] = field(default_factory=list)


def backup(source: str | os.PathLike, dest: str | os.PathLike, *, force: bool = False, step_pages: int = STEP_PAGES,
           progress: Callable[[int, int], None] | None = None) -> BackupResult:
    """Copy the ledger at `source` to `dest` with SQLite's online backup API, consistent as of the moment it starts.

    The master keeps committing meanwhile: the copy is read inside one read transaction, so in WAL mode it sees one
    snapshot (every commit before it began, none after) and never restarts, however busy the master is. The copy is
    written beside `dest`, checked (quick_check), synced to disk and only then moved into place, so `dest` is either
    absent, the old file, or a whole checked copy. `progress(copied_pages, total_pages)` is called after each step.
    """
    source, dest = Path(source), Path(dest)
    _require_ledger(source)
    if dest.resolve() == source.resolve():
        raise StoreError(f"{dest} is the ledger itself", "give the backup another path")
    if dest.exists() and not force:
        raise StoreError(f"{dest} already exists", "choose another path, or pass --force to replace it")
    if dest.is_dir():
        raise StoreError(f"{dest} is a directory", "give a file path for the backup")
    if not dest.parent.is_dir():
        raise StoreError(f"directory {dest.parent} does not exist", "create it first or choose another path")
    partial = dest.with_name(f".{dest.name}.partial-{os.getpid()}")
    started = time.monotonic()
    try:
        pages = _copy(source, partial, step_pages, progress)
        tasks = _verify(partial)
        _sync(partial)
        if force:
            os.replace(partial, dest)
        else:
            os.link(partial, dest)   # fails if dest appeared meanwhile: never overwritten without --force
            partial.unlink()
        _sync(dest.parent)
    except FileExistsError:
        raise StoreError(f"{dest} already exists", "choose another path, or pass --force to replace it") from None
    except OSError as e:
        raise StoreError(f"cannot write the backup {dest}: {e.strerror or e}", "check the path and free space") from e
    finally:
        for leftover in (partial, Path(f"{partial}-journal"), Path(f"{partial}-wal"), Path(f"{partial}-shm")):
            leftover.unlink(missing_ok=True)
    return BackupResult(str(source), str(dest), pages, dest.stat().st_size, tasks,
                        round(time.monotonic() - started, 3))


def _copy(source: Path, partial: Path, step_pages: int, progress: Callable[[int, int], None] | None) -> int:
    # Owner-only like the ledger: task specs and output may hold secrets.
    os.close(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
    # A plain connection (not mode=ro): a read-only one cannot open a WAL ledger whose -shm is absent. It only reads.
    src = sqlite3.connect(source, isolation_level=None)
    dst = sqlite3.connect(partial)
    copied, synced = [0], [time.monotonic()]

    def report(_status: int, remaining: int, total: int) -> None:
        copied[0] = total
        if time.monotonic() - synced[0] >= WAL_SYNC_EVERY_S:
            synced[0] = time.monotonic()
            _sync_wal(source)
        if progress is not None:
            progress(total - remaining, total)

    try:
        src.execute("PRAGMA query_only=1")
        src.execute("PRAGMA busy_timeout=5000")
        # The snapshot: held until the last page is copied, so the copy never restarts on the master's commits.
        src.execute("BEGIN")
        tables = {row[0] for row in src.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "tasks" not in tables:
            raise StoreError(f"{source} is not a zmqgrid ledger (it has no tasks table)",
                             "point --db at the master's ledger")
        src.backup(dst, pages=step_pages, progress=report)
        src.execute("COMMIT")
        # The copy is one self-contained file: no -wal to carry along or forget when it is moved or restored.
        dst.execute("PRAGMA journal_mode=DELETE").fetchone()
    except sqlite3.DatabaseError as e:
        raise BackupFailed(f"backup of {source} failed: {e}") from e
    finally:
        dst.close()
        src.close()
    return copied[0]


def _sync_wal(source: Path) -> None:
    """With durability normal the master's commits reach the disk when its checkpointer syncs the WAL, and a
    checkpoint cannot pass the snapshot this backup holds: a long backup would widen what a power cut can take.
    So the backup syncs the WAL itself meanwhile (an fsync of any descriptor flushes the file). Best effort."""
    try:
        fd = os.open(f"{source}-wal", os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:   # e.g. Windows, which syncs only a handle opened for writing
        pass
    finally:
        os.close(fd)


def _verify(path: Path) -> int:
    conn = connect_read_only(path)
    try:
        ok = conn.execute("PRAGMA quick_check(1)").fetchone()[0]
        if ok != "ok":
            raise BackupFailed(f"the backup failed its check ({ok}); nothing was written")
        return conn.execute("SELECT count(*) FROM tasks").fetchone()[0]
    except sqlite3.DatabaseError as e:
        raise BackupFailed(f"the backup cannot be read back ({e}); nothing was written") from e
    finally:
        conn.close()


def _sync(path: Path) -> None:
    """fsync a file, or a directory (so a rename in it is on the disk); directories cannot be opened on Windows."""
    if path.is_dir() and os.name == "nt":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def check(path: str | os.PathLike, *, quick: bool = False, max_problems: int = 10) -> CheckResult:
    """Run PRAGMA integrity_check (or quick_check) on the ledger over a read-only connection.

    Safe while the master runs: it reads one snapshot and writes nothing. A file SQLite cannot read at all is a
    failed check with that one problem, not an error."""
    path = Path(path)
    _require_file(path)
    pragma = "quick_check" if quick else "integrity_check"
    result = CheckResult(str(path), pragma, ok=False)
    with open(path, "rb") as f:
        header = f.read(len(SQLITE_HEADER))
    if header != SQLITE_HEADER:
        result.problems = ["not an SQLite database (its first bytes are not the SQLite header)"]
        return result
    try:
        conn = connect_read_only(path)
        try:
            rows = [row[0] for row in conn.execute(f"PRAGMA {pragma}({int(max_problems)})")]
        finally:
            conn.close()
    except sqlite3.DatabaseError as e:
        result.problems = [str(e)]
        return result
    result.ok = rows == ["ok"]
    # SQLite may give several problems in one row, one a line, under a "*** in database main ***" heading.
    lines = [line for row in rows for line in str(row).splitlines() if line and not line.startswith("*** in database")]
    result.problems = [] if result.ok else lines[:max_problems]
    return result


def _require_file(path: Path) -> None:
    if not path.is_file():
        raise StoreError(f"no ledger at {path}", "pass the master's --db, or run this on the master's machine")
    if not os.access(path, os.R_OK):
        raise StoreError(f"ledger {path} is not readable by this user", "run it as the master's user")


def _require_ledger(path: Path) -> None:
    _require_file(path)
    with open(path, "rb") as f:
        if f.read(len(SQLITE_HEADER)) != SQLITE_HEADER:
            raise StoreError(f"{path} is not an SQLite file", "point --db at the master's ledger")
