"""Provides the tasks table: one page of tasks from the master, newest first."""
from __future__ import annotations

from typing import Any

from textual.binding import Binding

from ..format import cell, duration, styled_state, task_duration
from .keyed_table import KeyedTable


class TasksTable(KeyedTable):
    """A page of tasks. State and device filters are asked of the master; the text filter narrows the page."""

    COLUMNS = [("id", "ID"), ("state", "STATE"), ("command", "COMMAND / FUNCTION"), ("device", "DEVICE"),
               ("attempt", "TRY"), ("duration", "TOOK"), ("exit", "EXIT"), ("kind", "KIND"), ("tags", "TAGS")]
    OTHER_COLUMNS_WIDTH = 58
    """What the columns but the command take at most, padding included: the command gets the rest (20-40)."""

    BINDINGS = [
        Binding("enter", "select_cursor", "Open", tooltip="Spec, attempts, result and live output"),
        Binding("k", "screen.cancel_task", "Cancel", tooltip="Cancel the task (kills it if it runs)"),
        Binding("R", "screen.requeue_task", "Requeue", tooltip="Queue a failed, cancelled or quarantined task again"),
        Binding("s", "screen.cycle_state", "State", tooltip="Show only tasks in the next state"),
        Binding("left_square_bracket", "screen.page(-1)", "Previous page", key_display="[", show=False),
        Binding("right_square_bracket", "screen.page(1)", "Next page", key_display="]", show=False),
    ]

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.tasks: list[dict] = []
        self.filter_text = ""
        self.now = 0.0
        self.command_width = 40

    def on_resize(self) -> None:
        width = max(20, min(40, self.size.width - self.OTHER_COLUMNS_WIDTH))
        if width != self.command_width:
            self.command_width = width
            self.show()

    def show(self, tasks: list[dict] | None = None, now: float | None = None) -> None:
        """Show `tasks` (or the last page again, after a filter change); durations of running tasks run to `now`."""
        if tasks is not None:
            self.tasks = tasks
        if now is not None:
            self.now = now
        self.sync([(t["id"], self.cells_of(t)) for t in self.tasks if self.matches(t)])

    def matches(self, task: dict) -> bool:
        if not self.filter_text:
            return True
        haystack = " ".join(str(task.get(k) or "") for k in ("id", "name", "kind", "state", "device_id"))
        haystack += " " + " ".join(task.get("tags") or [])
        return self.filter_text.lower() in haystack.lower()

    def cells_of(self, task: dict) -> dict[str, Any]:
        exit_code = task.get("exit_code")
        retries = task.get("retries")
        attempt = task.get("attempt") or 0
        return {
            "id": cell(task["id"], 64),
            "kind": cell(task.get("kind"), 8),
            "command": cell(task.get("name"), self.command_width),
            "state": styled_state(task.get("state")),
            "device": cell(task.get("device_id"), 16),
            "attempt": f"{attempt}/{retries + 1}" if isinstance(retries, int) else str(attempt),
            "duration": duration(task_duration(task, self.now)),
            "exit": "-" if exit_code is None else str(exit_code),
            "tags": cell(",".join(task.get("tags") or []), 16),
        }
