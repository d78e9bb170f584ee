"""A project archive's form and its checks (docs/architecture.md, Projects, "What an archive may hold"): the master
runs `check_archive` when a push ends and a worker again before it unpacks, so neither trusts the sender."""
from __future__ import annotations

import hashlib
import re
import tarfile
from pathlib import Path
from typing import BinaryIO

from ..errors import UsageError

MAX_NAME_CHARS = 4096
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_FILE_TYPES = (tarfile.REGTYPE, tarfile.AREGTYPE)
_WHAT = {tarfile.SYMTYPE: "a symbolic link", tarfile.LNKTYPE: "a hard link", tarfile.CHRTYPE: "a character device",
         tarfile.BLKTYPE: "a block device", tarfile.FIFOTYPE: "a FIFO"}
READ_BYTES = 1 << 20


class ArchiveRefused(UsageError):
    """Raised when a project archive holds a member it may not: a path out of its root, a link, a device, too many
    files, or when it is no tar archive at all. The text names the member and the rule."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(READ_BYTES):
            digest.update(block)
    return digest.hexdigest()


def check_name(name: str) -> str | None:
    """Why a member's name may not be unpacked under a root, or None when it may."""
    if not name:
        return "an empty name"
    if len(name) > MAX_NAME_CHARS:
        return f"a name of {len(name)} characters (at most {MAX_NAME_CHARS})"
    if _CONTROL.search(name):
        return "a control character in its name"
    if name.startswith("/") or "\\" in name or re.match(r"[A-Za-z]:", name):
        return "an absolute path"
    parts = name.rstrip("/").split("/") if name.endswith("/") else name.split("/")
    if ".." in parts:
        return "'..' in its path"
    if any(part in ("", ".") for part in parts):
        return "an empty or '.' part in its path"
    return None


def check_archive(source: Path | BinaryIO, max_files: int) -> int:
    """The number of files of a valid archive; ArchiveRefused naming the first member that is not allowed."""
    with open_archive(source) as tar:
        return sum(member.type in _FILE_TYPES for member in checked_members(tar, max_files))


def open_archive(source: Path | BinaryIO) -> tarfile.TarFile:
    """The archive opened for reading, or ArchiveRefused when it is no uncompressed tar archive."""
    try:
        return tarfile.open(source, "r:") if isinstance(source, Path) else tarfile.open(fileobj=source, mode="r:")
    except (tarfile.TarError, OSError) as e:
        raise ArchiveRefused(f"the project archive is not an uncompressed tar archive ({e})",
                             "push the folder with: python main.py projects push FOLDER") from None


def checked_members(tar: tarfile.TarFile, max_files: int) -> list[tarfile.TarInfo]:
    """Every member of an open archive, once all of them are checked (a worker unpacks from this list, reading the
    headers once); ArchiveRefused naming the first member that is not allowed."""
    members: list[tarfile.TarInfo] = []
    files, seen = 0, set()
    try:
        for member in tar:
            shown = repr(member.name[:200])
            why = check_name(member.name)
            if why is None and member.type not in _FILE_TYPES and member.type != tarfile.DIRTYPE:
                why = _WHAT.get(member.type, f"a member of tar type {member.type!r}")
            if why is None and member.mode & 0o7000:
                why = "a setuid, setgid or sticky mode"
            key = member.name.rstrip("/")
            if why is None and key in seen:
                why = "a name that is there twice"
            if why is not None:
                raise ArchiveRefused(f"project archive member {shown} is refused: {why}",
                                     "a project holds only regular files and folders inside its root")
            seen.add(key)
            members.append(member)
            if member.type in _FILE_TYPES:
                files += 1
                if files > max_files:
                    raise ArchiveRefused("the project archive holds more files than max_project_files "
                                         f"({max_files:,}) allows",
                                         "leave files out with .zmqgridignore or raise max_project_files")
    except tarfile.TarError as e:
        raise ArchiveRefused(f"the project archive is damaged ({e})", "push the folder again") from None
    return members
