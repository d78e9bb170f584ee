"""The master's alert rules: held in memory, kept in the ledger, matched in the loop. A match stages its event into
the turn's commit, beside the change that caused it; delivery is never done here (alerts/delivery.py)."""
from __future__ import annotations

import json
import logging
import sqlite3

from ..errors import AlertNotFound, UsageError
from ..store import alert_store
from ..store.task_store import TaskStore
from . import templates
from .rules import DEVICE_EVENTS, TASK_EVENTS, Rule, check_rule

logger = logging.getLogger(__name__)
OPS = ("add", "remove", "test")


class Alerts:
    """Every rule of the master. Changes and events are staged; the caller's turn commits them."""

    def __init__(self, store: TaskStore) -> None:
        self.store = store
        self.rules: dict[str, Rule] = {}
        # Devices online when the master last stopped, with the monotonic time by which they must register again
        # (else they are reported offline): nothing else would ever say they are gone.
        self.awaited: dict[str, float] = {}
        self._awaited_rows: dict[str, dict] = {}
        self.seq = 0

    def load(self) -> None:
        # Only the master inserts events, so it numbers them: a reply can name the seq before the commit.
        self.seq = alert_store.last_seq(self.store)
        self.rules = {row["name"]: Rule.from_row(row) for row in alert_store.load_rules(self.store)}
        if self.rules:
            logger.info("loaded %d alert rules from %s", len(self.rules), self.store.path)

    def reload(self) -> None:
        """After a failed commit: the rules the ledger holds, not this turn's changes."""
        try:
            self.load()
        except Exception as e:   # a read that fails keeps this view rather than stop the loop
            logger.error("alert rules reload failed (%s); keeping the previous view", e)

    # ------------------------------------------------------------ operator changes

    def control(self, params: dict, now: float) -> dict:
        """One Control `alert`: {op: add|remove|test, name, ...}; returns the reply data."""
        op, name = params.get("op"), params.get("name")
        if op not in OPS:
            raise UsageError(f"alert: op {op!r} is unknown; allowed: {', '.join(OPS)}")
        if not isinstance(name, str):
            raise UsageError("alert: 'name' must be a string")
        if op == "add":
            rule = check_rule(params, now)
            if rule.name in self.rules:
                raise UsageError(f"alert {name!r} exists", f"remove it first: python main.py alerts remove {name}")
            self.rules[rule.name] = rule
            alert_store.insert_rule(self.store, rule.row())
            logger.info("alert rule added name=%s on=%s %s=%s", name, rule.row()["events"], rule.kind,
                        rule.shown_target())
            return dict(rule.view(), state="added")
        rule = self.get(name)
        if op == "remove":
            del self.rules[name]
            alert_store.delete_rule(self.store, name)
            logger.info("alert rule removed name=%s", name)
            return dict(rule.view(), state="removed")
        seq = self._stage(name, "test", now, templates.test_event(name, now))
        return {"name": name, "state": "test queued", "seq": seq}

    def get(self, name: str) -> Rule:
        rule = self.rules.get(name)
        if rule is None:
            raise AlertNotFound(f"no alert rule {name!r}")
        return rule

    def rows(self, params: dict) -> list[dict] | dict:
        """Query `alerts`: every rule with its delivery counters; with `seq`, that one event's outcome."""
        seq = params.get("seq")
        if seq is not None:
            row = alert_store.event_row(self.store, seq) if isinstance(seq, int) else None
            if row is None:
                raise AlertNotFound(f"no alert event {seq!r} (delivered events are pruned after 7 days)")
            return row
        stats = alert_store.rule_stats(self.store)
        return [dict(rule.view(), **stats.get(name, {})) for name, rule in sorted(self.rules.items())]

    # ------------------------------------------------------------ events, staged with their change

    def task_ended(self, task_id: str, state: str, summary: dict, now: float) -> None:
        """A task ended as `state`: one event per matching rule, in the op that finishes it."""
        if state not in TASK_EVENTS or not any(state in r.events for r in self.rules.values()):
            return
        try:   # a read that fails must not fail the task's end: the event goes without the name and tags
            row = self.store.db.execute("SELECT name, tags FROM tasks WHERE id = ?", [task_id]).fetchone()
        except sqlite3.Error as e:
            logger.warning("alerts: reading task %s for its rules failed (%s); matched without name and tags",
                           task_id, e)
            row = None
        name, tags = (row[0], frozenset(json.loads(row[1]) if row[1] else ())) if row else (None, frozenset())
        task = dict(summary, name=name)
        for rule in self.rules.values():
            if rule.matches(state, name or task_id, tags):
                self._stage(rule.name, state, now, templates.task_event(rule.name, state, task, now))

    def device_event(self, event: str, device_id: str, info: dict, tags: frozenset, reason: str,
                     now: float) -> None:
        assert event in DEVICE_EVENTS, event
        self.awaited.pop(device_id, None)
        if not any(event in r.events for r in self.rules.values()):
            return
        name = info.get("name") or device_id
        device = {"id": device_id, "name": info.get("name"), "hostname": info.get("hostname"), "reason": reason}
        for rule in self.rules.values():
            if rule.matches(event, name, tags):
                self._stage(rule.name, event, now, templates.device_event(rule.name, event, device, now))

    def _stage(self, rule: str, event: str, now: float, body: dict) -> int:
        self.seq += 1
        body["seq"] = self.seq
        alert_store.stage_event(self.store, self.seq, rule, event, now, json.dumps(body))
        return self.seq

    # ------------------------------------------------------------ devices that never came back after a restart

    def await_devices(self, rows: list[dict], deadline_mono: float) -> None:
        self.awaited = {row["device_id"]: deadline_mono for row in rows}
        self._awaited_rows = {row["device_id"]: row for row in rows}

    def check_awaited(self, known: set[str] | dict, now_mono: float, now: float) -> None:
        """Devices online at the last stop that did not register again by their deadline are offline events."""
        for device_id, deadline in list(self.awaited.items()):
            if device_id in known:   # registered again, or holding tasks: the fleet judges it now
                del self.awaited[device_id]
            elif now_mono >= deadline:
                row = self._awaited_rows.get(device_id, {})
                tags = frozenset(row.get("tags") or ())   # as TaskStore.list_devices decoded them
                self.device_event("offline", device_id, row, tags, "did not return after the master restarted", now)
