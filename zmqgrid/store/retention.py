"""Retention: finished tasks past an age or beyond a count leave the ledger with their attempts and output."""
from __future__ import annotations

import logging
import sqlite3
import time
from dataclasses import dataclass

import sqlite_utils

from ..errors import StoreError
from ..model import ACTIVE_STATES, FINAL_STATES, UNFINISHED_STATES, DeviceState
from .schema import sql_list

logger = logging.getLogger(__name__)
CHUNK_ROWS = 5000          # most tasks deleted per transaction
CHUNK_S = 0.05             # the master sizes its chunks to hold its loop about this long (measured as it goes)
FIRST_CHUNK_ROWS = 200
EVERY_S = 60.0             # between passes once nothing is left to prune
FIRST_AFTER_S = 1.0        # the first pass waits for start-up to finish answering
BUSY_SHARE = 0.2           # while a backlog lasts, pruning takes at most this share of the loop's time
LOG_EVERY_S = 10.0         # a long backlog logs its progress this often
_FINAL = sql_list(sorted(FINAL_STATES))
# +state: the (finished_at, state) index gives the oldest first and checks their state; the state index would
# make SQLite sort every finished task.
_OLDEST = (f"SELECT id FROM tasks WHERE finished_at IS NOT NULL AND +state IN {_FINAL} "
           "ORDER BY finished_at LIMIT ?")
_OLDER_THAN = (f"SELECT id FROM tasks WHERE finished_at < ? AND +state IN {_FINAL} "
               "ORDER BY finished_at LIMIT ?")

# Devices: offline since before a time, oldest first; then those holding anything in the ledger are left out.
_OFFLINE_SINCE = (f"SELECT rowid, device_id FROM devices WHERE state = '{DeviceState.OFFLINE}' AND last_seen_at < ? "
                  "AND rowid > ? ORDER BY rowid LIMIT ?")
_PINNED = ("SELECT DISTINCT device_req FROM tasks WHERE device_req IS NOT NULL "
           f"AND state IN {sql_list(UNFINISHED_STATES)}")
_HOLDS = f"SELECT 1 FROM tasks WHERE device_id = ? AND state IN {sql_list(sorted(ACTIVE_STATES))} LIMIT 1"


def offline_devices(db: sqlite_utils.Database, before: float, limit: int) -> list[str]:
    """Ids of at most `limit` devices the ledger has offline since before `before` (wall clock) that hold nothing
    there: no assigned or running task, no unfinished task pinned to them. A drained device is `draining`, not
    `offline`, so it is never among them. Raises StoreError if the ledger refuses."""
    try:
        out: list[str] = []
        pinned: set[str] | None = None
        after = 0   # pages of candidates, so devices that must stay never hide the ones behind them
        while len(out) < limit:
            rows = db.execute(_OFFLINE_SINCE, (before, after, limit)).fetchall()
            if not rows:
                break
            if pinned is None:
                pinned = {r[0] for r in db.execute(_PINNED)}   # read only when there is a candidate (rarely)
            out += [d for _, d in rows if d not in pinned and db.execute(_HOLDS, (d,)).fetchone() is None]
            after = rows[-1][0]
        return out[:limit]
    except sqlite3.Error as e:
        raise StoreError(f"could not look for long-offline devices: {e}", "check the database file") from e


@dataclass
class Pruned:
    """What one chunk did: tasks deleted, whether more are due now, and how long it held the ledger."""

    tasks: int
    more: bool
    seconds: float


class Retention:
    """Deletes finished tasks older than `days` (0: no age limit) and the oldest beyond `max_tasks` finished ones
    (0: no cap), at most `chunk` per call, each call one transaction. Queued, assigned and running tasks are never
    touched: only rows in a final state with a finish time are chosen, and checked again in the DELETE itself."""

    def __init__(self, db: sqlite_utils.Database, days: float, max_tasks: int, chunk: int = CHUNK_ROWS) -> None:
        self.db, self.days, self.max_tasks, self.chunk = db, days, max_tasks, chunk

    @property
    def enabled(self) -> bool:
        return self.days > 0 or self.max_tasks > 0

    def finished_count(self) -> int:
        """Finished tasks in the ledger: all rows (SQLite counts a b-tree without decoding it) minus the few active."""
        total = self.db.execute("SELECT count(*) FROM tasks").fetchone()[0]
        active = self.db.execute(f"SELECT count(*) FROM tasks WHERE state NOT IN {_FINAL}").fetchone()[0] \
            if total else 0
        return total - active

    def due(self, now: float, rows: int) -> list[str]:
        """Ids of the finished tasks to delete next, oldest first, at most `rows`."""
        ids: dict[str, None] = {}
        if self.days > 0:
            ids.update((r[0], None) for r in self.db.execute(_OLDER_THAN, (now - self.days * 86400, rows)))
        if self.max_tasks > 0 and len(ids) < rows:
            excess = self.finished_count() - self.max_tasks
            if excess > len(ids):
                ids.update((r[0], None) for r in self.db.execute(_OLDEST, (min(excess, rows),)))
        return list(ids)[:rows]

    def prune_chunk(self, now: float, rows: int | None = None) -> Pruned:
        """Delete the next (at most `rows`, default `chunk`) in one transaction; raises StoreError (nothing
        deleted) if the ledger refuses."""
        rows = self.chunk if rows is None else min(rows, self.chunk)
        if not self.enabled:
            return Pruned(0, False, 0.0)
        t0 = time.perf_counter()
        try:
            ids = self.due(now, rows)
            if ids:
                keys = [(i,) for i in ids]
                conn = self.db.conn
                with self.db.atomic():
                    conn.executemany(f"DELETE FROM task_output WHERE task_id = ? AND EXISTS (SELECT 1 FROM tasks "
                                     f"WHERE id = task_id AND state IN {_FINAL})", keys)
                    conn.executemany(f"DELETE FROM attempts WHERE task_id = ? AND EXISTS (SELECT 1 FROM tasks "
                                     f"WHERE id = task_id AND state IN {_FINAL})", keys)
                    conn.executemany(f"DELETE FROM tasks WHERE id = ? AND state IN {_FINAL}", keys)
        except sqlite3.Error as e:
            raise StoreError(f"retention could not prune: {e}", "check disk space and the database file") from e
        return Pruned(len(ids), len(ids) >= rows, time.perf_counter() - t0)

    def describe(self) -> str:
        limits = []
        if self.days > 0:
            limits.append(f"older than {self.days:g} days")
        if self.max_tasks > 0:
            limits.append(f"beyond the newest {self.max_tasks}")
        return " or ".join(limits) or "never"


class RetentionTimer:
    """When the master's loop runs the next chunk, and how big: every EVERY_S, or sooner while a backlog lasts,
    leaving the loop at least (1 - BUSY_SHARE) of its time; each chunk sized from the last one's rate to take about
    CHUNK_S (a delete's cost depends on the disk and the ledger's size). `run(now_mono, now)` never raises: a failed
    prune waits for the next pass. INFO once a pass ends, and every LOG_EVERY_S while a backlog lasts."""

    def __init__(self, retention: Retention, now_mono: float) -> None:
        self.retention = retention
        self.next_at = now_mono + FIRST_AFTER_S
        self.rows = FIRST_CHUNK_ROWS
        self._tally = [0, 0, 0, 0.0, 0.0]   # since the last log line: tasks, chunks, largest chunk, longest s, all s
        self._logged_at = now_mono
        logger.info("retention: finished tasks %s are pruned", retention.describe())

    def run(self, now_mono: float, now: float) -> int:
        if now_mono < self.next_at or not self.retention.enabled:
            return 0
        try:
            pruned = self.retention.prune_chunk(now, self.rows)
        except StoreError as e:
            logger.warning("%s; trying again in %.0f s", e.message, EVERY_S)
            self.next_at = now_mono + EVERY_S
            return 0
        if pruned.tasks:
            t = self._tally
            t[0] += pruned.tasks
            t[1] += 1
            t[2] = max(t[2], pruned.tasks)
            t[3] = max(t[3], pruned.seconds)
            t[4] += pruned.seconds
            rate = pruned.tasks / max(pruned.seconds, 1e-6)
            self.rows = max(FIRST_CHUNK_ROWS // 2, min(self.retention.chunk, int(rate * CHUNK_S)))
        if pruned.more:
            self.next_at = now_mono + pruned.seconds * (1 - BUSY_SHARE) / BUSY_SHARE
        else:
            self.next_at = now_mono + EVERY_S
        if self._tally[0] and (not pruned.more or now_mono - self._logged_at >= LOG_EVERY_S):
            self._log(pruned.more, now_mono)
        return pruned.tasks

    def _log(self, more: bool, now_mono: float) -> None:
        tasks, chunks, largest, longest, total = self._tally
        logger.info("retention pruned %d finished tasks (%s) with their attempts and output in %d chunk(s) of at most "
                    "%d, longest %.1f ms, %.1f ms in all; %s", tasks, self.retention.describe(), chunks, largest,
                    longest * 1000, total * 1000, "more to prune" if more else "done until the next pass")
        self._tally = [0, 0, 0, 0.0, 0.0]
        self._logged_at = now_mono
