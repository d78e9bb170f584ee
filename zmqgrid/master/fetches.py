"""The master's side of a worker's project fetch (docs/architecture.md, Projects, "Fetch"): which `G` requests may
be answered, and serving the allowed ones a few a turn, so reading archives never holds the loop for long."""
from __future__ import annotations

import logging
import os
from collections import deque
from pathlib import Path
from typing import Callable

from ..errors import LimitExceeded, ProjectNotFound, UsageError
from ..projects.messages import ProjectData, ProjectFetch
from .entries import DeviceEntry, TaskEntry

logger = logging.getLogger(__name__)
CHUNKS_PER_TURN = 8       # one pread each: under a millisecond from the page cache
MAX_QUEUED = 4096         # requests waiting for a turn, all workers together (4 in flight per download)


class ProjectForbidden(UsageError):
    """Raised when a worker asks for a project version that no task dispatched to its device pins and no sync sent to
    it names. It never leaves the master but as its `E forbidden` answer (so it is not one of the package's public
    errors)."""

    code = "forbidden"


class Fetches:
    """`admit` checks a request against the device's tasks and queues it; `serve` answers at most
    CHUNKS_PER_TURN queued requests into the turn (`send`)."""

    def __init__(self, archive: Callable[[str], Path],
                 granted: Callable[[str, str, float], bool] | None = None) -> None:
        self.archive = archive   # version -> its archive's path in the store
        # (device id, version, now) -> whether a sync sent to the device names the version (Syncs.allows)
        self.granted = granted
        self.queue: deque[tuple[bytes, ProjectFetch]] = deque()

    def admit(self, identity: bytes, device: DeviceEntry, tasks: dict[str, TaskEntry], msg: ProjectFetch,
              now_mono: float = 0.0) -> None:
        """Queue the request, or raise the reason it is refused (forbidden, not_found, too_large)."""
        suffix = "@" + msg.version
        if not any((entry := tasks.get(task_id)) is not None and entry.need.project
                   and entry.need.project.endswith(suffix) for task_id in device.inflight) \
                and not (self.granted is not None and self.granted(device.device_id, msg.version, now_mono)):
            raise ProjectForbidden(f"no task dispatched to device {device.device_id} pins project version "
                                   f"{msg.version[:12]}, and no sync sent to it names it",
                                   "a worker fetches only the versions its tasks or a sync name")
        if not self.archive(msg.version).is_file():
            raise ProjectNotFound(f"the master has no archive of project version {msg.version[:12]} (its file is "
                                  "gone from the project store)", "push the project again and submit the task again")
        if len(self.queue) >= MAX_QUEUED:
            raise LimitExceeded(f"{MAX_QUEUED} project fetch requests are waiting already", "ask again later")
        self.queue.append((identity, msg))

    def waiting(self) -> bool:
        return bool(self.queue)

    def serve(self, send: Callable[[bytes, list[bytes]], None],
              error: Callable[[bytes, int, str, str], None]) -> None:
        """Answer at most CHUNKS_PER_TURN queued requests: a `Y` each, or an `E` if its archive cannot be read."""
        for _ in range(min(CHUNKS_PER_TURN, len(self.queue))):
            identity, msg = self.queue.popleft()
            try:
                fd = os.open(self.archive(msg.version), os.O_RDONLY)
            except OSError as e:
                error(identity, msg.req_id, "not_found", f"cannot read project version {msg.version[:12]}: "
                      f"{e.strerror}; push the project again and submit the task again")
                continue
            try:
                size = os.fstat(fd).st_size
                if msg.offset >= size:
                    error(identity, msg.req_id, "bad_request", f"offset {msg.offset} is at or past the end of "
                          f"project version {msg.version[:12]} ({size} bytes)")
                    continue
                data = _read_at(fd, min(msg.length, size - msg.offset), msg.offset)
            except OSError as e:
                logger.error("reading project version %s failed: %s", msg.version[:12], e)
                error(identity, msg.req_id, "unavailable", f"cannot read project version {msg.version[:12]}: "
                      f"{e.strerror}")
                continue
            finally:
                os.close(fd)
            send(identity, ProjectData(msg.req_id, msg.version, msg.offset, size, data).encode())


def _read_at(fd: int, length: int, offset: int) -> bytes:
    """pread; Windows has none: seek and read (the file is opened for this request alone)."""
    if hasattr(os, "pread"):
        return os.pread(fd, length, offset)
    os.lseek(fd, offset, os.SEEK_SET)
    return os.read(fd, length)
