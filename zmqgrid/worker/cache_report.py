"""What a worker's project cache holds, as its heartbeats tell the master (docs/architecture.md, Projects, "Sync and
what workers hold"): per version its copy's state, its environment's, the last sync applied to it and why it failed.
Written by the worker's loop (and once by the survey at its start), read by the heartbeat thread."""
from __future__ import annotations

import logging
import re
import threading

from ..projects.cache import ProjectCache
from ..projects.envs import Environments
from ..protocol import MAX_CACHED_REASON, MAX_CACHED_REPORTED
from ..text import printable

logger = logging.getLogger(__name__)
MAX_KEPT = 4096   # versions remembered; past it the oldest steady ones go (a heartbeat carries 64 at most)
# A heartbeat carries the list when it changed, and else every this many heartbeats (a master that started since, or
# a heartbeat lost on the way, is told again): an unchanged list is not decoded again every second.
RESEND_EVERY = 10
STEADY_ENVS = ("unknown", "not_built", "ready", "none")
# Environments.state's words as the heartbeat says them
_VERSION = re.compile(r"[0-9a-f]{64}")
SURVEYED = {"none": "none", "ready": "ready", "failed": "failed", "absent": "not_built"}


class CacheReport:
    """`set` a version's states as they change, `synced` when a sync command reaches it, `snapshot` for a heartbeat:
    at most MAX_CACHED_REPORTED entries, those in progress or failed first, then the most recently changed; None
    when the last list sent still holds (see RESEND_EVERY)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.entries: dict[str, list] = {}   # version -> [copy, env, sync seq, reason], oldest change first
        self.changes = self.sent = 0         # changes made, and how many the last list sent showed
        self.beats = 0                       # snapshots asked since the last list sent

    def set(self, version: str, copy: str, env: str = "unknown", reason: str = "") -> None:
        # One printable line within the schema's bound: a heartbeat that did not pass it would be refused whole.
        reason = printable(reason, MAX_CACHED_REASON) if reason else ""
        with self.lock:
            old = self.entries.pop(version, None)
            self.entries[version] = [copy, env, old[2] if old else 0, reason]
            self.changes += 1
            if len(self.entries) > MAX_KEPT:
                steady = next((v for v, e in self.entries.items() if not _moving(e)), next(iter(self.entries)))
                del self.entries[steady]

    def synced(self, version: str, seq: int) -> None:
        """A sync command of this seq reached the version (its states were set first: a heartbeat that shows the
        seq shows what the sync started)."""
        with self.lock:
            entry = self.entries.get(version)
            if entry is not None:
                entry[2] = seq
                self.changes += 1

    def drop(self, version: str) -> None:
        with self.lock:
            if self.entries.pop(version, None) is not None:
                self.changes += 1

    def forget_syncs(self) -> None:
        """A new master incarnation: its command seqs start again, so ours mean nothing to it."""
        with self.lock:
            for entry in self.entries.values():
                entry[2] = 0
            self.changes += 1

    def snapshot(self) -> list[list] | None:
        with self.lock:
            self.beats += 1
            if self.changes == self.sent and (self.beats < RESEND_EVERY or not self.entries):
                return None
            self.sent, self.beats = self.changes, 0
            items = [[version, *entry] for version, entry in reversed(self.entries.items())]
        items.sort(key=lambda item: not _moving(item[1:]))   # stable: the most recent first within each kind
        return items[:MAX_CACHED_REPORTED]

    def survey(self, cache: ProjectCache, envs: Environments) -> None:
        """At the worker's start, off its loop: the copies already in the cache, with what their environment's
        folder says (without building). A version the loop set meanwhile is left as the loop said."""
        for version in [p.name for p in cache.root.iterdir() if _VERSION.fullmatch(p.name) and cache.has_copy(p.name)]:
            try:
                env = SURVEYED.get(envs.state(cache.copy(version)), "unknown")
            except Exception as e:  # a copy's environment that cannot be read is only not told
                logger.warning("project copy %s: its environment cannot be read: %s", version[:12], e)
                env = "unknown"
            with self.lock:
                if version not in self.entries:
                    self.entries[version] = ["cached", env, 0, ""]
                    self.changes += 1


def brief(why: str) -> str:
    """A failure in one line that fits the report: its first line, and the end of the rest (an installer's last
    words say what was missing)."""
    first, *rest = why.splitlines() or [""]
    tail = " ".join(line.strip() for line in rest if line.strip())[-max(0, MAX_CACHED_REASON - len(first) - 5):]
    return f"{first} ... {tail}" if tail else first


def _moving(entry: list) -> bool:
    """In progress or failed: what a person waits for or must see."""
    return entry[0] != "cached" or entry[1] not in STEADY_ENVS
