"""Environments not used for a while are deleted (docs/architecture.md, Projects, "The worker's cache and
environments", Pruning). The workers of a machine share `<state_dir>/envs/`, so they agree through the files:

- `<key>/used`: its mtime is when a worker last used the environment. A worker sets it when it gets the
  environment for a copy and again every TOUCH_EVERY_S for each environment one of its tasks holds or runs, so one
  in use anywhere is never older than that.
- `<key>/lock`: a key is deleted only by a worker that holds its lock (taken without waiting: a builder or a reader
  holds it, the key is left for the next pass), after reading `used` again under it.

An environment goes when its last use is older than `env_keep_days` and older than IN_USE_S whatever that is set
to. Under the lock the key's folder is renamed to `<key>.pruning-<pid>` (so no one opens a half-deleted one) and
then deleted; a lock waiter that was waiting on the renamed folder's lock sees that its lock file is no longer the
key's and opens the new one (`envfiles.file_lock`).
"""
from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Iterable
from pathlib import Path

from .envfiles import POSIX, file_lock

logger = logging.getLogger(__name__)

USED = "used"
TOUCH_EVERY_S = 600.0        # how often a worker marks the environments its tasks hold or run
IN_USE_S = 3 * TOUCH_EVERY_S  # used within this: some worker may be using it, whatever env_keep_days says
PRUNING = ".pruning-"
_MARKS = (USED, "current", "failed.json")   # an env built before `used` existed: its build's own time


def mark_used(folder: Path) -> None:
    """Set `<folder>/used` to now (created if missing). A key folder that is gone (pruned) is left gone."""
    path = folder / USED
    try:
        os.utime(path)
    except FileNotFoundError:
        if folder.is_dir():
            path.touch()


def last_used(folder: Path) -> float:
    """When the environment was last used: the newest of `used`, `current` and `failed.json`, else the folder's."""
    times = []
    for name in _MARKS:
        try:
            times.append((folder / name).stat().st_mtime)
        except OSError:
            pass
    if times:
        return max(times)
    return folder.stat().st_mtime


def is_key(path: Path) -> bool:
    """An environment's folder with something in it besides its lock (Windows keeps an emptied one's lock)."""
    return (path.is_dir() and PRUNING not in path.name and not path.name.startswith(".")
            and any(p.name != "lock" for p in path.iterdir()))


class EnvPruner:
    """`stale` (cheap: a few stats per key) says which keys may go; `prune` deletes them, each under its lock.
    `keep_days` 0 prunes nothing."""

    def __init__(self, root: Path, keep_days: float) -> None:
        self.root = Path(root)
        self.keep_s = keep_days * 86400.0
        self.next_pass = 0.0   # monotonic: the first pass is at the worker's first turn

    def due(self, now_mono: float) -> bool:
        """Whether a pass (mark what is in use, prune what is stale) is due; every TOUCH_EVERY_S."""
        if now_mono < self.next_pass:
            return False
        self.next_pass = now_mono + TOUCH_EVERY_S
        return True

    def mark(self, keys: Iterable[str]) -> None:
        """Mark as used now the environments this worker's tasks hold or run (done with any env_keep_days, 0
        included: the other workers sharing the folder go by it)."""
        for key in keys:
            try:
                mark_used(self.root / key)
            except OSError as e:
                logger.warning("cannot mark environment %s as used: %s", key, e)

    def _cutoff(self, now: float) -> float:
        return now - max(self.keep_s, IN_USE_S)

    def stale(self, in_use: Iterable[str], now: float | None = None) -> list[str]:
        """Keys last used before the cutoff, but those in `in_use` (this worker's tasks hold or run them)."""
        if not self.keep_s or not self.root.is_dir():
            return []
        cutoff, keep = self._cutoff(time.time() if now is None else now), set(in_use)
        found = []
        for path in sorted(self.root.iterdir()):
            try:
                if is_key(path) and path.name not in keep and last_used(path) < cutoff:
                    found.append(path.name)
            except OSError:   # pruned meanwhile by another worker
                continue
        return found

    def prune(self, keys: Iterable[str], now: float | None = None) -> list[str]:
        """Delete each key still unused past the cutoff whose lock is free; returns those deleted."""
        self._sweep()
        cutoff, deleted = self._cutoff(time.time() if now is None else now), []
        for key in keys:
            folder = self.root / key
            if not folder.is_dir():
                continue
            try:
                if self._delete(folder, cutoff):
                    deleted.append(key)
            except OSError as e:   # the disk, or (Windows) a file still open: tried again at the next pass
                logger.warning("environment %s could not be pruned: %s", key, e)
        return deleted

    def _delete(self, folder: Path, cutoff: float) -> bool:
        with file_lock(folder, 0.0) as locked:
            if not locked:
                return False   # a build, or a read of its state, is under way: in use
            age_days = (time.time() - last_used(folder)) / 86400
            if last_used(folder) >= cutoff:
                return False   # used since `stale` looked
            if POSIX:
                gone = folder.with_name(f"{folder.name}{PRUNING}{os.getpid()}")
                os.rename(folder, gone)
            else:   # an open file's folder cannot be renamed there: empty it but for its lock
                gone = None
                for path in folder.iterdir():
                    if path.name != "lock":
                        shutil.rmtree(path) if path.is_dir() else path.unlink()
        if gone is not None:
            shutil.rmtree(gone, ignore_errors=True)
        logger.info("environment %s pruned: last used %.1f days ago (env_keep_days %g)", folder.name, age_days,
                    self.keep_s / 86400)
        return True

    def _sweep(self) -> None:
        """What a pruner killed mid-way left: `<key>.pruning-<pid>` folders."""
        for path in self.root.glob(f"*{PRUNING}*"):
            shutil.rmtree(path, ignore_errors=True)
