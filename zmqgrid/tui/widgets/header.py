"""Provides the cluster header: master, incarnation, uptime, device and task counts, throughput sparkline."""
from __future__ import annotations

from rich.text import Text
from textual.widget import Widget

from ...model import DeviceState, TaskState
from ..format import DEVICE_STATE_STYLES, TASK_STATE_STYLES, RateHistory, duration, short, spark
from ..source import ClusterSnapshot


class ClusterHeader(Widget):
    """Four lines about the whole cluster. It keeps moving while the tables are paused."""

    DEFAULT_CSS = """
    ClusterHeader { height: 4; padding: 0 1; background: $boost; }
    ClusterHeader.unreachable { background: $error 25%; }
    """

    def __init__(self, master_url: str, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.master_url = master_url
        self.rates = RateHistory()
        """Tasks done per second between successive snapshots."""
        self.current: ClusterSnapshot | None = None
        self.last_ok: ClusterSnapshot | None = None
        self.down_since: float | None = None
        self.paused = False
        self.refresh_s = 1.0

    def show(self, snapshot: ClusterSnapshot, *, paused: bool, refresh_s: float) -> None:
        self.current, self.paused, self.refresh_s = snapshot, paused, refresh_s
        if snapshot.reachable:
            self.last_ok, self.down_since = snapshot, None
            self.rates.add(snapshot.status.get("tasks", {}).get(TaskState.DONE, 0), snapshot.at)
        elif self.down_since is None:
            self.down_since = snapshot.at
        self.set_class(not snapshot.reachable, "unreachable")
        self.refresh()

    def set_view(self, *, paused: bool, refresh_s: float) -> None:
        self.paused, self.refresh_s = paused, refresh_s
        self.refresh()

    def render(self) -> Text:
        width = max(20, self.size.width)   # the content area: padding excluded
        lines = [self._title_line(width), self._devices_line(), self._tasks_line(), self._rate_line(width)]
        for line in lines:
            line.truncate(width, overflow="ellipsis")
        return Text("\n", no_wrap=True).join(lines)

    def _title_line(self, width: int) -> Text:
        status = self.last_ok.status if self.last_ok else {}
        # The longest that fits: full labels, then short ones, then no key hint, then the address alone.
        for labels, hint in ((("incarnation ", "up "), True), (("inc ", "up "), True), (("inc ", "up "), False),
                             (None, False)):
            line = Text.assemble(("zmqgrid ", "bold"), (self.master_url, "bold cyan"))
            if self.app.sub_title:   # the role a browser dashboard is limited to
                line.append(f"  {self.app.sub_title}", style="bold yellow")
            if status and labels:
                line.append(f"  {labels[0]}{str(status.get('incarnation', '-'))[:12]}")
                line.append(f"  {labels[1]}{duration(status.get('uptime_s'))}")
            right = Text(f"refresh {self.refresh_s:g}s" + (" (+/-)" if hint else ""))
            if self.paused:
                right.append("  ")
                right.append(" PAUSED ", style="bold black on yellow")
            if line.cell_len + 2 + right.cell_len <= width:
                break
        line.append(" " * max(2, width - line.cell_len - right.cell_len))
        return line + right

    def _devices_line(self) -> Text:
        snap = self.current
        if snap is None:
            return Text(f"connecting to {self.master_url} …", style="dim")
        if not snap.reachable:
            down = duration(snap.at - self.down_since) if self.down_since is not None else "-"
            error = short(snap.error.replace(f"the master at {self.master_url} ", ""), 200)
            return Text(f"✖ master unreachable — retrying (down {down}): {error}", style="bold white on red")
        devices = snap.status.get("devices", {})
        line = Text("devices ", style="bold")
        for state in (DeviceState.ONLINE, DeviceState.DRAINING, DeviceState.OFFLINE):
            line.append(f"{devices.get(state, 0)} ", style=DEVICE_STATE_STYLES[state] if devices.get(state) else "")
            line.append(f"{state}  ")
        pending = snap.status.get("pending_keys")   # told to an admin key only, when the master runs CURVE
        if isinstance(pending, int) and not isinstance(pending, bool):
            line.append("keys ", style="bold")
            line.append(f"{pending} ", style="bold yellow" if pending else "")
            line.append("pending  ")
        stuck = snap.status.get("stuck_tasks")
        if stuck:
            line.append(f"{stuck} queued task(s) no online worker can take", style="bold yellow")
        return line

    def _tasks_line(self) -> Text:
        status = self.last_ok.status if self.last_ok else {}
        counts = status.get("tasks", {})
        line = Text("tasks ", style="bold")
        # Finished counts are the last hour's when the master reports them (a cluster's recent health, not
        # its whole history); queued, assigned and running are now.
        finished = status.get("last_hour", counts)
        hour = " (1h)" if "last_hour" in status else ""
        # Assigned: dispatched, not started yet (waiting on a worker for a slot); running: started.
        shown = [(s, counts.get(s, 0)) for s in (TaskState.QUEUED, TaskState.ASSIGNED, TaskState.RUNNING)]
        shown += [(s + hour, finished.get(s, 0)) for s in (TaskState.DONE, TaskState.FAILED)]
        shown += [(s, counts[s]) for s in (TaskState.TIMED_OUT, TaskState.CANCELLED, TaskState.QUARANTINED)
                  if counts.get(s)]
        for state, n in shown:
            line.append(f"{n} ", style=TASK_STATE_STYLES.get(state.split(" ")[0], "") if n else "")
            line.append(f"{state}  ")
        if self.current is not None and not self.current.reachable:
            line.stylize("dim")
        return line

    def _rate_line(self, width: int) -> Text:
        rates = self.rates.rates
        label = Text("done/s ", style="bold")
        figures = f" {self.rates.current:.1f}/s  peak {max(rates, default=0.0):.1f}/s"
        bars = spark(rates, max(8, min(60, width - label.cell_len - len(figures))))
        return label + Text(bars, style="green") + Text(figures)
