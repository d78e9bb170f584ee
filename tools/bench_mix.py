#!/usr/bin/env python
"""Long tasks among many short ones on two workers: the makespan against the ideal (the -Ofair property).

    python tools/bench_mix.py                      # 3 runs of each setup, 4 x 10 s + 2,000 no-op calls
    python tools/bench_mix.py --runs 1 --long-s 5  # a quicker look

Each run starts a fresh master and two workers on 127.0.0.1 (tools/benchkit's Cluster: this checkout, no config
file, no inherited ZMQGRID_* variable; concurrency 3, so 6 slots), submits in one `Client.submit` the no-op calls
(`zmqgrid.samples:noop`) with `--long` calls of `zmqgrid.samples:nap(--long-s)` at seeded random places among the
first `--head` (100) of them, and waits for all. The makespan runs from the submit to the last result. The ideal is `--long-s`: the long tasks
fit in the slots side by side, and the short ones take well under that on the other slots. A long task that waited
in a worker's buffer behind long ones while another worker had a free slot shows as a makespan near twice the
ideal; its wait (its start less its submit, from the ledger) is reported too.

Setups (in turn, each run): `adaptive` (the default prefetch), `prefetch-2` (the old fixed default) and
`prefetch-12` (the tuned benchmark's). Figures are per run and the median; the machine is shared, so the short
tasks' part varies, but a long task waiting for a slot shows whole.
"""
from __future__ import annotations

import argparse
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

if __name__ == "__main__":   # `python tools/bench_mix.py` imports from the repository root
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from tools.benchkit.cluster import Cluster
from tools.benchkit.guard import guarded
from tools.benchkit.report import command_line, emit, machine, progress
from zmqgrid.client import Client, build_spec

SETUPS = {"adaptive": None, "prefetch-2": 2, "prefetch-12": 12}


def one_run(tmp: Path, setup: str, a: argparse.Namespace, seed: int) -> dict:
    folder = tmp / f"{setup}-{seed}"
    folder.mkdir()
    cluster = Cluster(folder, concurrency=3, prefetch=SETUPS[setup], log_level="WARNING")
    try:
        cluster.start()
        rng = random.Random(seed)
        # Among the first `--head` tasks: a long task's start then hardly depends on how fast the short ones ahead
        # of it go through, and the ideal stays `--long-s`.
        places = set(rng.sample(range(min(a.head, a.short) + a.long), a.long))
        specs = [build_spec(python="zmqgrid.samples:nap", args=[a.long_s]) if i in places else
                 build_spec(python="zmqgrid.samples:noop", args=[i]) for i in range(a.short + a.long)]
        with Client(cluster.url, timeout_s=30) as client:
            t0 = time.time()
            ids = client.submit(specs, notify=True)
            results = client.wait(ids, timeout_s=a.long_s * 4 + 120)
            makespan = time.time() - t0
        long_ids = [ids[i] for i in sorted(places)]
        con = sqlite3.connect(f"file:{cluster.db}?mode=ro", uri=True)
        try:
            rows = {r[0]: r[1:] for r in con.execute(
                f"SELECT id, started_at, device_id, attempt FROM tasks WHERE id IN ({','.join('?' * len(long_ids))})",
                long_ids)}
            states = dict(con.execute("SELECT state, count(*) FROM tasks GROUP BY state").fetchall())
        finally:
            con.close()
        if states != {"done": len(ids)} or any(r.get("state") != "done" for r in results.values()):
            raise RuntimeError(f"{setup}: not every task done: {states}")
        waits = [rows[i][0] - t0 for i in long_ids]
        devices = [rows[i][1] for i in long_ids]
        out = {"makespan_s": makespan, "vs_ideal": makespan / a.long_s, "long_waits_s": waits,
               "long_devices": devices, "long_attempts": [rows[i][2] for i in long_ids]}
        progress(f"{setup:12} seed {seed}: makespan {makespan:6.2f}s = {out['vs_ideal']:.2f}x the ideal; long tasks "
                 f"started after {', '.join(f'{w:.2f}' for w in waits)}s on {devices}")
        return out
    finally:
        cluster.stop()


def print_report(result: dict) -> None:
    a = result["config"]
    print()
    print(f"{a['long']} calls of {a['long_s']:g} s among {a['short']:,} no-op calls, 2 workers x 3 slots "
          f"(ideal makespan {a['long_s']:g} s)")
    print(f"  command: {result['command']}")
    print(f"  machine: {result['machine']['cpus']} CPUs ({result['machine']['cpu_model']}), zmqgrid "
          f"{result['machine']['zmqgrid_commit']}")
    for setup, runs in result["runs"].items():
        spans = [r["vs_ideal"] for r in runs]
        worst = max(max(r["long_waits_s"]) for r in runs)
        print(f"  {setup:12} makespan/ideal per run {' '.join(f'{s:.2f}' for s in spans)}  median "
              f"{statistics.median(spans):.2f}x; longest wait of a long task {worst:.2f} s")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3, help="runs of each setup [3]")
    ap.add_argument("--long", type=int, default=4, help="long calls [4]")
    ap.add_argument("--long-s", type=float, default=10.0, help="seconds each long call sleeps [10]")
    ap.add_argument("--short", type=int, default=2000, help="no-op calls [2000]")
    ap.add_argument("--head", type=int, default=100, help="the long calls go among the first HEAD no-op calls [100]")
    ap.add_argument("--setups", default=",".join(SETUPS), help=f"which, comma-separated [{','.join(SETUPS)}]")
    ap.add_argument("--seed", type=int, default=1, help="first seed; run k uses seed + k - 1 [1]")
    ap.add_argument("--json", action="store_true", help="print all figures as JSON on stdout")
    ap.add_argument("--deadline", type=float, default=1800, help="seconds for the whole run [1800]")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, ledgers)")
    a = ap.parse_args(argv)
    setups = [s.strip() for s in a.setups.split(",") if s.strip()]
    if min(a.runs, a.long, a.short, a.head) < 1 or a.long_s <= 0 or set(setups) - set(SETUPS) or not setups:
        ap.error(f"counts must be >= 1, --long-s > 0, --setups among {', '.join(SETUPS)}")
    tmp = Path(tempfile.mkdtemp(prefix="zmqgrid-mix-"))
    result: dict = {"command": command_line(__file__, argv), "machine": machine(),
                    "config": {"runs": a.runs, "long": a.long, "long_s": a.long_s, "short": a.short},
                    "runs": {s: [] for s in setups}}

    def body() -> None:
        for k in range(a.runs):   # setups in turn within a run: the machine's drift touches each alike
            for setup in setups:
                result["runs"][setup].append(one_run(tmp, setup, a, a.seed + k))

    code = guarded(a, tmp, body, kept="logs and ledgers")
    if not code:
        emit(a, result, print_report)
    return code


if __name__ == "__main__":
    sys.exit(main())
