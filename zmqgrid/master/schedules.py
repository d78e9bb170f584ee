"""Cron-like schedules: held in memory, kept in the ledger, fired by the master loop once per tick.

Exactly once per tick: a firing's task id is `sched-<name>-<tick in epoch seconds>`, and the task insert and the
schedule's new `next_at` are staged into the same commit. A crash before that commit loses both (the tick fires
again after the restart); a firing repeated anyway carries the same id and `Board.submit` drops it.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import ProtocolError, ScheduleNotFound, UsageError, ZmqgridError
from ..model import is_valid_id, validate_task_spec
from ..store import schedule_store
from ..store.task_store import TaskStore
from .cron import Cron, parse

if TYPE_CHECKING:
    from .projects import Projects

logger = logging.getLogger(__name__)

MISSED_POLICIES = ("run_once", "skip")
OPS = ("add", "remove", "pause", "resume")
# A tick the master reaches more than this late was missed (the master was down or stalled): the policy decides.
MISFIRE_GRACE_S = 5.0
# The task id sched-<name>-<tick> must stay within the 64 characters of a task id: 6 + 40 + 1 + up to 11 digits.
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,39}$")


def task_id(name: str, tick: float) -> str:
    """The id of the task a schedule fires for a tick: the same on every attempt to fire that tick."""
    return f"sched-{name}-{int(tick)}"


@dataclass
class Schedule:
    name: str
    cron: Cron
    spec: dict                       # validated, without id
    missed: str = "run_once"
    paused: bool = False
    next_at: float | None = None     # the next tick to fire; None while paused
    last_fired_at: float | None = None
    created_at: float = 0.0
    fired_count: int = 0

    def view(self) -> dict:
        """What clients see (`schedules list`): the script's text is left out, as in `tasks show`."""
        spec = {k: v for k, v in self.spec.items() if k != "source"}
        return {"name": self.name, "cron": self.cron.expr, "missed": self.missed,
                "state": "paused" if self.paused else "active", "next_at": self.next_at,
                "last_fired_at": self.last_fired_at, "fired_count": self.fired_count, "created_at": self.created_at,
                "task": spec.get("name"), "spec": spec}


class Schedules:
    """Every schedule of the master. Changes stage ledger writes; the caller's turn commits them."""

    def __init__(self, store: TaskStore) -> None:
        self.store = store
        self.items: dict[str, Schedule] = {}
        # What a firing's `project` is pinned by (set by the master); without it a task with one is refused
        self.projects: Projects | None = None
        self.load()

    def load(self) -> None:
        items = {}
        for row in schedule_store.load_schedules(self.store):
            try:
                cron = parse(row["cron"])
            except UsageError as e:   # only a hand-edited ledger gets here; the others still fire
                logger.error("schedule name=%s not loaded: %s", row["name"], e)
                continue
            items[row["name"]] = Schedule(row["name"], cron, row["spec"], row["missed"], row["paused"], row["next_at"],
                                          row["last_fired_at"], row["created_at"], row["fired_count"])
        self.items = items
        logger.info("loaded %d schedules (%d paused) from %s", len(items),
                    sum(1 for s in items.values() if s.paused), self.store.path)

    def reload(self) -> None:
        """After a failed commit: what this turn fired was not committed, so it fires again (with the same ids)."""
        try:
            self.load()
        except Exception as e:  # StoreError, sqlite3.Error, a damaged row: keep this view rather than stop the loop
            logger.error("schedules reload failed (%s); keeping the previous view", e)

    # ------------------------------------------------------------ operator changes

    def control(self, params: dict, now: float) -> dict:
        """One Control `schedule` request: {op: add|remove|pause|resume, name, ...}; returns the reply data."""
        op, name = params.get("op"), params.get("name")
        if op not in OPS:
            raise UsageError(f"schedule: op {op!r} is unknown; allowed: {', '.join(OPS)}")
        if not isinstance(name, str):
            raise UsageError("schedule: 'name' must be a string")
        if op == "add":
            return self.add(name, params.get("cron"), params.get("spec"), params.get("missed") or "run_once", now)
        if op == "remove":
            return self.remove(name)
        return self.pause(name) if op == "pause" else self.resume(name, now)

    def add(self, name: str, cron_expr: Any, spec: Any, missed: str, now: float) -> dict:
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise UsageError(f"schedule name {name!r} is not allowed; use 1-40 of A-Z a-z 0-9 _ . : - "
                             "starting with a letter or digit")
        if name in self.items:
            raise UsageError(f"schedule {name!r} exists", f"remove it first: python main.py schedules remove {name}")
        if missed not in MISSED_POLICIES:
            raise UsageError(f"missed policy {missed!r} is unknown; allowed: {', '.join(MISSED_POLICIES)}")
        cron = parse(cron_expr)
        if not isinstance(spec, dict):
            raise UsageError(f"schedule {name!r}: the task must be an object, got {type(spec).__name__}")
        try:
            checked = validate_task_spec({k: v for k, v in spec.items() if k != "id"})
        except ProtocolError as e:
            raise UsageError(f"schedule {name!r}: {e.message}") from None
        checked.pop("id")
        if checked.get("project"):
            checked["project"] = self._project(name, checked["project"])
        assert is_valid_id(task_id(name, 99_999_999_999)), name
        schedule = Schedule(name, cron, checked, missed, next_at=cron.next_after(now), created_at=now)
        self.items[name] = schedule
        schedule_store.insert_schedule(self.store, {**schedule.__dict__, "cron": cron.expr})
        logger.info("schedule added name=%s cron=%r missed=%s next_at=%.0f", name, cron.expr, missed, schedule.next_at)
        return schedule.view()

    def _project(self, name: str, ref: str) -> str:
        """A schedule's `project` as kept: NAME stays NAME (each firing pins the latest version of then), a
        version is kept whole; refused if the master holds no such project or version now."""
        if self.projects is None:
            raise UsageError(f"schedule {name!r}: this master keeps no projects")
        try:
            pinned = self.projects.pin(ref)
        except ZmqgridError as e:   # said as bad_request: a not_found here reads to the client as "no schedule"
            raise UsageError(f"schedule {name!r}: {e.message}", e.hint) from None
        return pinned if "@" in ref else ref

    def get(self, name: str) -> Schedule:
        schedule = self.items.get(name)
        if schedule is None:
            raise ScheduleNotFound(f"no schedule {name!r}")   # the client's command line says how to list them
        return schedule

    def remove(self, name: str) -> dict:
        schedule = self.get(name)
        del self.items[name]
        schedule_store.delete_schedule(self.store, name)
        logger.info("schedule removed name=%s", name)
        return dict(schedule.view(), state="removed", next_at=None)

    def pause(self, name: str) -> dict:
        schedule = self.get(name)
        if not schedule.paused:
            schedule.paused, schedule.next_at = True, None
            schedule_store.set_paused(self.store, name, True, None)
            logger.info("schedule paused name=%s", name)
        return schedule.view()

    def resume(self, name: str, now: float) -> dict:
        """Ticks that passed while paused are not fired: the schedule goes on from the next tick after now."""
        schedule = self.get(name)
        if schedule.paused:
            schedule.paused, schedule.next_at = False, schedule.cron.next_after(now)
            schedule_store.set_paused(self.store, name, False, schedule.next_at)
            logger.info("schedule resumed name=%s next_at=%.0f", name, schedule.next_at)
        return schedule.view()

    def rows(self) -> list[dict]:
        return [s.view() for s in sorted(self.items.values(), key=lambda s: s.name)]

    # ------------------------------------------------------------ the loop

    def _firing(self, s: Schedule, tick: float) -> dict | None:
        """The task of one tick, its project pinned to the version now (None: that project is gone, the tick is
        not fired, and the log says why)."""
        spec = dict(s.spec, id=task_id(s.name, tick))
        ref = spec.get("project")   # .get: a schedule saved before `project` lacks it
        if ref:
            try:
                if self.projects is None:
                    raise UsageError("this master keeps no projects")
                spec["project"] = self.projects.pin(ref)
            except ZmqgridError as e:
                logger.error("schedule name=%s tick=%.0f not fired: %s", s.name, tick, e)
                return None
        return spec

    def seconds_until_due(self, now: float) -> float:
        """How long the master may wait before the next tick is due (inf: no active schedule)."""
        due = [s.next_at for s in self.items.values() if s.next_at is not None and not s.paused]
        return max(0.0, min(due) - now) if due else float("inf")

    def fire_due(self, now: float) -> list[dict]:
        """Task specs for the ticks due at `now` (at most one per schedule), with the schedules' progress staged.

        Several ticks due at once (downtime, or a stall longer than the interval) are one firing for the latest
        of them, or none with `missed=skip` when even the latest is more than MISFIRE_GRACE_S old.
        """
        specs = []
        for s in self.items.values():
            if s.paused or s.next_at is None or s.next_at > now:
                continue
            latest = s.next_at if s.cron.next_after(s.next_at) > now else max(s.next_at, s.cron.last_at_or_before(now))
            on_time = now - latest <= MISFIRE_GRACE_S
            fire = on_time or s.missed == "run_once"
            if fire:
                spec = self._firing(s, latest)
                fire = spec is not None
                if fire:
                    specs.append(spec)
                    s.last_fired_at, s.fired_count = latest, s.fired_count + 1
            if latest != s.next_at or not on_time:
                logger.info("schedule name=%s missed ticks from %.0f to %.0f (now %.0f); missed=%s: %s", s.name,
                            s.next_at, latest, now, s.missed, f"fired tick {latest:.0f}" if fire else "none fired")
            else:
                logger.debug("schedule name=%s fired tick=%.0f", s.name, latest)
            s.next_at = s.cron.next_after(max(now, latest))
            schedule_store.save_progress(self.store, s.name, s.next_at, s.last_fired_at, s.fired_count)
        return specs
