"""Provides the task detail screen: spec, attempts, result or error, and the output followed live."""
from __future__ import annotations

import json

from rich.markup import escape
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Input, Static

from ..format import cell, clock, describe_error, duration, short, styled_state, task_command, task_duration
from ..messages import TaskFetched
from ...model import FINAL_STATES, TaskState
from ...text import visible_output
from ..source import Source
from ..widgets import OutputLog
from .dialogs import ask_then_do

FOLLOW_S = 0.5
"""How often a running task's detail and new output are fetched."""


class TaskScreen(Screen):
    """One task. Its output is tailed while it runs; `/` finds text in it."""

    BINDINGS = [
        Binding("escape", "back", "Back"),
        Binding("t", "toggle_tail", "Tail", tooltip="Follow new output (on while the task runs)"),
        Binding("slash,ctrl+f", "find", "Find", key_display="/"),
        Binding("n", "find_next(1)", "Next match"),
        Binding("N", "find_next(-1)", "Prev match", show=False),
        Binding("k", "cancel_task", "Cancel"),
        Binding("R", "requeue_task", "Requeue"),
    ]

    def __init__(self, task_id: str, source: Source) -> None:
        super().__init__()
        self.task_id = task_id
        self.source = source
        self.detail: dict | None = None
        self.offsets = (0, 0)
        self.attempt_shown: int | None = None
        self.ended_attempt: int | None = None
        self.fetching = False
        self.complete = False
        """The task is final and all its output is shown: nothing more to fetch."""
        self.find_status = ""
        self.fetch_error = ""

    def compose(self) -> ComposeResult:
        yield Static(f"Task {self.task_id} …", id="task-summary")
        yield DataTable(id="attempts", cursor_type="row", zebra_stripes=True)
        yield Static("Output", id="output-title", classes="panel-title")
        yield OutputLog(id="output")
        yield Input(id="find", placeholder="find in the output; enter or escape: back to the output, then n / N: "
                    "next / previous match")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        table = self.query_one("#attempts", DataTable)
        for key, label in (("attempt", "#"), ("device", "DEVICE"), ("state", "STATE"), ("assigned", "ASSIGNED"),
                           ("started", "STARTED"), ("finished", "FINISHED"), ("took", "TOOK"), ("exit", "EXIT"),
                           ("error", "ERROR")):
            table.add_column(label, key=key)
        self.query_one(OutputLog).focus()
        self.set_interval(FOLLOW_S, self.tick)
        self.tick()

    def tick(self) -> None:
        if self.fetching or self.complete:
            return
        self.fetching = True
        self.fetch(*self.offsets)

    @work(thread=True, group="task-detail", exit_on_error=False)
    def fetch(self, stdout_from: int, stderr_from: int) -> None:
        source = self.source
        try:
            task = source.task(self.task_id)
            output = source.output(self.task_id, stdout_from, stderr_from)
        except Exception as e:   # shown on the screen; the next tick tries again
            self.post_message(TaskFetched(self.task_id, None, None, str(e) or type(e).__name__))
            return
        self.post_message(TaskFetched(self.task_id, task, output))

    def on_task_fetched(self, message: TaskFetched) -> None:
        self.fetching = False
        self.fetch_error = message.error
        if message.task is not None:
            self.detail = message.task
            self.show_task(message.task)
        out, log = message.output, self.query_one(OutputLog)
        if out is not None:
            if self.attempt_shown != out.attempt:
                if self.offsets != (0, 0):   # a new attempt began: what we asked for was cut from the old one
                    self.offsets = (0, 0)
                    self.attempt_shown = out.attempt
                    log.restart(f"── attempt {out.attempt} ──")
                    self.update_output_title()
                    return
                self.attempt_shown = out.attempt
            log.append("stdout", out.stdout)
            log.append("stderr", out.stderr)
            self.offsets = (out.stdout_length, out.stderr_length)
            if out.is_final and self.detail is not None and self.detail.get("state") in FINAL_STATES:
                if self.ended_attempt != out.attempt:
                    self.ended_attempt = out.attempt
                    log.flush()
                    traceback = (self.detail.get("error") or {}).get("traceback")
                    if traceback:
                        lines = visible_output(str(traceback).rstrip()).splitlines()
                        log.write_lines(["── traceback ──", *lines])
                self.complete = True
        self.update_output_title()

    def show_task(self, task: dict) -> None:
        now = self.source.now()
        self.query_one("#task-summary", Static).update(summary(task, now))
        table = self.query_one("#attempts", DataTable)
        table.clear()
        for a in task.get("attempts") or []:
            took = None
            if a.get("started_at"):
                took = (a.get("finished_at") or now) - a["started_at"]
            table.add_row(str(a.get("attempt")), cell(a.get("device_id"), 64),
                          styled_state(a.get("state"), suffix=" (stale)" if a.get("stale") else ""),
                          clock(a.get("assigned_at")), clock(a.get("started_at")), clock(a.get("finished_at")),
                          duration(took), "-" if a.get("exit_code") is None else str(a["exit_code"]),
                          cell(describe_error(a.get("error")), 40), key=str(a.get("attempt")))

    def update_output_title(self) -> None:
        log = self.query_one(OutputLog)
        parts = [f"Output of attempt {self.attempt_shown}" if self.attempt_shown else "Output (none yet)",
                 f"{log.line_count} lines"]
        if self.find_status:
            parts.append(self.find_status)
        parts.append("tail on" if log.tail else "tail off (t)")
        if not self.complete and self.detail is not None:
            parts.append("following")
        if self.fetch_error:
            parts.append(f"[red]{escape(short(self.fetch_error, 200))}[/]")
        self.query_one("#output-title", Static).update(" · ".join(parts))

    # ------------------------------------------------------------ keys

    def action_back(self) -> None:
        if self.query_one("#find", Input).has_class("visible"):
            self.close_find()
            return
        self.app.pop_screen()

    def action_toggle_tail(self) -> None:
        log = self.query_one(OutputLog)
        log.tail = not log.tail
        self.update_output_title()

    def action_find(self) -> None:
        box = self.query_one("#find", Input)
        box.add_class("visible")
        box.focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "find":
            self.report_find(self.query_one(OutputLog).find(event.value), event.value)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        # Enter keeps the match shown and gives the keys back to the output, where n and N step through the matches.
        if event.input.id == "find":
            self.close_find()

    def close_find(self) -> None:
        self.query_one("#find", Input).remove_class("visible")
        self.query_one(OutputLog).focus()

    def action_find_next(self, step: int) -> None:
        log = self.query_one(OutputLog)
        self.report_find(log.find_next(step), log.finder.term)

    def report_find(self, found: tuple[int, int], term: str) -> None:
        number, count = found
        self.find_status = "" if not term else f"{term!r} " + (f"{number}/{count}" if count else "not found")
        self.update_output_title()

    def action_cancel_task(self) -> None:
        ask_then_do(self, f"Cancel task {self.task_id}?", "A queued task is cancelled at once; a running one is "
                    "killed on its worker (its whole process tree).", "cancel", self.source.cancel, [self.task_id])

    def action_requeue_task(self) -> None:
        def follow_again() -> None:
            self.complete = False
        ask_then_do(self, f"Queue task {self.task_id} again?", "Its retries start afresh.", "requeue",
                    self.source.requeue, [self.task_id], then=follow_again)


def summary(task: dict, now: float) -> Text:
    """The task's spec, state, times and outcome, a few lines."""
    spec = task.get("spec") or {}
    state = task.get("state")
    retries = task.get("retries")
    text = Text.assemble(("Task ", "bold"), (short(task["id"], 64), "bold cyan"),
                         f" · {short(task.get('kind'), 8)} · ", styled_state(state))
    if task.get("device_id"):
        text.append(f" on {short(task['device_id'], 64)}")
    text.append(f" · attempt {task.get('attempt') or 0}" + (f" of {retries + 1}" if isinstance(retries, int) else ""))
    lines = [text, Text.assemble(("runs     ", "bold"), short(task_command(task), 200))]
    if spec.get("args") or spec.get("kwargs"):
        lines.append(Text.assemble(("args     ", "bold"), short(json.dumps([spec.get("args"), spec.get("kwargs")]),
                                                                   200)))
    options = [f"priority {task.get('priority', 0)}", f"timeout {duration(task.get('timeout_s'))}",
               f"tags {short(','.join(task.get('tags') or []), 100)}", f"device {short(task.get('device_req'), 64)}"]
    if spec.get("name") and short(spec["name"], 200) != task_command(task):
        options.append(f"name {short(spec['name'], 200)}")
    lines.append(Text.assemble(("options  ", "bold"), " · ".join(options)))
    if spec.get("project"):   # pinned by the master at submit: the version the task runs
        lines.append(Text.assemble(("project  ", "bold"), short(spec["project"], 140)))
    lines.append(Text.assemble(("times    ", "bold"), f"created {clock(task.get('created_at'))} · started "
                               f"{clock(task.get('started_at'))} · finished {clock(task.get('finished_at'))} · took "
                               f"{duration(task_duration(task, now))}"))
    lines.append(outcome(task))
    return Text("\n").join(lines)


def outcome(task: dict) -> Text:
    state = task.get("state")
    if state == TaskState.QUEUED and task.get("waiting"):
        return Text.assemble(("waiting  ", "bold"), (short(task["waiting"], 400), "yellow"))
    if state not in FINAL_STATES:
        line = Text.assemble(("result   ", "bold"), ("not yet", "dim"))
        if task.get("error"):   # the attempt before this one
            line.append(f" · the last attempt ended: {describe_error(task['error'])}", style="dim")
        return line
    if task.get("error"):
        line = Text.assemble(("error    ", "bold"), (describe_error(task["error"]), "red"))
        if task.get("exit_code") is not None:
            line.append(f" · exit {task['exit_code']}")
        if task.get("deaths"):
            line.append(f" · its worker died {task['deaths']} time(s) running it")
        return line
    if state == TaskState.DONE:
        value = "" if task.get("value") is None else f" · value {short(json.dumps(task['value']), 120)}"
        return Text.assemble(("result   ", "bold"), (f"exit {task.get('exit_code')}", "green"), value)
    if task.get("reason"):
        return Text.assemble(("reason   ", "bold"), short(task["reason"], 400))
    return Text.assemble(("result   ", "bold"), ("not yet", "dim"))
