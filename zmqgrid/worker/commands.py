"""How a worker applies the master's commands: once each, whether they came over PUB or were re-sent."""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ..protocol import Command

if TYPE_CHECKING:
    from .worker import Worker

logger = logging.getLogger(__name__)


class CommandsMixin:
    """Mixed into Worker: drain, resume, shutdown, cancel and reload."""

    def _apply(self: Worker, command: Command) -> None:
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
            self._kill([tuple(k) for k in keys if isinstance(k, list)], str(command.params.get("reason", "cancelled")))
        elif action == "reload" and self.reload_config is not None:
            self._reload()
        else:
            logger.warning("unknown command action %r ignored", action)

    def _reload(self: Worker) -> None:
        try:
            fresh = self.reload_config()
        except Exception as e:  # a bad file must not take the worker down: keep the running config
            logger.error("reload refused, keeping the current config: %s", e)
            return
        self.config.concurrent_tasks, self.config.tags = fresh.concurrent_tasks, fresh.tags
        self.config.allowed_kinds, self.config.allowed_modules = fresh.allowed_kinds, fresh.allowed_modules
        self.capacity = fresh.concurrent_tasks + fresh.prefetch
        self.pyslots.size = fresh.concurrent_tasks
        logging.getLogger("zmqgrid").setLevel(fresh.log_level)
        logger.info("config reloaded: concurrency=%d tags=%s", fresh.concurrent_tasks, ",".join(fresh.tags) or "-")
        self.side_sockets_stale = True    # the SUB and PUSH are made anew for the next registration
        self._register()
