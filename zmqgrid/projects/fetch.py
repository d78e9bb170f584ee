"""One download of a project version's archive from the master (docs/architecture.md, Projects, "Fetch"): `G`
requests of 1 MiB (less for a worker whose max_message_bytes is below 2 MiB), at most WINDOW unanswered (the
first alone: its answer tells the size), each `Y` written at its offset into `<version>.part`. It knows no socket:
what to send goes to `send`.

The answers of one master to one DEALER come in the order asked, so the download hashes each chunk as it writes it
and the copy need not read the archive again for its hash (ProjectCache.install). One answer out of order (a
request asked again after a master restart) ends that: the copy then hashes the file."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Callable, Iterator

from .messages import CHUNK_BYTES, ProjectData, ProjectFetch

WINDOW = 4             # requests unanswered at once
ASK_AGAIN_S = 10.0     # a request unanswered this long is sent again (a master restart may have lost it)


class BadData(Exception):
    """Raised when a `Y` contradicts the download (another size, a chunk of the wrong length)."""


class Download:
    """`pump` sends what the window allows, `take` writes an answer; `done` once every byte came."""

    def __init__(self, version: str, path: Path, req_ids: Iterator[int], send: Callable[[ProjectFetch], None],
                 chunk_bytes: int = CHUNK_BYTES) -> None:
        self.version, self.path = version, path
        self.chunk_bytes = max(1, min(chunk_bytes, CHUNK_BYTES))
        self._req_ids, self._send = req_ids, send
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0), 0o600)
        self.size: int | None = None
        self.next_offset = 0
        self.received = 0
        self._digest: hashlib._Hash | None = hashlib.sha256()   # of the bytes written from 0 on, while in order
        self._hashed = 0
        self.pending: dict[int, tuple[int, float]] = {}   # req_id -> (offset, when sent)

    @property
    def done(self) -> bool:
        return self.size is not None and self.received >= self.size

    @property
    def sha256(self) -> str | None:
        """The hash of the bytes written, when every chunk came in order; None: the file must be read for it."""
        if self._digest is None or not self.done or self._hashed != self.size:
            return None
        return self._digest.hexdigest()

    def pump(self, now: float) -> None:
        """Ask for the next chunks while the window has room (one at a time until the size is known)."""
        room = (1 if self.size is None else WINDOW) - len(self.pending)
        while room > 0 and (self.size is None and self.next_offset == 0 or
                            self.size is not None and self.next_offset < self.size):
            self._ask(next(self._req_ids), self.next_offset, now)
            self.next_offset += self.chunk_bytes
            room -= 1

    def _ask(self, req_id: int, offset: int, now: float) -> None:
        self.pending[req_id] = (offset, now)
        self._send(ProjectFetch(req_id, self.version, offset, self.chunk_bytes))

    def ask_again(self, now: float, all_of_them: bool = False) -> None:
        """Send again the requests unanswered for ASK_AGAIN_S (or all: after registering with a master anew)."""
        for req_id, (offset, sent) in list(self.pending.items()):
            if all_of_them or now - sent >= ASK_AGAIN_S:
                self._ask(req_id, offset, now)

    def take(self, msg: ProjectData) -> None:
        """Write an answer; raise BadData when it contradicts the download."""
        offset, _ = self.pending.pop(msg.req_id)
        if msg.offset != offset or (self.size is not None and msg.size != self.size) or msg.size <= offset:
            raise BadData(f"an answer for bytes {msg.offset} of {msg.size} where {offset} of "
                          f"{self.size if self.size is not None else 'any'} was asked")
        expected = min(self.chunk_bytes, msg.size - offset)
        if len(msg.data) != expected:
            raise BadData(f"{len(msg.data)} bytes at {offset} where {expected} were due")
        self.size = msg.size
        _write_at(self.fd, msg.data, offset)
        self.received += len(msg.data)
        if self._digest is not None and offset == self._hashed:
            self._digest.update(msg.data)   # under a millisecond a MiB (SHA extensions: 0.7 ms here)
            self._hashed += len(msg.data)
        else:
            self._digest = None

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _write_at(fd: int, data: bytes, offset: int) -> None:
    """All of `data` at `offset` (pwrite; Windows has none: seek and write, the loop being the file's one writer)."""
    view = memoryview(data)
    while view:
        at = offset + len(data) - len(view)
        if hasattr(os, "pwrite"):
            view = view[os.pwrite(fd, view, at):]
        else:
            os.lseek(fd, at, os.SEEK_SET)
            view = view[os.write(fd, view):]
