"""py-spy of the processes under test while a phase runs: where their Python CPU goes."""
from __future__ import annotations

import shutil
import signal
import subprocess
import time
from pathlib import Path

from .processes import adopt, forget, stop_process


class Spies:
    """py-spy record (sampling, --nonblocking, only stacks holding the GIL: CPU spent in Python) of each target
    `role: (pid, with its subprocesses)`, between start(run) and stop(). Raw stacks go to DIR/<role>-run<k>.txt;
    summary() ranks functions."""

    def __init__(self, outdir: Path, targets: dict[str, tuple[int, bool]], rate: int = 250) -> None:
        self.outdir, self.targets, self.rate = outdir, targets, rate
        self.exe = shutil.which("py-spy")
        if self.exe is None:
            raise RuntimeError("--py-spy needs py-spy on PATH (pip install py-spy)")
        outdir.mkdir(parents=True, exist_ok=True)
        self.procs: list[subprocess.Popen] = []

    def start(self, run: int) -> None:
        for role, (pid, subprocesses) in self.targets.items():
            argv = [self.exe, "record", "--pid", str(pid), "--rate", str(self.rate), "--format", "raw",
                    "--nonblocking", "--gil", "--nolineno", "--output", str(self.outdir / f"{role}-run{run}.txt")]
            if subprocesses:
                argv.append("--subprocesses")
            with open(self.outdir / f"{role}-run{run}.log", "wb") as log:
                proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        start_new_session=True)
            self.procs.append(adopt(proc))
        time.sleep(1.0)   # let py-spy attach before the phase starts

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)   # py-spy writes its file on SIGINT
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                stop_process(proc)
            forget(proc)
        self.procs = []

    def summary(self, top: int = 15) -> dict[str, dict]:
        """Per role: total samples, and the top functions by own ('self') and by inclusive samples."""
        out: dict[str, dict] = {}
        for role in self.targets:
            own: dict[str, int] = {}
            incl: dict[str, int] = {}
            total = 0
            for path in sorted(self.outdir.glob(f"{role}-run*.txt")):
                for line in path.read_text(errors="replace").splitlines():
                    stack, _, count = line.rpartition(" ")
                    if not stack or not count.isdigit():
                        continue
                    n = int(count)
                    frames = [f for f in stack.split(";") if f and not f.startswith("process ")
                              and not f.startswith("thread ")]
                    if not frames:
                        continue
                    total += n
                    own[frames[-1]] = own.get(frames[-1], 0) + n
                    for f in set(frames):
                        incl[f] = incl.get(f, 0) + n
            rank = lambda d: [(f, round(100.0 * c / total, 1)) for f, c in  # noqa: E731
                              sorted(d.items(), key=lambda kv: -kv[1])[:top]] if total else []
            out[role] = {"samples": total, "self_pct": rank(own), "inclusive_pct": rank(incl)}
        return out
