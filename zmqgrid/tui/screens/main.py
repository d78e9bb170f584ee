"""Provides the main screen: cluster header, devices, schedules, projects and tasks panels."""
from __future__ import annotations

import dataclasses
from typing import Any

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Input, Static

from ...errors import ZmqgridError
from ...model import TASK_STATES
from ..format import clock, short
from ..messages import ActionDone, ActionRequested, TaskQueryChanged
from ..source import ClusterSnapshot, Source, TaskQuery
from ..widgets import ClusterHeader, DevicesTable, ProjectsTable, SchedulesTable, TasksTable
from .detail import DetailScreen, device_fields, project_fields, schedule_fields
from .dialogs import SubmitScreen, ask_then_do
from .task import TaskScreen

DEVICE_ACTIONS = {
    "drain": "It finishes the tasks it has and takes nothing new.",
    "resume": "It takes tasks again.",
    "shutdown": "It stops taking tasks, and its worker process exits once idle.",
}
SCHEDULE_ACTIONS = {
    "pause": "It fires nothing until it is resumed; the ticks that pass meanwhile are never fired.",
    "resume": "It fires again from its next tick.",
}


class MainScreen(Screen):
    """The live cluster. Tables freeze while paused; the header keeps moving.

    The app hands it each snapshot (`apply`); it tells the app which page of tasks to fetch by `TaskQueryChanged` and
    asks for actions on the master by `ActionRequested`, whose calls it takes from its `source`.
    """

    BINDINGS = [
        Binding("slash", "filter", "Filter", tooltip="Filter the focused table by text"),
        Binding("c", "clear_filters", "Clear filters", show=False, tooltip="State, device and text filters"),
        Binding("n", "new_task", "New task", tooltip="Submit a shell task"),
        Binding("1", "toggle_panel('devices-panel')", "Show/hide the devices panel", show=False),
        Binding("2", "toggle_panel('tasks-panel')", "Show/hide the tasks panel", show=False),
        Binding("3", "toggle_panel('schedules-panel')", "Show/hide the schedules panel", show=False),
        Binding("4", "toggle_panel('projects-panel')", "Show/hide the projects panel", show=False),
        Binding("escape", "close_filter", "Close filter", show=False),
    ]

    def __init__(self, source: Source, task_query: TaskQuery) -> None:
        super().__init__()
        self.source = source
        self.task_query = task_query
        """The page of tasks asked for; the tables show `shown_query` until a snapshot of this one arrives."""
        self.shown_query: TaskQuery | None = None
        self.filter_target: DevicesTable | TasksTable | None = None

    def compose(self) -> ComposeResult:
        yield ClusterHeader(self.source.master_url, id="header")
        with Vertical(id="devices-panel"):
            yield Static("Devices", id="devices-title", classes="panel-title")
            yield DevicesTable(id="devices")
        with Vertical(id="schedules-panel"):
            yield Static("Schedules", id="schedules-title", classes="panel-title")
            yield SchedulesTable(id="schedules")
        with Vertical(id="projects-panel"):
            yield Static("Projects", id="projects-title", classes="panel-title")
            yield ProjectsTable(id="projects")
        with Vertical(id="tasks-panel"):
            yield Static("Tasks", id="tasks-title", classes="panel-title")
            yield TasksTable(id="tasks")
        yield Input(id="filter")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one(TasksTable).focus()

    def apply(self, snapshot: ClusterSnapshot, paused: bool, refresh_s: float) -> None:
        """Show a snapshot: always in the header, in the tables unless paused (a changed query still shows)."""
        self.query_one(ClusterHeader).show(snapshot, paused=paused, refresh_s=refresh_s)
        devices, tasks = self.query_one(DevicesTable), self.query_one(TasksTable)
        if not snapshot.reachable:
            return
        devices.record(snapshot.devices, snapshot.at)
        if paused and snapshot.query == self.shown_query:
            return
        with self.app.batch_update():
            devices.show(snapshot.devices, at=snapshot.at)
            schedules = self.query_one(SchedulesTable)
            schedules.show(snapshot.schedules)
            schedules.display = bool(schedules.schedules)   # none: the panel is its title line alone
            projects = self.query_one(ProjectsTable)
            projects.show(snapshot.projects)
            projects.display = bool(projects.projects)
            tasks.show(snapshot.tasks, now=snapshot.at)
            self.shown_query = snapshot.query
            self.update_titles()

    def set_view(self, paused: bool, refresh_s: float) -> None:
        self.query_one(ClusterHeader).set_view(paused=paused, refresh_s=refresh_s)

    def update_titles(self) -> None:
        devices, tasks = self.query_one(DevicesTable), self.query_one(TasksTable)
        self.query_one("#devices-title", Static).update(devices.describe())
        self.query_one("#schedules-title", Static).update(self.query_one(SchedulesTable).describe())
        self.query_one("#projects-title", Static).update(self.query_one(ProjectsTable).describe())
        query = self.task_query
        page = query.offset // query.limit + 1
        text = f"Tasks · page {page} (rows {query.offset + 1}-{query.offset + len(tasks.tasks)})" if tasks.tasks \
            else f"Tasks · page {page}: none"
        if query.state:
            text += f" · state {query.state}"
        if query.device:
            text += f" · device {query.device}"
        if tasks.filter_text:
            text += f" · filter {tasks.filter_text!r} ({len(tasks.cells)} on this page)"
        self.query_one("#tasks-title", Static).update(text)

    # ------------------------------------------------------------ the task query

    def change_query(self, **changes: Any) -> None:
        self.task_query = dataclasses.replace(self.task_query, **changes)
        self.update_titles()
        self.post_message(TaskQueryChanged(self.task_query))

    def action_cycle_state(self) -> None:
        states = (None, *TASK_STATES)
        current = states.index(self.task_query.state)
        self.change_query(state=states[(current + 1) % len(states)], offset=0)

    def action_page(self, step: int) -> None:
        query = self.task_query
        if step < 0 and query.offset == 0:
            self.notify("already on the first page")
            return
        if step > 0 and len(self.query_one(TasksTable).tasks) < query.limit:
            self.notify("this is the last page")
            return
        self.change_query(offset=max(0, query.offset + step * query.limit))

    def action_clear_filters(self) -> None:
        for table in (self.query_one(DevicesTable), self.query_one(TasksTable)):
            table.filter_text = ""
            table.show()
        self.change_query(state=None, device=None, offset=0)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        key = event.row_key.value
        if key is None:
            return
        if isinstance(event.data_table, TasksTable):
            self.app.push_screen(TaskScreen(key, self.source))
        elif isinstance(event.data_table, DevicesTable):
            self.change_query(device=key, offset=0)
            self.query_one(TasksTable).focus()

    def on_devices_table_view_changed(self, _: DevicesTable.ViewChanged) -> None:
        self.update_titles()

    # ------------------------------------------------------------ text filter

    def action_filter(self) -> None:
        focused = self.focused
        self.filter_target = focused if isinstance(focused, DevicesTable) else self.query_one(TasksTable)
        what = "devices (id, host, OS, tag, state)" if isinstance(self.filter_target, DevicesTable) else \
            "tasks on this page (id, command, state, device, tag)"
        box = self.query_one("#filter", Input)
        box.placeholder = f"filter {what}; enter or escape closes"
        box.value = self.filter_target.filter_text
        box.add_class("visible")
        box.focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "filter" and self.filter_target is not None:
            self.filter_target.filter_text = event.value.strip()
            self.filter_target.show()
            self.update_titles()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "filter":
            self.action_close_filter()

    def action_close_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.remove_class("visible")
        (self.filter_target or self.query_one(TasksTable)).focus()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "close_filter":
            return self.query_one("#filter", Input).has_class("visible")
        return True

    def action_toggle_panel(self, panel_id: str) -> None:
        panel = self.query_one(f"#{panel_id}")
        panel.display = not panel.display

    # ------------------------------------------------------------ actions on the cluster

    def action_cancel_task(self) -> None:
        task_id = self.query_one(TasksTable).selected_key
        if task_id:
            ask_then_do(self, f"Cancel task {task_id}?", "A queued task is cancelled at once; a running one is "
                        "killed on its worker (its whole process tree).", "cancel", self.source.cancel, [task_id])

    def action_requeue_task(self) -> None:
        task_id = self.query_one(TasksTable).selected_key
        if task_id:
            ask_then_do(self, f"Queue task {task_id} again?", "Only a failed, timed-out, cancelled or quarantined "
                        "task can be queued again; its retries start afresh.", "requeue", self.source.requeue,
                        [task_id])

    def action_device(self, action: str) -> None:
        device_id = self.query_one(DevicesTable).selected_key
        if device_id:
            ask_then_do(self, f"{action.capitalize()} device {short(device_id, 64)}?", DEVICE_ACTIONS[action], action,
                        self.source.control_devices, action, [device_id])

    def action_new_task(self) -> None:
        def submit(spec: dict | None) -> None:
            if spec is not None:
                self.post_message(ActionRequested(f"submitted {spec['command'][:40]!r} as", self.source.submit,
                                                  (spec,)))
        self.app.push_screen(SubmitScreen(), submit)

    def action_device_detail(self) -> None:
        table = self.query_one(DevicesTable)
        device = next((d for d in table.devices if d.get("device_id") == table.selected_key), None)
        if device is not None:
            self.app.push_screen(DetailScreen(f"Device {short(device['device_id'], 64)} (as of {clock(table.at)})",
                                              device_fields(device, table.at)))

    def action_schedule_detail(self) -> None:
        schedule = self.query_one(SchedulesTable).selected()
        if schedule is not None:
            self.app.push_screen(DetailScreen(f"Schedule {short(schedule['name'], 64)}", schedule_fields(schedule)))

    def action_project_detail(self) -> None:
        project = self.query_one(ProjectsTable).selected()
        if project is not None:
            self.show_versions(project["name"])

    @work(thread=True, group="project-detail", exclusive=True, exit_on_error=False)
    def show_versions(self, name: str) -> None:
        """Ask the master for the project's versions (a thread: the call blocks), then show them."""
        try:
            versions = self.source.project_versions(name)
        except ZmqgridError as e:
            self.post_message(ActionDone(f"project {short(name, 64)}: {e}", ok=False))
            return
        self.app.call_from_thread(self.app.push_screen, DetailScreen(f"Project {short(name, 64)}",
                                                                     project_fields(versions)))

    def action_schedule(self, op: str) -> None:
        schedule = self.query_one(SchedulesTable).selected()
        if schedule is None:
            return
        name, source = schedule["name"], self.source

        def change() -> str:
            return short(source.control_schedule(op, name).get("state"), 16)
        ask_then_do(self, f"{op.capitalize()} schedule {short(name, 64)}?", SCHEDULE_ACTIONS[op],
                    f"schedule {short(name, 64)}", change)
