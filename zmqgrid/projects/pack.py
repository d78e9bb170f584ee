"""Pack a folder into a project's normalised archive (docs/architecture.md, Projects, "The archive and its
version"): the same files give the same bytes, so the archive's sha256 is the project's version."""
from __future__ import annotations

import fnmatch
import os
import stat
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError
from .archive import sha256_of

IGNORE_FILE = ".zmqgridignore"
ALWAYS_IGNORED = (".git", "__pycache__", "*.pyc")


@dataclass(frozen=True)
class Packed:
    """An archive written to a temporary file (the caller deletes it), with its version and counts."""

    path: Path
    version: str
    size: int
    files: int


class Ignore:
    """The patterns of ALWAYS_IGNORED and a root's .zmqgridignore: each matched against a relative path and a name;
    a pattern ending in `/` matches folders only."""

    def __init__(self, root: Path) -> None:
        lines = list(ALWAYS_IGNORED)
        ignore_file = root / IGNORE_FILE
        if ignore_file.is_file():
            lines += ignore_file.read_text(encoding="utf-8", errors="replace").splitlines()
        self.patterns = [(line.strip().rstrip("/"), line.strip().endswith("/")) for line in lines
                         if line.strip() and not line.strip().startswith("#")]

    def __call__(self, relative: str, is_dir: bool) -> bool:
        name = relative.rsplit("/", 1)[-1]
        return any((is_dir or not dirs_only) and (fnmatch.fnmatchcase(relative, pattern)
                                                  or fnmatch.fnmatchcase(name, pattern))
                   for pattern, dirs_only in self.patterns)


def collect(folder: str | os.PathLike) -> list[tuple[str, Path]]:
    """(archive name, file to read) of every file to pack, sorted by name; UsageError for a missing folder, a
    link out of it, or nothing to pack."""
    root = Path(folder)
    if not root.exists():
        raise UsageError(f"project folder {folder} does not exist", "give the path of the folder to push")
    if not root.is_dir():
        raise UsageError(f"{folder} is not a folder", "give the path of the folder to push")
    real_root = root.resolve()
    ignore = Ignore(root)
    found: dict[str, Path] = {}

    def walk(path: Path, relative: str, chain: tuple[Path, ...]) -> None:
        for entry in sorted(os.scandir(path), key=lambda e: e.name):
            rel = f"{relative}{entry.name}"
            target = Path(entry.path)
            if entry.is_symlink():
                target = target.resolve()
                if not target.exists() or not target.is_relative_to(real_root):
                    raise UsageError(f"{root / rel} is a link out of the project folder (to {os.readlink(entry.path)})",
                                     f"replace it with what it points to, or list it in {IGNORE_FILE}")
            is_dir = target.is_dir()
            if ignore(rel, is_dir) or (is_dir and (target / "pyvenv.cfg").exists()):
                continue
            if is_dir:
                real = target.resolve()
                if real in chain:
                    raise UsageError(f"{root / rel} links back to a folder that holds it",
                                     f"remove the link, or list it in {IGNORE_FILE}")
                walk(target, rel + "/", (*chain, real))
            elif stat.S_ISREG(target.stat().st_mode):
                found[rel] = target
            else:
                raise UsageError(f"{root / rel} is neither a file nor a folder", f"list it in {IGNORE_FILE}")

    walk(root, "", (real_root,))
    if not found:
        raise UsageError(f"project folder {folder} has nothing to pack (it is empty, or all it holds is ignored)",
                         "give the folder that holds the project's files")
    return sorted(found.items())


def pack(folder: str | os.PathLike, into: str | os.PathLike | None = None) -> Packed:
    """Write the folder's normalised archive to a temporary file (in `into`, default the system's)."""
    entries = collect(folder)
    handle, name = tempfile.mkstemp(prefix="zmqgrid-project-", suffix=".tar", dir=into)
    path = Path(name)
    try:
        with os.fdopen(handle, "wb") as out, tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for rel, source in entries:
                info = tarfile.TarInfo(rel)
                with open(source, "rb") as f:
                    st = os.fstat(f.fileno())
                    info.size = st.st_size
                    info.mode = 0o755 if st.st_mode & stat.S_IXUSR else 0o644
                    info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
                    tar.addfile(info, f)
        return Packed(path, sha256_of(path), path.stat().st_size, len(entries))
    except BaseException:
        path.unlink(missing_ok=True)
        raise
