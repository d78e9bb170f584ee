#!/usr/bin/env python
"""Shell tasks against fork and exec (issue 31, item 3): `--shell true` through a cluster with the defaults, against
`seq N | xargs -P SLOTS -n 1 sh -c true` with the same number of slots, alternating, in the same run.

    python tools/bench_shell.py                      # 3,000 tasks, 3 runs, 2 workers x 3 slots
    python tools/bench_shell.py --baseline main      # also that revision's cluster, in the same rotation
    python tools/bench_shell.py --runs 5 --json

A real master and real workers on 127.0.0.1 (`distribute --mode master` / `--mode worker --concurrency SLOTS`, no
ZMQGRID_* setting: the defaults, prefetch 2), in a temporary folder removed afterwards (kept on error or --keep).
Each run measures the anchor and every cluster once, in an order that rotates from run to run; a zmqgrid figure
is from the first Submit until every result has been received (`Client.submit(..., notify=True)`, then `wait`),
and each task is checked to have ended `done`. Reports medians, the ratio to xargs of the medians and of each run,
and the CPU each side spent per task (master; workers with their task processes; client). Every process started
is stopped by PID; the run is bounded by --deadline seconds.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

if __name__ == "__main__":   # imports from the repository root, as `python -m tools.bench_shell` does
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from tools.benchkit.guard import guarded
from tools.benchkit.report import command_line, emit, machine, progress
from tools.benchkit.shell import report, shell_bench


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=3000, help="tasks per measurement [3000]")
    ap.add_argument("--runs", type=int, default=3, help="runs; each measures every side once [3]")
    ap.add_argument("--workers", type=int, default=2, help="workers [2]")
    ap.add_argument("--slots", type=int, default=3, help="slots per worker (--concurrency), the default [3]")
    ap.add_argument("--baseline", metavar="REV", help="also measure this git revision's zmqgrid, for a before/after")
    ap.add_argument("--settle", type=float, default=20, help="seconds to wait for a quiet machine before a run [20]")
    ap.add_argument("--busy-threshold", type=float, default=30, help="'quiet' means at most this %% busy [30]")
    ap.add_argument("--phase-timeout", type=float, default=300, help="seconds for one measurement's results [300]")
    ap.add_argument("--deadline", type=float, default=1200, help="seconds for the whole run [1200]")
    ap.add_argument("--py-spy", metavar="DIR", help="py-spy record the workers while this checkout's cluster runs")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, ledgers)")
    ap.add_argument("--json", action="store_true", help="every figure as JSON on stdout")
    a = ap.parse_args(argv)
    if a.n < 1 or a.runs < 1 or a.workers < 1 or a.slots < 1:
        ap.error("--n, --runs, --workers and --slots must be at least 1")
    tmp = Path(tempfile.mkdtemp(prefix="zmqgrid-bench-shell-"))
    result: dict = {}

    def body() -> None:
        result.update(command=command_line(__file__, argv), machine=machine(), **shell_bench(a, tmp))
        emit(a, result, report)

    progress(f"{a.n} shell tasks x {a.runs} runs, temporary folder {tmp}")
    return guarded(a, tmp, body)


if __name__ == "__main__":
    sys.exit(main())
