"""The alert tables (docs/architecture.md, Alerts): the master stages rules and events into its turn's commit; the
delivery threads read and mark events through `DeliveryLedger`, a connection of their own."""
from __future__ import annotations

import os
import sqlite3

from .task_store import TaskStore

RULE_COLUMNS = "name, events, tags, pattern, kind, target, template, created_at"
_STATS = "delivered, failed, dropped, last_error, last_error_at, last_delivered_at"
_INSERT_RULE = (f"INSERT INTO alert_rules ({RULE_COLUMNS}, delivered, failed, dropped) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0, 0, 0)")
_INSERT_EVENT = "INSERT INTO alert_events (seq, rule, event, at, body, attempts) VALUES (?, ?, ?, ?, ?, 0)"


def load_rules(store: TaskStore) -> list[dict]:
    return list(store.db.query(f"SELECT {RULE_COLUMNS} FROM alert_rules ORDER BY name"))


def insert_rule(store: TaskStore, row: dict) -> None:
    store.stage(_INSERT_RULE, tuple(row[c.strip()] for c in RULE_COLUMNS.split(",")))


def delete_rule(store: TaskStore, name: str) -> None:
    """The rule and every event of it, delivered or not, in the same commit."""
    store.stage("DELETE FROM alert_events WHERE rule = ?", (name,))
    store.stage("DELETE FROM alert_rules WHERE name = ?", (name,))


def last_seq(store: TaskStore) -> int:
    """The highest event seq ever used (AUTOINCREMENT keeps it past deletes): the master numbers its events."""
    used = store.db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'alert_events'").fetchone()
    top = store.db.execute("SELECT max(seq) FROM alert_events").fetchone()
    return max(used[0] if used else 0, top[0] or 0)


def stage_event(store: TaskStore, seq: int, rule: str, event: str, at: float, body: str) -> None:
    store.stage(_INSERT_EVENT, (seq, rule, event, at, body))


def rule_stats(store: TaskStore) -> dict[str, dict]:
    """Each rule's delivery counters, with its undelivered events counted (`pending`)."""
    rows = store.db.query(f"SELECT name, {_STATS}, (SELECT count(*) FROM alert_events e WHERE e.rule = r.name "
                          "AND e.delivered_at IS NULL) AS pending FROM alert_rules r")
    return {row.pop("name"): row for row in rows}


def event_row(store: TaskStore, seq: int) -> dict | None:
    rows = list(store.db.query("SELECT seq, rule, event, attempts, delivered_at, last_error FROM alert_events "
                               "WHERE seq = ?", [seq]))
    return rows[0] if rows else None


class DeliveryLedger:
    """One delivery thread's connection to the ledger. Each write is its own short transaction, so the master's
    turn commit waits at most one of them (busy_timeout)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.conn = sqlite3.connect(path, timeout=10.0, isolation_level=None)
        self.conn.row_factory = sqlite3.Row
        self.conn.execute("PRAGMA busy_timeout=10000")
        # NORMAL: a delivery mark lost to a power cut only sends that event again (at least once). Without it each
        # mark would fsync while holding the write lock the master's turn commit waits for.
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.execute("PRAGMA wal_autocheckpoint=0")   # the master's Checkpointer runs them, off its commits

    def close(self) -> None:
        self.conn.close()

    def rules(self) -> list[dict]:
        return [dict(r) for r in self.conn.execute(f"SELECT {RULE_COLUMNS} FROM alert_rules")]

    def rule(self, name: str) -> dict | None:
        row = self.conn.execute(f"SELECT {RULE_COLUMNS} FROM alert_rules WHERE name = ?", (name,)).fetchone()
        return dict(row) if row else None

    def head(self, rule: str) -> dict | None:
        """The rule's oldest undelivered event: the only one it may send (in order per rule)."""
        row = self.conn.execute("SELECT seq, event, at, body, attempts, next_at FROM alert_events "
                                "WHERE rule = ? AND delivered_at IS NULL ORDER BY seq LIMIT 1", (rule,)).fetchone()
        return dict(row) if row else None

    def delivered(self, rule: str, seq: int, now: float) -> None:
        with self.conn:
            self.conn.execute("BEGIN IMMEDIATE")
            self.conn.execute("UPDATE alert_events SET delivered_at = ?, attempts = attempts + 1, next_at = NULL "
                              "WHERE seq = ?", (now, seq))
            self.conn.execute("UPDATE alert_rules SET delivered = delivered + 1, last_delivered_at = ? "
                              "WHERE name = ?", (now, rule))

    def failed(self, rule: str, seq: int, error: str, next_at: float, now: float) -> None:
        with self.conn:
            self.conn.execute("BEGIN IMMEDIATE")
            self.conn.execute("UPDATE alert_events SET attempts = attempts + 1, last_error = ?, next_at = ? "
                              "WHERE seq = ?", (error, next_at, seq))
            self.conn.execute("UPDATE alert_rules SET failed = failed + 1, last_error = ?, last_error_at = ? "
                              "WHERE name = ?", (error, now, rule))

    def drop(self, rule: str, older_than: float, keep: int) -> int:
        """Delete the rule's undelivered events staged before `older_than`, and the oldest beyond `keep`
        undelivered ones; count them in its `dropped`. Returns how many went."""
        with self.conn:
            self.conn.execute("BEGIN IMMEDIATE")
            gone = self.conn.execute("DELETE FROM alert_events WHERE rule = ? AND delivered_at IS NULL AND at < ?",
                                     (rule, older_than)).rowcount
            gone += self.conn.execute(
                "DELETE FROM alert_events WHERE seq IN (SELECT seq FROM alert_events WHERE rule = ? AND "
                "delivered_at IS NULL ORDER BY seq DESC LIMIT -1 OFFSET ?)", (rule, keep)).rowcount
            if gone:
                self.conn.execute("UPDATE alert_rules SET dropped = dropped + ? WHERE name = ?", (gone, rule))
        return gone

    def prune_delivered(self, before: float, keep: int, limit: int = 10_000) -> int:
        """Delete (at most `limit` of) the delivered events older than `before`, or beyond the newest `keep`."""
        with self.conn:
            self.conn.execute("BEGIN IMMEDIATE")
            gone = self.conn.execute("DELETE FROM alert_events WHERE seq IN (SELECT seq FROM alert_events WHERE "
                                     "delivered_at IS NOT NULL AND delivered_at < ? LIMIT ?)",
                                     (before, limit)).rowcount
            gone += self.conn.execute(
                "DELETE FROM alert_events WHERE seq IN (SELECT seq FROM alert_events WHERE delivered_at IS NOT NULL "
                "ORDER BY delivered_at DESC LIMIT ? OFFSET ?)", (limit, keep)).rowcount
        return gone
