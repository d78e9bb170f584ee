"""Provides the devices table: one row per device, with CPU and memory sparklines, sorted and filtered here."""
from __future__ import annotations

from collections import deque
from typing import Any, Callable

from textual.binding import Binding
from textual.message import Message

from ...model import DeviceState
from ..format import DEVICE_STATE_STYLES, cell, device_tasks, duration, percent, seen_ago, spark, styled_state
from .keyed_table import KeyedTable

HISTORY = 30
SPARK_WIDTH = 8
STATE_ORDER = {DeviceState.OFFLINE: 0, DeviceState.DRAINING: 1, DeviceState.PENDING: 2, DeviceState.ONLINE: 3}


def _metric(device: dict, name: str) -> float:
    # An offline device's figures are its last, not live ones: it sorts with the devices that have none.
    if device.get("state") == DeviceState.OFFLINE:
        return -1.0
    value = (device.get("metrics") or {}).get(name)
    return value if isinstance(value, (int, float)) else -1.0


SORTS: list[tuple[str, Callable[[dict], Any], bool]] = [
    # (name, key, highest first)
    ("id", lambda d: d.get("device_id") or "", False),
    ("state", lambda d: (STATE_ORDER.get(d.get("state"), 9), d.get("device_id") or ""), False),
    ("cpu", lambda d: _metric(d, "cpu_percent"), True),
    ("memory", lambda d: _metric(d, "memory_percent"), True),
    ("disk", lambda d: _metric(d, "disk_percent"), True),
    ("tasks", lambda d: d.get("in_flight") or 0, True),
    ("last seen", lambda d: d.get("seconds_since_heartbeat") or 0.0, True),
]


class DevicesTable(KeyedTable):
    """Devices as the master lists them. Sorting and the text filter are applied here, on every device."""

    COLUMNS = [("device", "DEVICE"), ("state", "STATE"), ("seen", "SEEN"), ("run", "TASKS"), ("cpu", "CPU%"),
               ("cpu_spark", "cpu"), ("mem", "MEM%"), ("mem_spark", "mem"), ("disk", "DISK%"), ("host", "HOST"),
               ("os", "OS"), ("tags", "TAGS"), ("python", "PYTHON"), ("name", "NAME")]
    PRIORITY = ("device", "state", "run", "seen", "cpu", "mem", "host", "tags", "disk", "cpu_spark", "mem_spark", "os",
                "python", "name")
    """What a narrow terminal keeps: every column is in the device's detail (i)."""

    BINDINGS = [
        Binding("enter", "select_cursor", "Its tasks", tooltip="Show only this device's tasks"),
        Binding("i", "screen.device_detail", "Details", tooltip="Every field of the device, the columns left out too"),
        Binding("d", "screen.device('drain')", "Drain", tooltip="Finish what it has, take nothing new"),
        Binding("u", "screen.device('resume')", "Resume", tooltip="Let a drained device take tasks again"),
        Binding("x", "screen.device('shutdown')", "Shutdown", tooltip="Drain, then stop the worker once idle"),
        Binding("o", "cycle_sort", "Sort", tooltip="Sort devices by the next column"),
        Binding("O", "reverse_sort", "Reverse sort", show=False),
    ]

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.devices: list[dict] = []
        self.history: dict[str, tuple[deque, deque]] = {}
        """CPU and memory percent of each device, one sample per snapshot (recorded even while paused)."""
        self.recorded_at = float("-inf")
        self.sort_index = 0
        self.reverse = False
        self.filter_text = ""
        self.at = 0.0
        """When the devices shown were listed (wall clock)."""

    def record(self, devices: list[dict], at: float) -> None:
        """Add one sample per device, once per moment `at` (the same snapshot shown twice adds nothing)."""
        if at <= self.recorded_at:
            return
        self.recorded_at = at
        for device in devices:
            cpu, mem = self.history.setdefault(device["device_id"], (deque(maxlen=HISTORY), deque(maxlen=HISTORY)))
            metrics = device.get("metrics") or {}
            if device.get("state") != DeviceState.OFFLINE and metrics:
                cpu.append(float(metrics.get("cpu_percent") or 0.0))
                mem.append(float(metrics.get("memory_percent") or 0.0))

    def show(self, devices: list[dict] | None = None, at: float | None = None) -> None:
        """Show `devices` as of `at` (or the last ones again, after a sort or filter change)."""
        if devices is not None:
            self.devices = devices
        if at is not None:
            self.at = at
        name, key, highest_first = SORTS[self.sort_index]
        rows = sorted((d for d in self.devices if self.matches(d)), key=key, reverse=highest_first != self.reverse)
        self.sync([(d["device_id"], self.cells_of(d)) for d in rows])

    def matches(self, device: dict) -> bool:
        if not self.filter_text:
            return True
        haystack = " ".join(str(device.get(k) or "") for k in ("device_id", "name", "hostname", "os", "state"))
        haystack += " " + " ".join(device.get("tags") or [])
        return self.filter_text.lower() in haystack.lower()

    def cells_of(self, device: dict) -> dict[str, Any]:
        # An offline device's metrics are the last it sent, not live figures: its row shows none.
        metrics = {} if device.get("state") == DeviceState.OFFLINE else device.get("metrics") or {}
        cpu, mem = self.history.get(device["device_id"], ((), ()))
        seen = seen_ago(device, self.at)
        return {
            "device": cell(device["device_id"], 64),
            "state": styled_state(device.get("state"), DEVICE_STATE_STYLES),
            "seen": "never" if seen is None else duration(seen),
            "run": device_tasks(device),
            "cpu": percent(metrics.get("cpu_percent")),
            "cpu_spark": spark(cpu, SPARK_WIDTH, top=100.0),
            "mem": percent(metrics.get("memory_percent")),
            "mem_spark": spark(mem, SPARK_WIDTH, top=100.0),
            "disk": percent(metrics.get("disk_percent")),
            "host": cell(device.get("hostname"), 20),
            "os": cell(device.get("os"), 24),
            "tags": cell(",".join(device.get("tags") or []), 20),
            "python": cell(device.get("python_version"), 16),
            "name": cell(device.get("name"), 20),
        }

    def describe(self) -> str:
        shown, total = len(self.cells), len(self.devices)
        text = f"Devices {shown}" if shown == total else f"Devices {shown} of {total}"
        text += f" · sort {SORTS[self.sort_index][0]}{' (reversed)' if self.reverse else ''}"
        if self.filter_text:
            text += f" · filter {self.filter_text!r}"
        return text

    def action_cycle_sort(self) -> None:
        self.sort_index = (self.sort_index + 1) % len(SORTS)
        self.reverse = False
        self.show()
        self.post_message(self.ViewChanged(self))

    def action_reverse_sort(self) -> None:
        self.reverse = not self.reverse
        self.show()
        self.post_message(self.ViewChanged(self))

    def on_data_table_header_selected(self, event: KeyedTable.HeaderSelected) -> None:
        by_column = {"device": "id", "state": "state", "seen": "last seen", "run": "tasks", "cpu": "cpu",
                     "cpu_spark": "cpu", "mem": "memory", "mem_spark": "memory", "disk": "disk"}
        name = by_column.get(event.column_key.value or "")
        if name is not None:
            index = [s[0] for s in SORTS].index(name)
            self.reverse = not self.reverse if index == self.sort_index else False
            self.sort_index = index
            self.show()
            self.post_message(self.ViewChanged(self))

    class ViewChanged(Message):
        """Posted when sorting changed, so the panel title can say so."""

        def __init__(self, table: "DevicesTable") -> None:
            super().__init__()
            self.table = table
