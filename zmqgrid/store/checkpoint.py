"""The master ledger's WAL checkpoints, moved off the loop's commits into a thread of their own."""
from __future__ import annotations

import logging
import sqlite3
import threading

logger = logging.getLogger(__name__)
CHECKPOINT_EVERY_S = 1.0
WAL_KEEP_BYTES = 64 << 20   # the WAL file is cut back to this when it starts over (journal_size_limit)


class Checkpointer(threading.Thread):
    """Copies the WAL into the database file from its own connection, once a second, instead of SQLite doing
    it inside one of the master's commits every 1,000 pages: the loop's commits stay short, and a page written
    by many commits in that second is copied once.

    A PASSIVE checkpoint copies the frames that existed when it began; a busy loop has committed more by the
    time it ends, so the WAL is never wholly copied when the loop next writes, and SQLite only starts the WAL
    over when it is: under load it grows without end. So each PASSIVE bulk copy is followed by a
    RESTART, which copies the little written meanwhile while holding the loop's next commit back (a few ms, at
    most `busy_timeout`), and makes that commit start the WAL from its beginning."""

    def __init__(self, path: str) -> None:
        super().__init__(name="zmqgrid-checkpoint", daemon=True)
        self.path = path
        self.halt = threading.Event()

    def run(self) -> None:
        conn = sqlite3.connect(self.path, check_same_thread=False)
        try:
            conn.execute("PRAGMA busy_timeout=100")   # RESTART gives up (and tries next time) rather than wait long
            while not self.halt.wait(CHECKPOINT_EVERY_S):
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                    conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchall()
                except sqlite3.Error as e:   # full disk, I/O: the WAL keeps the data; try again next time
                    logger.warning("WAL checkpoint failed: %s", e)
        finally:
            conn.close()

    def stop(self) -> None:
        self.halt.set()
        self.join(timeout=5.0)
