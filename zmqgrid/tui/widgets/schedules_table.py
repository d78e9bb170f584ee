"""Provides the schedules table: the master's cron schedules, with their next run and last firing."""
from __future__ import annotations

from typing import Any

from textual.binding import Binding

from ..format import cell, day_clock, short, styled_state
from .keyed_table import KeyedTable

SCHEDULE_STATE_STYLES = {"active": "green", "paused": "yellow"}


class SchedulesTable(KeyedTable):
    """Schedules as the master lists them, by name."""

    COLUMNS = [("name", "SCHEDULE"), ("state", "STATE"), ("next", "NEXT RUN"), ("cron", "CRON"),
               ("last", "LAST FIRED"), ("fired", "FIRED"), ("missed", "MISSED"), ("task", "TASK")]
    PRIORITY = ("name", "state", "next", "cron", "last", "fired", "task", "missed")

    BINDINGS = [
        Binding("enter,i", "screen.schedule_detail", "Details", key_display="⏎",
                tooltip="Every field of the schedule and the task it fires"),
        Binding("p", "screen.schedule('pause')", "Pause", tooltip="Stop firing it until it is resumed"),
        Binding("u", "screen.schedule('resume')", "Resume", tooltip="Fire it again from its next tick"),
    ]

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.schedules: list[dict] = []

    def show(self, schedules: list[dict]) -> None:
        self.schedules = [s for s in schedules if isinstance(s, dict) and isinstance(s.get("name"), str)]
        self.sync([(s["name"], self.cells_of(s)) for s in self.schedules])

    def cells_of(self, schedule: dict) -> dict[str, Any]:
        fired = schedule.get("fired_count")
        return {
            "name": cell(schedule["name"], 40),
            "state": styled_state(short(schedule.get("state"), 16), SCHEDULE_STATE_STYLES),
            "next": day_clock(schedule.get("next_at")),
            "cron": cell(schedule.get("cron"), 40),
            "last": day_clock(schedule.get("last_fired_at")),
            "fired": str(fired) if isinstance(fired, int) else "-",
            "missed": cell(schedule.get("missed"), 16),
            "task": cell(schedule.get("task"), 40),
        }

    def selected(self) -> dict | None:
        """The schedule under the cursor."""
        key = self.selected_key
        return next((s for s in self.schedules if s["name"] == key), None)

    def describe(self) -> str:
        paused = sum(1 for s in self.schedules if s.get("state") == "paused")
        if not self.schedules:
            return "Schedules: none (add one with: python main.py schedules add)"
        return f"Schedules {len(self.schedules)}" + (f" · {paused} paused" if paused else "")
