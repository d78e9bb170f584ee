"""The per-client cap on unfinished tasks (max_queued_per_client): one client cannot fill the master's memory."""
from __future__ import annotations

from ..errors import LimitExceeded


class Quota:
    """Unfinished tasks by account (a client's key under CURVE, else its connection), counted since this start.
    The master's own schedules submit as account b"" and are not counted."""

    def __init__(self, most: int) -> None:
        self.most = most
        self.held: dict[bytes, int] = {}

    def admit(self, account: bytes, fresh: int) -> None:
        """Refuse, before anything is staged, a submission that would leave `account` too many unfinished tasks."""
        held = self.held.get(account, 0)
        if account and fresh and held + fresh > self.most:
            raise LimitExceeded(f"this client has {held} unfinished tasks and {fresh} more would exceed "
                                f"max_queued_per_client = {self.most}",
                                "wait for some to finish, or raise max_queued_per_client on the master")

    def added(self, account: bytes, count: int) -> None:
        if account and count:
            self.held[account] = self.held.get(account, 0) + count

    def ended(self, account: bytes) -> None:
        if account:
            left = self.held.pop(account, 1) - 1
            if left > 0:
                self.held[account] = left
