"""One budget of log lines for everything peers can make the master complain about (refused messages, bad
messages, new pending keys): at most LOG_BURST lines per LOG_WINDOW_S for the whole master, whatever the number of
peers, keys or messages, and one line per window counting the rest. A flood must not rotate the real log away.
Refusals are also told once per connection (RefusedConnections): a revoked worker's heartbeats are one line."""
from __future__ import annotations

import logging
import time
from collections import OrderedDict
from typing import Hashable

logger = logging.getLogger(__name__)
LOG_BURST = 5
LOG_WINDOW_S = 5.0
MAX_COUNTED_PEERS = 10_000   # distinct peers counted per window; past it the summary says 10000+
MAX_REFUSED_CONNECTIONS = 10_000   # (key, connection) pairs remembered as told; the least recently refused go first


class RefusalLog:
    """`write` logs a line while the window's budget lasts and counts it otherwise; `tick` (or the next `write`)
    writes the summary of what was counted once the window has passed. `peer` (a CURVE key, or a connection's
    routing id when the master runs open) only counts distinct senders; callers make every peer-provided string
    in the line printable (text.printable) and short."""

    def __init__(self, senders: str = "keys", burst: int = LOG_BURST, window_s: float = LOG_WINDOW_S) -> None:
        self.senders = senders            # what `peer` is, for the summary: keys, or connections when open
        self.burst, self.window_s = burst, window_s
        self.started = float("-inf")
        self.lines = 0
        self.more = 0                     # messages counted, not logged, in this window
        self.peers: set[str] = set()      # their distinct senders (at most MAX_COUNTED_PEERS)
        self.peers_overflow = False

    def write(self, peer: str, level: int, text: str, *args: object, exc_info: bool = False) -> None:
        self.tick()
        if self.lines < self.burst:
            self.lines += 1
            logger.log(level, text, *args, exc_info=exc_info)
            return
        self.more += 1
        if len(self.peers) < MAX_COUNTED_PEERS:
            self.peers.add(peer)
        elif peer not in self.peers:
            self.peers_overflow = True

    def tick(self) -> None:
        now = time.monotonic()
        if now - self.started < self.window_s:
            return
        if self.more:
            logger.warning("refused %d more messages from %s %s in the last %.0f s (log lines are limited to %d "
                           "per %.0f s)", self.more, f"{len(self.peers)}{'+' if self.peers_overflow else ''}",
                           self.senders, now - self.started, self.burst, self.window_s)
        self.started, self.lines, self.more, self.peers_overflow = now, 0, 0, False
        self.peers = set()


class RefusedConnections:
    """The (key, connection) pairs whose refusal has been logged: `first` is true once per pair, so a connection
    that goes on sending refused messages (a revoked worker's heartbeats) costs the log one line, not one per
    message. Bounded: past MAX_REFUSED_CONNECTIONS the least recently refused pair is forgotten (it would get one
    more line if it spoke again)."""

    def __init__(self, limit: int = MAX_REFUSED_CONNECTIONS) -> None:
        self.limit = limit
        self.told: OrderedDict[tuple[str, Hashable], None] = OrderedDict()

    def first(self, key: str, connection: Hashable) -> bool:
        pair = (key, connection)
        if pair in self.told:
            self.told.move_to_end(pair)
            return False
        self.told[pair] = None
        if len(self.told) > self.limit:
            self.told.popitem(last=False)
        return True
