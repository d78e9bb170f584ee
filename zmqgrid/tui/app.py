"""Provides DashboardApp, the live cluster in a terminal, and `make_app`, which the CLI and the tests use."""
from __future__ import annotations

from typing import Any, Callable

from textual import work
from textual.app import App
from textual.binding import Binding
from textual.screen import Screen

from ..errors import ZmqgridError
from .format import short
from .messages import ActionDone, ActionRequested, SnapshotFetched, TaskQueryChanged
from .roles import LimitedSource
from .screens import ConfirmScreen, HelpScreen, MainScreen, SubmitScreen, TaskScreen
from .source import ClientSource, ClusterSnapshot, Source, TaskQuery
from .widgets import DevicesTable, ProjectsTable, SchedulesTable, TasksTable

INTERVALS_S = (0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
"""The refresh intervals `+` and `-` step through."""


class DashboardApp(App):
    """Polls a `Source` from a thread worker every `refresh_s` and shows what it answers."""

    CSS_PATH = "dashboard.tcss"
    TITLE = "zmqgrid dashboard"
    ENABLE_COMMAND_PALETTE = False

    BINDINGS = [
        Binding("question_mark", "help", "Help", tooltip="List every key"),
        Binding("space", "pause", "Pause", tooltip="Freeze the tables (the header keeps moving)"),
        Binding("space", "resume", "Resume", tooltip="Unfreeze the tables"),
        Binding("plus,equals_sign", "interval(1)", "Slower", key_display="+", show=False,
                tooltip="Refresh less often"),
        Binding("minus", "interval(-1)", "Faster", key_display="-", show=False, tooltip="Refresh more often"),
        Binding("r", "refresh_now", "Refresh now", show=False),
        Binding("q", "quit", "Quit"),
        Binding("ctrl+c", "quit", "Quit", show=False),
    ]

    def __init__(self, source: Source, refresh_s: float = 1.0) -> None:
        super().__init__()
        self.source = source
        self.refresh_s = refresh_s
        self.paused = False
        self.task_query = TaskQuery()
        """Which page of tasks the next refresh asks for (the main screen changes it by `TaskQueryChanged`)."""
        self.fetching = False
        self.snapshots_applied = 0
        self.last_snapshot: ClusterSnapshot | None = None
        self._timer: Any = None

    def get_default_screen(self) -> Screen:
        return MainScreen(self.source, self.task_query)

    @property
    def main(self) -> MainScreen | None:
        """The main screen; None while the app starts or closes (a late snapshot is then dropped).

        Closing stops the app running before it takes the screens apart, and its message loop may still hand
        us a snapshot while the main screen's widgets are being removed: that snapshot must find no screen.
        """
        stack = self.screen_stack
        if not self.is_running or not stack or not isinstance(stack[0], MainScreen):
            return None
        return stack[0]

    def on_mount(self) -> None:
        self._timer = self.set_interval(self.refresh_s, self.refresh_now)
        self.refresh_now()

    # ------------------------------------------------------------ refresh

    def refresh_now(self) -> None:
        """Ask for a snapshot unless one is already on its way."""
        if self.fetching:
            return
        self.fetching = True
        self.fetch(self.task_query)

    @work(thread=True, group="refresh", exit_on_error=False)
    def fetch(self, query: TaskQuery) -> None:
        try:
            snapshot = self.source.snapshot(query)
        except Exception as e:   # a bug in a source must not stop the refresh loop; the header shows it
            snapshot = ClusterSnapshot({}, [], [], reachable=False, error=f"{type(e).__name__}: {e}",
                                       at=self.source.now(), query=query)
        self.post_message(SnapshotFetched(snapshot))

    def on_snapshot_fetched(self, message: SnapshotFetched) -> None:
        self.fetching = False
        self.last_snapshot = message.snapshot
        if self.main is None:
            return
        self.main.apply(message.snapshot, self.paused, self.refresh_s)
        self.snapshots_applied += 1
        if message.snapshot.query != self.task_query:
            self.refresh_now()   # the filters changed while it was on its way

    def on_task_query_changed(self, message: TaskQueryChanged) -> None:
        self.task_query = message.query
        self.refresh_now()

    def action_refresh_now(self) -> None:
        self.refresh_now()

    def action_pause(self) -> None:
        self.paused = True
        self._view_changed()

    def action_resume(self) -> None:
        self.paused = False
        self._view_changed()
        self.refresh_now()

    def action_interval(self, step: int) -> None:
        slower = [i for i in INTERVALS_S if i > self.refresh_s]
        faster = [i for i in INTERVALS_S if i < self.refresh_s]
        if step > 0 and slower:
            self.refresh_s = slower[0]
        elif step < 0 and faster:
            self.refresh_s = faster[-1]
        if self._timer is not None:
            self._timer.stop()
        self._timer = self.set_interval(self.refresh_s, self.refresh_now)
        self._view_changed()
        self.notify(f"refreshing every {self.refresh_s:g}s", timeout=2)

    def _view_changed(self) -> None:
        if self.main is not None:
            self.main.set_view(self.paused, self.refresh_s)
        self.refresh_bindings()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("pause", "resume"):
            if not self.screen_stack or not isinstance(self.screen_stack[-1], MainScreen):
                return False
            return self.paused == (action == "resume")
        return True

    # ------------------------------------------------------------ actions on the cluster

    def on_action_requested(self, message: ActionRequested) -> None:
        self.perform(message.what, message.call, *message.args)

    @work(thread=True, group="actions", exit_on_error=False)
    def perform(self, what: str, call: Callable[..., Any], *args: Any) -> None:
        """Run one action on the master (cancel, requeue, drain, submit, ...) and report what it answered."""
        try:
            outcome = call(*args)
        except ZmqgridError as e:
            self.post_message(ActionDone(f"{what} failed: {e}", ok=False))
            return
        if isinstance(outcome, dict):
            text = "; ".join(f"{key}: {value}" for key, value in outcome.items()) or "nothing to do"
        elif isinstance(outcome, list):
            text = ", ".join(map(str, outcome))
        else:
            text = str(outcome)
        self.post_message(ActionDone(f"{what} {text}"))

    def on_action_done(self, message: ActionDone) -> None:
        # markup=False and escaped: the text holds the master's answer, which names peers' ids
        self.notify(short(message.text, 400), severity="information" if message.ok else "error",
                    timeout=4 if message.ok else 8, markup=False)
        self.refresh_now()

    # ------------------------------------------------------------ help

    def help_sections(self) -> list[tuple[str, list[Binding]]]:
        return [("Everywhere", list(self.BINDINGS)), ("Dashboard", list(MainScreen.BINDINGS)),
                ("Devices table", list(DevicesTable.BINDINGS)), ("Schedules table", list(SchedulesTable.BINDINGS)),
                ("Projects table", list(ProjectsTable.BINDINGS)),
                ("Tasks table", list(TasksTable.BINDINGS)),
                ("Task detail", list(TaskScreen.BINDINGS)), ("Confirmation", list(ConfirmScreen.BINDINGS)),
                ("Submit form", list(SubmitScreen.BINDINGS))]

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(self.help_sections()))


def make_app(source: Source | str, refresh_s: float = 1.0, timeout_s: float = 2.0,
             curve: Any = None, role: str | None = None) -> DashboardApp:
    """The dashboard on a source, or on the master at a tcp:// URL (with `curve`, a transport.Curve, if secured).

    `role` (read, client, admin) limits its actions to that role's, as the browser dashboard of a token is; None:
    whatever the key allows (the terminal dashboard)."""
    if isinstance(source, str):
        source = ClientSource(source, timeout_s=timeout_s, curve=curve)
    if role is not None:
        source = LimitedSource(source, role)
    app = DashboardApp(source, refresh_s=refresh_s)
    if role is not None:
        app.sub_title = {"read": "read-only", "client": "role client: no cancel, requeue or drain",
                         "admin": "role admin"}[role]
    return app
