"""A bounded log of refused sign-ins: a flood of unknown tokens cannot fill the gateway's log (or its disk)."""
from __future__ import annotations

import logging
import time
from typing import Callable

EVERY_S = 60.0
"""At most one log line per this long; the next one counts the refusals in between."""


class RefusalLog:
    """Logs the first refused sign-in at once, then at most one line per `every_s` with the count since the last."""

    def __init__(self, logger: logging.Logger, clock: Callable[[], float] = time.monotonic,
                 every_s: float = EVERY_S) -> None:
        self.logger = logger
        self.clock = clock
        self.every_s = every_s
        self.last_logged: float | None = None
        self.unlogged = 0   # refusals since the last line

    def refused(self, peer: str | None) -> None:
        now = self.clock()
        self.unlogged += 1
        if self.last_logged is not None and now - self.last_logged < self.every_s:
            return
        if self.unlogged == 1:
            self.logger.warning("browser sign-in refused: unknown token from %s", peer)
        else:
            self.logger.warning("browser sign-in refused: unknown token from %s (%d refusals since the last line, "
                                "at most one line per %g s)", peer, self.unlogged, self.every_s)
        self.last_logged = now
        self.unlogged = 0
