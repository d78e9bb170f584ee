"""The wire messages of a project push (docs/architecture.md, Projects, "Messages"), declared in protocol's schema
style; importing this module registers their kinds with `protocol.decode` (the master, the client and the tests
import it)."""
from __future__ import annotations

from typing import Any

from ..fields import Bad, Int, Spec, Text
from ..protocol import INT64, Message, message
from ..spec_limits import PROJECT_PATTERN

CHUNK_BYTES = 1 << 20          # the most data one chunk carries
MAX_ARCHIVE_BYTES = 1 << 40    # what the schema takes; the master's max_project_mb is far below
VERSION_PATTERN = r"[0-9a-f]{64}"
# What a worker that runs projects carries in Register.tags; a task that names a project requires it (master
# entries.Requirement), so a worker that does not run projects is never sent one. A configured tag cannot hold a
# space (config's tags), so only a worker that does advertises it.
RUNS_PROJECTS_TAG = "runs projects"


class Bytes(Spec):
    """Binary data (msgpack bin) of at most max_len bytes: a chunk of a project's archive."""

    def __init__(self, max_len: int, nullable: bool = False) -> None:
        self.max_len, self.min_len, self.nullable = max_len, 0, nullable

    def check(self, value: Any) -> Any:
        if (type(value) is bytes and len(value) <= self.max_len) or (value is None and self.nullable):
            return value
        raise Bad(self.describe(), value)

    def describe(self) -> str:
        return f"bytes of at most {self.max_len}{self._null()}"


PROJECT = Text(64, 1, pattern=PROJECT_PATTERN, what="a project name: 1-64 of A-Z a-z 0-9 _ . - (a letter or digit first)")
VERSION = Text(64, 64, pattern=VERSION_PATTERN, what="a version: the archive's sha256, 64 hex digits")
SIZE = Int(0, MAX_ARCHIVE_BYTES)
CHUNK = Bytes(CHUNK_BYTES)


@message("P")
class ProjectPush(Message):
    """Client -> master: I hold this archive of `size` bytes and `files` files; answered `have` or an upload id."""
    SCHEMA = {"req_id": INT64, "name": PROJECT, "version": VERSION, "size": SIZE, "files": Int(0, 1 << 31)}
    req_id: int
    name: str
    version: str   # the sha256 of the archive
    size: int
    files: int


@message("U")
class ProjectChunk(Message):
    """Client -> master: the archive's bytes from `offset`; the chunk that completes it is answered after the
    commit that holds the archive's index."""
    SCHEMA = {"req_id": INT64, "upload": Int(1), "offset": SIZE, "data": CHUNK}
    req_id: int
    upload: int
    offset: int
    data: bytes


@message("G")
class ProjectFetch(Message):
    """Worker -> master: `length` bytes of a version's archive from `offset`; answered `Y`, or `E` (forbidden: no
    task dispatched to this device pins it; not_found: the master has no such archive)."""
    SCHEMA = {"req_id": INT64, "version": VERSION, "offset": SIZE, "length": Int(1, CHUNK_BYTES)}
    req_id: int
    version: str
    offset: int
    length: int


@message("Y")
class ProjectData(Message):
    """Master -> worker: the archive's bytes from `offset` (fewer than asked at its end), and its whole size."""
    SCHEMA = {"req_id": INT64, "version": VERSION, "offset": SIZE, "size": SIZE, "data": CHUNK}
    req_id: int
    version: str
    offset: int
    size: int
    data: bytes
