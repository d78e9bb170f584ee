"""The client's side of a push: pack the folder, offer it by version, send its chunks with a bounded window
(docs/architecture.md, Projects, "Push")."""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import from_wire
from ..protocol import Error, Reply
from .messages import ProjectChunk, ProjectPush
from .pack import pack

if TYPE_CHECKING:
    from ..client import Client


def push_project(client: Client, folder: str | os.PathLike, name: str | None = None) -> dict:
    """Push `folder` as project `name` (default: the folder's name). Returns the master's answer with `sent_bytes`:
    0 when the master held that version already."""
    name = name or Path(folder).resolve().name
    packed = pack(folder)
    try:
        answer = client.request(ProjectPush, name, packed.version, packed.size, packed.files, about="project")
        if answer.get("have"):
            return dict(answer, sent_bytes=0)
        with open(packed.path, "rb") as f:
            answer = _send_chunks(client, f, answer["upload"], answer["chunk_bytes"], answer["window"], packed.size)
        return dict(answer, sent_bytes=packed.size)
    finally:
        packed.path.unlink(missing_ok=True)


def _send_chunks(client: Client, f, upload: int, chunk_bytes: int, window: int, size: int) -> dict:
    """Send the archive in chunks, at most `window` unanswered; the answer to the last is the push's."""
    pending: set[int] = set()
    offset, final = 0, None
    while final is None:
        while offset < size and len(pending) < max(1, window):
            data = f.read(chunk_bytes)
            req_id = next(client._req_ids)
            client._send(ProjectChunk(req_id, upload, offset, data))
            pending.add(req_id)
            offset += len(data)
        msg = client._receive(client.timeout_s)
        if msg is None:
            raise client._unanswered(f"did not answer a chunk of the push within {client.timeout_s:g}s",
                                     "; pushing again is safe")
        if isinstance(msg, Error) and (msg.req_id in pending or msg.req_id == 0):
            raise from_wire(msg.code, msg.message, "project")
        if isinstance(msg, Reply) and msg.req_id in pending:
            pending.discard(msg.req_id)
            if "version" in msg.data:
                final = msg.data
    return final
