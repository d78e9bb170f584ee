"""Clocks and meters: percentiles and medians, the CPU of groups of processes, how busy the machine is (and how
much the hypervisor takes), peak sizes sampled in a thread, and polls that return when a condition first held."""
from __future__ import annotations

import math
import statistics
import threading
import time
from pathlib import Path
from typing import Any, Callable

import psutil

from .report import progress


def pct(samples: list[float], p: float) -> float:
    """Nearest-rank percentile (the reference loop's definition)."""
    s = sorted(samples)
    if not s:
        return float("nan")
    return s[max(0, math.ceil(p / 100.0 * len(s)) - 1)]


def median(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def timed(fn: Callable[[], Any], times: int) -> dict:
    """fn() called `times` times: the median and the max of its wall time in ms, and the rows of its last answer."""
    samples = []
    rows = None
    for _ in range(times):
        t0 = time.perf_counter()
        rows = fn()
        samples.append((time.perf_counter() - t0) * 1000)
    return {"median_ms": round(statistics.median(samples), 2), "max_ms": round(max(samples), 2),
            "rows": len(rows) if isinstance(rows, list) else None}


def poll(check: Callable[[], Any], timeout_s: float, what: str, interval_s: float) -> float:
    """time.monotonic() at which check() first held (polled every interval_s); RuntimeError at the timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return time.monotonic()
        time.sleep(interval_s)
    raise RuntimeError(f"timed out after {timeout_s:g}s waiting for {what}")


# ---------------------------------------------------------------------------------------------- CPU

def cpu_seconds(pids: list[int], tree: bool) -> float:
    """User + system CPU seconds of these processes (with `tree`, their descendants too, reaped ones included)."""
    total = 0.0
    for pid in pids:
        try:
            procs = [psutil.Process(pid)]
            if tree:
                procs += procs[0].children(recursive=True)
        except psutil.NoSuchProcess:
            continue
        for p in procs:
            try:
                t = p.cpu_times()
                # children_*: children already reaped (a worker's retired python-pool processes)
                total += t.user + t.system + (t.children_user + t.children_system if tree else 0.0)
            except psutil.NoSuchProcess:
                pass
    return total


def thread_times(pid: int) -> dict[str, float]:
    """CPU seconds per thread name (main loop, libzmq's ZMQbg/IO, the WAL checkpointer, ...), from /proc."""
    out: dict[str, float] = {}
    for t in psutil.Process(pid).threads():
        try:
            name = Path(f"/proc/{pid}/task/{t.id}/comm").read_text().strip()
        except OSError:
            name = "?"
        name = "main" if t.id == pid else name
        out[name] = out.get(name, 0.0) + t.user_time + t.system_time
    return out


class CpuMeter:
    """CPU used by groups of processes between start() and stop(), in % of ONE core."""

    def __init__(self, groups: dict[str, tuple[list[int], bool]]) -> None:
        self.groups = groups

    def _snap(self) -> dict[str, float]:
        return {name: cpu_seconds(pids, tree) for name, (pids, tree) in self.groups.items()}

    def start(self) -> "CpuMeter":
        self.t0, self.c0 = time.perf_counter(), self._snap()
        return self

    def stop(self) -> dict[str, float]:
        wall = time.perf_counter() - self.t0
        c1 = self._snap()
        return {name: round(100.0 * (c1[name] - self.c0[name]) / wall, 1) for name in self.groups}


# ---------------------------------------------------------------------------------------------- the machine

class SysStat:
    """Machine-wide CPU between start() and stop() from /proc/stat, in % of all cores."""

    @staticmethod
    def _read() -> dict[str, int] | None:
        try:
            with open("/proc/stat") as f:
                v = list(map(int, f.readline().split()[1:9]))
        except (OSError, ValueError):
            return None
        user, nice, system, idle, iowait, irq, softirq, steal = v
        return {"user": user + nice, "system": system + irq + softirq, "idle": idle + iowait, "steal": steal}

    def start(self) -> "SysStat":
        self.s0 = self._read()
        return self

    def stop(self) -> dict[str, float]:
        s1 = self._read()
        if self.s0 is None or s1 is None:
            return {}
        d = {k: s1[k] - self.s0[k] for k in s1}
        total = sum(d.values()) or 1
        return {k: round(100.0 * v / total, 1) for k, v in d.items()}


def machine_busy(seconds: float = 1.0) -> float | None:
    """% of all cores busy over `seconds` (from /proc/stat), or None where there is no /proc."""
    a = SysStat._read()
    time.sleep(seconds)
    b = SysStat._read()
    if a is None or b is None:
        return None
    total = sum(b.values()) - sum(a.values())
    return round(100.0 * (1 - (b["idle"] - a["idle"]) / total), 1) if total else 0.0


def settle(max_wait_s: float, threshold: float, what: str) -> float | None:
    """Wait (at most max_wait_s) until the machine is at most `threshold`% busy; return the last busy %.
    Other programs on the machine (a test suite, a build) skew every figure, so the report shows this."""
    t_end = time.monotonic() + max_wait_s
    warned = False
    while True:
        busy = machine_busy()
        if busy is None or busy <= threshold or time.monotonic() >= t_end:
            if busy is not None and busy > threshold:
                progress(f"  warning: machine still {busy:.0f}% busy before {what}: figures are skewed by other load")
            return busy
        if not warned:
            progress(f"  machine {busy:.0f}% busy before {what} (other processes); waiting up to "
                     f"{max_wait_s:.0f}s for it to drop to {threshold:.0f}% ...")
            warned = True


# ---------------------------------------------------------------------------------------------- peaks

class PeakSize:
    """The largest size a file reached, sampled every 0.1 s in a thread (the ledger's WAL under load)."""

    def __init__(self, path: Path) -> None:
        self.path, self.peak = path, 0
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="peak-size")

    def _run(self) -> None:
        while not self._halt.wait(0.1):
            try:
                self.peak = max(self.peak, self.path.stat().st_size)
            except OSError:
                pass

    def start(self) -> "PeakSize":
        self._thread.start()
        return self

    def stop(self) -> int:
        self._halt.set()
        self._thread.join()
        return self.peak


class PeakRss:
    """Peak RSS of one process, sampled every 50 ms in a thread, as a context manager."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.peak = 0
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._halt.is_set():
            try:
                self.peak = max(self.peak, self.proc.memory_info().rss)
            except psutil.Error:
                return
            self._halt.wait(0.05)

    def __enter__(self) -> "PeakRss":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._halt.set()
        self._thread.join()
