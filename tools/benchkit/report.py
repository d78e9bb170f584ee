"""What a run tells a person: progress on stderr (so `--json` keeps stdout clean), the machine and versions it ran
on, and its figures as JSON or as the tool's own report."""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sqlite3
import subprocess
import sys
import threading
import time
from importlib import metadata
from pathlib import Path
from typing import Callable

import psutil
import zmq

from tests.helpers import REPO

_T0 = time.monotonic()


def progress(text: str) -> None:
    print(f"[{time.monotonic() - _T0:7.1f}s] {text}", file=sys.stderr, flush=True)


class Ticker:
    """Prints 'still running' every few seconds while a long phase blocks in the client."""

    def __init__(self, what: str, every_s: float = 5.0, status: Callable[[], str] | None = None) -> None:
        self.what, self.every_s, self.status = what, every_s, status
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="bench-ticker")

    def _run(self) -> None:
        t0 = time.monotonic()
        while not self._stop.wait(self.every_s):
            extra = ""
            if self.status is not None:
                try:
                    extra = " " + self.status()
                except Exception:  # a status line is best effort
                    extra = ""
            progress(f"  ... {self.what}: {time.monotonic() - t0:.0f}s{extra}")

    def __enter__(self) -> "Ticker":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(1)


def command_line(script: str, argv: list[str] | None) -> str:
    """How this run was started, as a person would type it from the repository root."""
    path = Path(script).resolve()
    shown = os.path.relpath(path, Path.cwd()) if path.is_relative_to(Path.cwd()) else str(path)
    return shlex.join(["python", shown, *(sys.argv[1:] if argv is None else argv)])


def emit(a: argparse.Namespace, result: dict, report: Callable[[dict], None]) -> None:
    """The figures: JSON on stdout with --json, else the tool's report for a person."""
    if a.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        report(result)


def fmt(v: float | None, nd: int = 0) -> str:
    return "n/a" if v is None else f"{v:,.{nd}f}"


def verdict(met: bool | None) -> str:
    return "n/a" if met is None else "MET" if met else "NOT MET"


def machine() -> dict:
    """The machine, the versions of what is measured, and this checkout's commit (marked when it has changes)."""
    def version(dist: str) -> str | None:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import msgpack
    commit = None
    try:
        commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=5).stdout.strip() or None
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        if commit and dirty:
            commit += " (+ uncommitted changes)"
    except (OSError, subprocess.SubprocessError):
        pass
    return {"cpus": os.cpu_count(), "cpu_model": model, "platform": platform.platform(),
            "python": platform.python_version(), "pyzmq": zmq.__version__, "libzmq": zmq.zmq_version(),
            "msgpack": ".".join(map(str, msgpack.version)), "sqlite_utils": version("sqlite-utils"),
            "sqlite": sqlite3.sqlite_version, "psutil": psutil.__version__, "zmqgrid_commit": commit,
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


def profile_text(path: Path, top: int = 25) -> str:
    """A cProfile file's top functions, by own time and by cumulative time."""
    import io
    import pstats
    buf = io.StringIO()
    stats = pstats.Stats(str(path), stream=buf)
    stats.sort_stats("tottime").print_stats(top)
    buf.write("\n")
    stats.sort_stats("cumulative").print_stats(top)
    text = buf.getvalue()
    return text[text.find("   ncalls"):] if "   ncalls" in text else text
