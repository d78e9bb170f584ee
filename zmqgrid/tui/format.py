"""Short text for cells and headers: durations, times, states in colour, sparklines.

A string a peer chose (device or host name, tag, task name, error) is shown only through `short` or `cell`:
escaped by `printable`, and as a `Text`, never as a str a widget would parse as Rich markup.
"""
from __future__ import annotations

import time
from collections import deque
from typing import Sequence

from rich.text import Text

from ..model import DeviceState, TaskState
from ..text import printable

TASK_STATE_STYLES = {TaskState.QUEUED: "cyan", TaskState.ASSIGNED: "blue", TaskState.RUNNING: "yellow",
                     TaskState.DONE: "green", TaskState.FAILED: "bold red", TaskState.TIMED_OUT: "red",
                     TaskState.CANCELLED: "dim", TaskState.QUARANTINED: "magenta"}
DEVICE_STATE_STYLES = {DeviceState.ONLINE: "green", DeviceState.DRAINING: "yellow", DeviceState.OFFLINE: "bold red",
                       DeviceState.PENDING: "dim"}
BARS = "▁▂▃▄▅▆▇█"


def duration(seconds: float | None) -> str:
    """1.2s, 42s, 3m05s, 2h04m, 3d02h."""
    if seconds is None:
        return "-"
    seconds = max(0.0, seconds)
    if seconds < 10:
        return f"{seconds:.1f}s"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def clock(ts: float | None) -> str:
    """Local time of day (the dashboard is watched live; tasks show has the full date)."""
    return "-" if not ts else time.strftime("%H:%M:%S", time.localtime(ts))


def day_clock(ts: object) -> str:
    """Weekday, day of the month and local time ("Mon 14 06:00:00"): a schedule's next run may be days away."""
    if not isinstance(ts, (int, float)) or isinstance(ts, bool) or ts <= 0:
        return "-"
    return time.strftime("%a %d %H:%M:%S", time.localtime(ts))


def percent(value: object) -> str:
    return f"{value:.0f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "-"


def short(text: object, width: int) -> str:
    """One escaped line of at most `width` characters (see zmqgrid.text.printable); '-' when empty."""
    return "-" if text is None or text == "" else printable(text, width)


def cell(text: object, width: int = 200) -> Text:
    """`short` as a Text: a DataTable would parse a str cell as markup ("[link=...]" in a device name)."""
    return Text(short(text, width), no_wrap=True)


def styled_state(state: str | None, styles: dict[str, str] = TASK_STATE_STYLES, suffix: str = "") -> Text:
    state = state or "-"
    return Text(state + suffix, style=styles.get(state, ""))


def describe_error(error: dict | None, width: int = 400) -> str:
    if not error:
        return ""
    return printable(f"{error.get('type')}: {error.get('message')}", width)


def task_command(task: dict) -> str:
    """What a task runs, from a list row (its name defaults to the command) or a full spec."""
    spec = task.get("spec") or {}
    return printable(spec.get("command") or spec.get("function") or spec.get("filename") or task.get("name") or "-",
                     400)


def seen_ago(device: dict, at: float) -> float | None:
    """Seconds since the device was last heard from, as of `at` (None: never). When the master gives no
    seconds_since_heartbeat (an older one did not for a device it had not heard from since it started), the row's
    last_seen_at says when."""
    seconds = device.get("seconds_since_heartbeat")
    if isinstance(seconds, (int, float)) and not isinstance(seconds, bool):
        return seconds
    last = device.get("last_seen_at")
    if isinstance(last, (int, float)) and not isinstance(last, bool) and last > 0 and at > 0:
        return max(0.0, at - last)
    return None


def device_tasks(device: dict) -> str:
    """Tasks running / slots, then +N for those assigned to it that wait for a slot: "2/3", "3/3 +2"."""
    slots = device.get("concurrency", "-")
    if "assigned" not in device:   # a master that tells only in_flight (assigned and running together)
        return short(f"{device.get('in_flight', 0)}/{slots}", 24)
    assigned = device.get("assigned")
    return short(f"{device.get('running', 0)}/{slots}" + (f" +{assigned}" if assigned else ""), 24)


def task_duration(task: dict, now: float) -> float | None:
    started = task.get("started_at")
    if not started:
        return None
    return (task.get("finished_at") or now) - started


def spark(values: Sequence[float], width: int, top: float | None = None) -> str:
    """The last `width` values as block characters, scaled to `top` (default: their maximum)."""
    if width <= 0:
        return ""
    tail = list(values)[-width:]
    if not tail:
        return " " * width
    ceiling = top if top is not None else max(tail)
    if ceiling <= 0:
        return (BARS[0] * len(tail)).rjust(width)
    bars = "".join(BARS[min(len(BARS) - 1, max(0, round(v / ceiling * (len(BARS) - 1))))] for v in tail)
    return bars.rjust(width)


class RateHistory:
    """Per-second rates from successive readings of a growing counter (tasks done), for a sparkline."""

    def __init__(self, size: int = 120) -> None:
        self.rates: deque[float] = deque(maxlen=size)
        self.last: tuple[float, float] | None = None

    def add(self, count: float, at: float) -> None:
        if self.last is not None and at > self.last[1]:
            # A master restarted on another ledger can go backwards: that is not negative throughput.
            self.rates.append(max(0.0, count - self.last[0]) / (at - self.last[1]))
        if self.last is None or at > self.last[1]:
            self.last = (count, at)

    def reset_baseline(self) -> None:
        self.last = None

    @property
    def current(self) -> float:
        return self.rates[-1] if self.rates else 0.0
