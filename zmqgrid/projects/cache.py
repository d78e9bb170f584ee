"""A worker's copies of project versions (docs/architecture.md, Projects, "The worker's cache"): a downloaded
archive is checked (its hash, then its members) and unpacked into a fresh folder renamed into place, with a
manifest beside it that is checked at the first use after a start; least recently used copies go past a budget.
Blocking file work only: the worker runs it in a thread of its own.

Making a copy reads the archive as little as it can, since a cold task waits for it: the hash is the download's
when it hashed the bytes as they came (fetch.Download.sha256), the headers are read once (checked, all of them,
before the first file is written) and each file's bytes once (written and hashed for the manifest together)."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tarfile
from pathlib import Path
from typing import BinaryIO

from .archive import READ_BYTES, ArchiveRefused, checked_members, open_archive, sha256_of

logger = logging.getLogger(__name__)
MAX_FILES = 1 << 24   # what the master's max_project_files may be at most: the master has checked its own limit
PART, MANIFEST, USED, TMP = ".part", ".manifest", ".used", ".tmp-"
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)   # Windows: no newline translation


class Damaged(Exception):
    """Raised when a downloaded archive or a cached copy is not what its version says; the text says how."""


class ProjectCache:
    """The folder `root`: `<version>/` copies, `<version>.manifest`, `<version>.used`, `<version>.part` downloads."""

    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root, self.max_bytes = root, max_bytes

    def part(self, version: str) -> Path:
        return self.root / (version + PART)

    def copy(self, version: str) -> Path:
        return self.root / version

    def has_copy(self, version: str) -> bool:
        return self.copy(version).is_dir() and (self.root / (version + MANIFEST)).is_file()

    def clean(self) -> None:
        """At start: what a killed worker left half done (downloads, unpacking folders, a manifest whose copy never
        got its name) goes."""
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        for path in self.root.iterdir():
            if path.name.endswith(PART) or TMP in path.name:
                logger.info("removing %s: left by a worker that stopped mid-way", path)
                self._remove(path)
            elif path.name.endswith((MANIFEST, USED)) and not self.copy(path.name.rpartition(".")[0]).is_dir():
                path.unlink(missing_ok=True)
            elif path.is_dir() and not (self.root / (path.name + MANIFEST)).is_file():
                logger.info("removing %s: a copy without its manifest", path)
                self._remove(path)

    def verify(self, version: str) -> None:
        """Raise Damaged naming the first file of the copy that is missing or changed."""
        try:
            manifest = json.loads((self.root / (version + MANIFEST)).read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise Damaged(f"its manifest cannot be read ({e})") from None
        copy = self.copy(version)
        for rel, (size, digest) in manifest["files"].items():
            path = copy / rel
            try:
                if path.is_symlink() or path.stat().st_size != size or sha256_of(path) != digest:
                    raise Damaged(f"{rel} changed")
            except OSError:
                raise Damaged(f"{rel} is missing") from None

    def install(self, version: str, sha256: str | None = None) -> None:
        """The downloaded `<version>.part` becomes the copy `<version>/`, or Damaged (the part is deleted).
        `sha256`: the part's hash as its download computed it over the bytes it wrote (None: read it here)."""
        part = self.part(version)
        tmp, manifest = self.root / f"{version}{TMP}{os.getpid()}", self.root / (version + MANIFEST)
        try:
            if (sha256 or sha256_of(part)) != version:
                raise Damaged("the archive downloaded does not match its version")
            self._remove(tmp)
            files = _unpack(part, tmp)
            manifest.write_text(json.dumps({"version": version, "files": files}), encoding="utf-8")
            self._remove(self.copy(version))
            os.replace(tmp, self.copy(version))
        except ArchiveRefused as e:
            raise Damaged(str(e)) from None
        except BaseException:
            # A full or failing disk: what was half-written goes now, not at the next start (it holds the space
            # another version needs)
            self._remove(tmp)
            if not self.copy(version).is_dir():
                manifest.unlink(missing_ok=True)
            raise
        finally:
            part.unlink(missing_ok=True)

    def delete(self, version: str) -> None:
        for path in (self.copy(version), self.root / (version + MANIFEST), self.root / (version + USED)):
            self._remove(path)

    def touch(self, version: str) -> None:
        """Mark the copy used now (what pruning orders by)."""
        (self.root / (version + USED)).touch()

    def size_of(self, version: str) -> int:
        try:
            manifest = json.loads((self.root / (version + MANIFEST)).read_text(encoding="utf-8"))
            return sum(size for size, _ in manifest["files"].values())
        except (OSError, ValueError, KeyError, TypeError):
            return 0

    def prune(self, in_use: set[str]) -> list[str]:
        """Delete least recently used copies while the copies together are over the budget; never one in use."""
        copies = [p.name for p in self.root.iterdir() if p.is_dir() and TMP not in p.name]
        sizes = {v: self.size_of(v) for v in copies}
        total = sum(sizes.values())

        def used(version: str) -> float:
            try:
                return (self.root / (version + USED)).stat().st_mtime
            except OSError:
                return 0.0

        deleted = []
        for version in sorted(copies, key=used):
            if total <= self.max_bytes:
                break
            if version in in_use:
                continue
            self.delete(version)
            total -= sizes[version]
            deleted.append(version)
        return deleted

    @staticmethod
    def _remove(path: Path) -> None:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        elif path.exists() or path.is_symlink():
            path.unlink(missing_ok=True)


def _unpack(archive: Path, into: Path) -> dict[str, list]:
    """Check every member of the archive (the master is not trusted with this worker's disk), then write its files
    under `into`, each 0644 or 0755; their manifest: path -> [size, sha256]."""
    with open(archive, "rb") as f, open_archive(f) as tar:
        members = checked_members(tar, MAX_FILES)
        into.mkdir(mode=0o700)
        base, made = str(into), {""}   # folders made so far: one makedirs per folder, not one per file
        files: dict[str, list] = {}
        for member in members:
            name = member.name.rstrip("/")
            folder = name if member.isdir() else name.rpartition("/")[0]
            if folder not in made:
                os.makedirs(os.path.join(base, folder), exist_ok=True)
                while folder not in made:
                    made.add(folder)
                    folder = folder.rpartition("/")[0]
            if not member.isdir():
                mode = 0o755 if member.mode & 0o100 else 0o644
                files[member.name] = [member.size, _write(f, member, os.path.join(base, name), mode)]
    return files


def _write(archive: BinaryIO, member: tarfile.TarInfo, path: str, mode: int) -> str:
    """Copy a member's bytes from the archive to a new file at `path`; their sha256."""
    digest = hashlib.sha256()
    archive.seek(member.offset_data)
    left = member.size
    fd = os.open(path, _CREATE, mode)
    try:
        while left:
            block = archive.read(min(left, READ_BYTES))
            if not block:
                raise Damaged(f"the archive ends inside {member.name[:200]!r}")
            digest.update(block)
            view = memoryview(block)
            while view:
                view = view[os.write(fd, view):]
            left -= len(block)
    finally:
        os.close(fd)
    return digest.hexdigest()
