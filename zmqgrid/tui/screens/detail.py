"""Provides the detail dialog of a device, a schedule or a project: every field, the columns a narrow table leaves
out too."""
from __future__ import annotations

import json

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from ...model import DeviceState
from ...projects.sync import holding_in_words
from ...text import byte_size
from ..format import day_clock, duration, percent, seen_ago, short


class DetailScreen(ModalScreen[None]):
    """A title and (label, value) lines; escape closes it. Values are shown as text, never as markup."""

    BINDINGS = [Binding("escape,q,i", "dismiss", "Close", key_display="esc")]

    def __init__(self, title: str, fields: list[tuple[str, str]]) -> None:
        super().__init__()
        self.title_text = title
        self.fields = fields

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="detail", classes="dialog"):
            yield Static(self.render_fields(), id="detail-text")

    def render_fields(self) -> Group:
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="bold", no_wrap=True)
        grid.add_column()
        for label, value in self.fields:
            grid.add_row(label, Text(value))
        return Group(Text(self.title_text, style="bold"), Text(""), grid, Text(""), Text("esc closes", style="dim"))


def device_fields(device: dict, at: float) -> list[tuple[str, str]]:
    """Every field of a device row, as a person reads it (peer strings through `short`)."""
    state = device.get("state")
    metrics = device.get("metrics") if isinstance(device.get("metrics"), dict) else {}
    seen = seen_ago(device, at)
    last = device.get("last_seen_at")
    seen_text = "never" if seen is None else f"{duration(seen)} ago" + (
        f" (at {day_clock(last)})" if isinstance(last, (int, float)) else "")
    figures = " · ".join(f"{name} {percent(metrics.get(key))}%".replace("-%", "-") for name, key in
                         (("cpu", "cpu_percent"), ("memory", "memory_percent"), ("disk", "disk_percent")))
    if metrics.get("load_1m") is not None:
        figures += f" · load {short(metrics.get('load_1m'), 12)}"
    fields = [("device", short(device.get("device_id"), 64)), ("name", short(device.get("name"), 128)),
              ("state", short(state, 16)), ("last seen", seen_text),
              ("tasks", tasks_in_words(device)),
              ("credit", short(device.get("credit"), 16)),
              ("commands", f"{short(device.get('pending_commands'), 16)} sent to it and not acknowledged yet"),
              ("metrics" if state != DeviceState.OFFLINE else "last metrics",
               figures + (" (its last heartbeat's, not live)" if state == DeviceState.OFFLINE else ""))]
    held = metrics.get("prefetch")
    if isinstance(held, int) and not isinstance(held, bool) and state != DeviceState.OFFLINE:
        fields.insert(5, ("prefetch", f"{held} tasks held beyond its slots now, " + (
            "sized by the worker (adaptive)" if metrics.get("prefetch_adaptive") is True else "fixed by its config")))
    if metrics.get("clock_offset_s") is not None:
        fields.append(("clock offset", f"{short(metrics.get('clock_offset_s'), 16)} s (its clock minus the master's)"))
    fields += [("host", short(device.get("hostname"), 255)), ("os", short(device.get("os"), 255)),
               ("python", short(device.get("python_version"), 255)),
               ("executable", short(device.get("python_executable"), 400)),
               *python_env_fields(device),
               ("tags", short(", ".join(map(str, device.get("tags") or [])), 400)),
               ("pid", short(device.get("pid"), 16)), ("version", short(device.get("version"), 64)),
               ("registered", day_clock(device.get("registered_at")))]
    return fields


def python_env_fields(device: dict) -> list[tuple[str, str]]:
    """A line per interpreter of the worker's python_envs: the version it answered and its path (peer text)."""
    envs = device.get("python_envs") if isinstance(device.get("python_envs"), list) else []
    return [(f"python env {short(e.get('name'), 48)}",
             f"Python {short(e.get('version'), 64)} · {short(e.get('executable'), 400)}")
            for e in envs[:16] if isinstance(e, dict)]


def tasks_in_words(device: dict) -> str:
    slots = short(device.get("concurrency"), 16)
    if "assigned" not in device:   # a master that tells in_flight only
        return f"{short(device.get('in_flight'), 16)} in {slots} slots"
    return (f"{short(device.get('running'), 16)} running in {slots} slots · {short(device.get('assigned'), 16)} "
            "assigned, waiting for a slot")


def schedule_fields(schedule: dict) -> list[tuple[str, str]]:
    """Every field of a schedule row, and the spec of the task it fires."""
    spec = schedule.get("spec") if isinstance(schedule.get("spec"), dict) else {}
    runs = spec.get("command") or spec.get("function") or spec.get("filename")
    fields = [("schedule", short(schedule.get("name"), 64)), ("state", short(schedule.get("state"), 16)),
              ("cron", short(schedule.get("cron"), 120) + " (the master's local time)"),
              ("next run", day_clock(schedule.get("next_at"))),
              ("last fired", day_clock(schedule.get("last_fired_at"))),
              ("fired", short(schedule.get("fired_count"), 16) + " time(s)"),
              ("missed ticks", short(schedule.get("missed"), 16)), ("created", day_clock(schedule.get("created_at"))),
              ("task", short(schedule.get("task"), 200)), ("kind", short(spec.get("kind"), 16)),
              ("runs", short(runs if isinstance(runs, str) else json.dumps(runs), 400))]
    for key in ("args", "kwargs", "tags", "device", "priority", "timeout", "retries"):
        if spec.get(key) not in (None, [], {}):
            fields.append((key, short(json.dumps(spec[key], default=str), 400)))
    return fields



def project_fields(versions: list[dict]) -> list[tuple[str, str]]:
    """A project's versions, newest first (the one a task gets without naming a version), a line each."""
    fields = []
    for n, row in enumerate(v for v in versions if isinstance(v, dict)):
        version = row.get("version")
        label = (version[:12] if isinstance(version, str) else "-") + (" (latest)" if n == 0 else "")
        fields.append((label, f"{short(row.get('files'), 16)} files · {byte_size(row.get('size'))} · pushed "
                              f"{day_clock(row.get('pushed_at'))} by {short(row.get('pushed_by'), 16)}"))
        for worker in row.get("workers") or ():   # what each worker's heartbeat says it holds of the version
            if isinstance(worker, dict):
                fields.append((f"  {short(worker.get('device_id'), 64)}", short(holding_in_words(worker), 400)))
    return fields or [("versions", "none")]
