"""Sequence-numbered commands: published once on PUB, re-sent over the ROUTER until a heartbeat says applied."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

from ..protocol import Command

logger = logging.getLogger(__name__)


@dataclass
class Pending:
    command: Command
    sent_mono: float
    resends: int = 0


@dataclass
class CommandBook:
    """Who still has to apply which command. PUB drops messages (slow joiners, reconnects, HWM), so a
    directed command stays pending for each device it concerns until that device's heartbeat lists its seq."""

    resend_after_s: float
    seq: int = 0
    pending: dict[str, dict[int, Pending]] = field(default_factory=dict)   # device id -> seq -> Pending

    def issue(self, action: str, params: dict, device_ids: list[str], now_mono: float) -> Command:
        self.seq += 1
        command = Command(self.seq, action, params)
        for device_id in device_ids:
            self.pending.setdefault(device_id, {})[command.seq] = Pending(command, now_mono)
        logger.info("command seq=%d action=%s devices=%s", command.seq, action, ",".join(device_ids) or "-")
        return command

    def applied(self, device_id: str, seqs: list, now_mono: float) -> list[Command]:
        """Forget what the device applied; return what it still lacks and has waited too long for."""
        mine = self.pending.get(device_id)
        if not mine:
            return []
        for seq in seqs:
            mine.pop(seq, None)
        due = []
        for pending in mine.values():
            if now_mono - pending.sent_mono >= self.resend_after_s:
                pending.sent_mono, pending.resends = now_mono, pending.resends + 1
                due.append(pending.command)
                logger.warning("re-sending command seq=%d action=%s to %s (try %d)", pending.command.seq,
                               pending.command.action, device_id, pending.resends)
        return due

    def restarted(self, device_id: str) -> list[Command]:
        """A new worker process registered: it knows none of our commands, so all it lacks go again."""
        return [p.command for p in self.pending.get(device_id, {}).values()]

    def forget(self, device_id: str, action: str | None = None) -> None:
        mine = self.pending.get(device_id, {})
        for seq in [s for s, p in mine.items() if action is None or p.command.action == action]:
            del mine[seq]
