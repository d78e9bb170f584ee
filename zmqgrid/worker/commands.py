"""How a worker applies the master's commands: once each, whether they came over PUB or were re-sent."""
from __future__ import annotations

import logging
from collections import deque
from typing import Callable

from ..config import Config
from ..protocol import Command

logger = logging.getLogger(__name__)


class Commands:
    """Drain, resume, shutdown, cancel, reload and sync. Cancelling is `cancel(keys, reason)`; a reload updates the
    shared config in place and then calls `reloaded(fresh)` for the parts that hold a copy of it; a project sync is
    `sync(seq, params)`."""

    def __init__(self, config: Config, reload_config: Callable[[], Config] | None, *,
                 cancel: Callable[[list[tuple], str], None], reloaded: Callable[[Config], None],
                 sync: Callable[[int, dict], None] | None = None) -> None:
        self.config = config
        self.reload_config = reload_config
        self._cancel, self._reloaded, self._sync = cancel, reloaded, sync
        self.draining = False                 # an operator drained this device: the master sends nothing new
        self.shutting_down = False            # drain, then exit once nothing is running or unacknowledged
        self.applied: deque[int] = deque(maxlen=64)   # seqs of commands applied under this incarnation

    def applied_seqs(self) -> list[int]:
        """What every heartbeat reports: the master re-sends a directed command until it is in here."""
        return list(self.applied)

    def forget_applied(self) -> None:
        """Command seqs start again with each master incarnation."""
        self.applied.clear()

    def apply(self, command: Command) -> None:
        """Apply a command once: PUB and the ROUTER's re-sends may both deliver it."""
        if command.seq in self.applied:
            return
        self.applied.append(command.seq)
        action = command.action
        logger.info("command seq=%d action=%s", command.seq, action)
        if action == "drain":
            self.draining = True
        elif action == "resume":
            self.draining = self.shutting_down = False
        elif action == "shutdown":
            self.draining = self.shutting_down = True
        elif action == "cancel":
            keys = command.params.get("keys") or []
            self._cancel([tuple(k) for k in keys if isinstance(k, list)], str(command.params.get("reason", "cancelled")))
        elif action == "reload" and self.reload_config is not None:
            self._reload()
        elif action == "sync" and self._sync is not None:
            self._sync(command.seq, command.params)
        else:
            logger.warning("unknown command action %r ignored", action)

    def _reload(self) -> None:
        try:
            fresh = self.reload_config()
        except Exception as e:  # a bad file must not take the worker down: keep the running config
            logger.error("reload refused, keeping the current config: %s", e)
            return
        self.config.concurrent_tasks, self.config.tags = fresh.concurrent_tasks, fresh.tags
        self.config.allowed_kinds, self.config.allowed_modules = fresh.allowed_kinds, fresh.allowed_modules
        logging.getLogger("zmqgrid").setLevel(fresh.log_level)
        logger.info("config reloaded: concurrency=%d tags=%s", fresh.concurrent_tasks, ",".join(fresh.tags) or "-")
        self._reloaded(fresh)
