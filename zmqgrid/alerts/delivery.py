"""Delivering alert events, beside the master's loop (docs/architecture.md, Alerts): a supervisor thread keeps one
worker thread per rule; each sends its rule's oldest undelivered event until it is delivered, so events of a rule
go out in order and a hanging endpoint holds back its own rule only. Each thread has its own ledger connection."""
from __future__ import annotations

import json
import logging
import os
import random
import threading
import time
from dataclasses import dataclass

from ..store.alert_store import DeliveryLedger
from ..text import printable
from .rules import Rule
from .senders import post_webhook, run_command

logger = logging.getLogger(__name__)
POLL_S = 0.25                    # how often the supervisor looks for new or removed rules
IDLE_S = 1.0                     # how often an idle rule looks for events when not woken (Delivery.wake)
EVENT_MAX_AGE_S = 24 * 3600      # an event undelivered this long after it was staged is dropped
MAX_BACKLOG = 1000               # undelivered events kept per rule; the oldest beyond are dropped
DELIVERED_KEEP_S = 7 * 86400     # delivered events are deleted this long after delivery,
DELIVERED_KEEP_MAX = 10_000      # or beyond this many (newest kept): a flood of failures does not fill the disk
PRUNE_EVERY_S = 60.0


@dataclass(frozen=True)
class Settings:
    retry_s: float = 1.0         # config alert_retry: the wait after a first failed attempt
    retry_max_s: float = 300.0   # config alert_retry_max
    timeout_s: float = 10.0      # config alert_timeout: one POST, or one command's run


def retry_after(settings: Settings, attempts: int) -> float:
    """Exponential from `retry_s`, capped, with ±25 % jitter so rules that failed together do not retry together."""
    base = min(settings.retry_max_s, settings.retry_s * 2 ** min(max(attempts - 1, 0), 30))
    return base * random.uniform(0.75, 1.25)


def send(rule: Rule, event: dict, timeout_s: float) -> str | None:
    """None when delivered, else why not; a bug here is a failed attempt (retried with backoff), not a log flood."""
    try:
        if rule.kind == "webhook":
            return post_webhook(rule.target, rule.template, event, timeout_s)
        return run_command(rule.target, event, timeout_s)
    except Exception as e:
        logger.debug("alert rule %s: sending failed", rule.name, exc_info=True)
        return f"could not send: {type(e).__name__}: {printable(str(e).replace(rule.target, '(the target)'), 200)}"


class RuleWorker(threading.Thread):
    """Sends one rule's events in seq order; stops when told, or when its rule is gone."""

    def __init__(self, path: str, rule: Rule, settings: Settings, stop: threading.Event) -> None:
        super().__init__(name=f"zmqgrid-alert-{rule.name}", daemon=True)
        self.path, self.rule, self.settings, self.stop = path, rule, settings, stop
        self.retired = threading.Event()   # set by the supervisor when the rule is removed or replaced
        self.woken = threading.Event()     # set when a commit wrote events, by the retirement and by stop
        self.next_drop_check = 0.0

    def run(self) -> None:
        ledger = DeliveryLedger(self.path)
        try:
            while not (self.stop.is_set() or self.retired.is_set()):
                try:
                    wait = self.step(ledger)
                except Exception:   # a ledger error (busy, disk): logged, tried again; the master goes on
                    logger.exception("alert rule %s: delivery step failed", self.rule.name)
                    wait = 5.0
                if wait:
                    self.woken.wait(wait)
                    self.woken.clear()
        finally:
            ledger.close()

    def step(self, ledger: DeliveryLedger) -> float:
        """One attempt at the rule's oldest event; returns how long to wait before the next step."""
        name, now = self.rule.name, time.time()
        if now >= self.next_drop_check:
            self.next_drop_check = now + 5.0
            dropped = ledger.drop(name, now - EVENT_MAX_AGE_S, MAX_BACKLOG)
            if dropped:
                logger.warning("alert rule %s: dropped %d undelivered events (older than %.0f h, or beyond %d "
                               "waiting)", name, dropped, EVENT_MAX_AGE_S / 3600, MAX_BACKLOG)
        head = ledger.head(name)
        if head is None:
            return IDLE_S
        if head["next_at"] is not None and head["next_at"] > now:
            return min(IDLE_S, head["next_at"] - now)
        event = json.loads(head["body"])
        event["seq"] = head["seq"]
        error = send(self.rule, event, self.settings.timeout_s)
        now = time.time()
        row = ledger.rule(name)
        if row is None or Rule.from_row(row) != self.rule:   # removed (its events with it) while this attempt ran
            return 0.0
        if error is None:
            ledger.delivered(name, head["seq"], now)
            logger.info("alert rule %s: event %d (%s) delivered", name, head["seq"], head["event"])
            return 0.0
        attempts = head["attempts"] + 1
        delay = retry_after(self.settings, attempts)
        ledger.failed(name, head["seq"], error, now + delay, now)
        logger.warning("alert rule %s: event %d attempt %d failed: %s; next in %.1f s", name, head["seq"],
                       attempts, printable(error, 300), delay)
        return 0.0


class Delivery(threading.Thread):
    """The supervisor: one RuleWorker per rule in the ledger, and the pruning of delivered events."""

    def __init__(self, path: str | os.PathLike, settings: Settings) -> None:
        super().__init__(name="zmqgrid-alerts", daemon=True)
        self.path, self.settings = str(path), settings
        self.stop_event = threading.Event()
        self.workers: dict[str, RuleWorker] = {}

    def wake(self) -> None:
        """A commit wrote events: each rule looks now instead of at its next idle poll (called by the master's
        loop after the commit; it only sets events)."""
        for worker in list(self.workers.values()):
            worker.woken.set()

    def stop(self, timeout_s: float = 2.0) -> None:
        """Ends every thread after the attempt it is making; an attempt still running past `timeout_s` is left
        to its own timeout (the threads are daemons: the process does not wait for them)."""
        self.stop_event.set()
        self.wake()
        if self.is_alive():
            self.join(timeout_s)

    def run(self) -> None:
        ledger = DeliveryLedger(self.path)
        next_prune = time.monotonic() + 5.0
        try:
            while not self.stop_event.is_set():
                try:
                    self.supervise(ledger)
                    if time.monotonic() >= next_prune:
                        next_prune = time.monotonic() + PRUNE_EVERY_S
                        pruned = ledger.prune_delivered(time.time() - DELIVERED_KEEP_S, DELIVERED_KEEP_MAX)
                        if pruned:
                            logger.info("alerts: deleted %d events delivered more than %.0f days ago or beyond "
                                        "the newest %d", pruned, DELIVERED_KEEP_S / 86400, DELIVERED_KEEP_MAX)
                except Exception:
                    logger.exception("alerts: supervising the delivery threads failed")
                self.stop_event.wait(POLL_S)
        finally:
            for worker in self.workers.values():
                worker.retired.set()
                worker.woken.set()
            ledger.close()

    def supervise(self, ledger: DeliveryLedger) -> None:
        rules = {row["name"]: Rule.from_row(row) for row in ledger.rules()}
        for name, worker in list(self.workers.items()):
            if rules.get(name) != worker.rule or not worker.is_alive():
                worker.retired.set()
                worker.woken.set()
                del self.workers[name]
        for name, rule in rules.items():
            if name not in self.workers:
                worker = self.workers[name] = RuleWorker(self.path, rule, self.settings, self.stop_event)
                worker.start()
