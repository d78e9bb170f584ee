#!/usr/bin/env python
"""A loud task beside quiet ones: how much one task printing 100 MB slows the others, and what it costs the
master's memory.

    python tools/bench_output.py                 # 100 MB of output, N=5000 no-op tasks, 3 runs x 10 pairs (median)
    python tools/bench_output.py --mb 20 --runs 1 --json
    python tools/bench_output.py --control devnull   # the same task writing into /dev/null: its cost without ours
    python tools/bench_output.py --control sleep     # a silent task sleeping 1 s: the bench's own noise

Each run, on a real master and two real workers (tools/benchkit's Cluster, loopback, stopped by PID), measures
--pairs pairs of phases, one right after the other:
  - quiet: N no-op python tasks, batched, timed until every one has finished;
  - loud:  the same N, while a shell task on one of the workers writes --mb MB to stdout (started first,
           and still writing when the quiet tasks start);
with the order swapped every other pair (quiet-loud, loud-quiet), so the machine's drift and the ledger's growth
do not side with one phase. Each pair gives a slowdown, 1 - loud/quiet; the verdict is the median over all pairs.
Phases of a second, one per run, were too noisy here: beside a silent task instead of the loud one, three single
runs gave -10%, +24% and -17%. `--control devnull` runs the pairs beside the same task with its stdout sent to
/dev/null: the CPU it takes itself, without any output for the worker to read; the gap between the two is what our
output handling costs. `--control sleep` runs them beside a silent task sleeping 1 s: what the bench alone reads
as slowdown on the machine.
The master's RSS is sampled (psutil, every 50 ms) all along. The loud task must end `done` with its output capped
at max_output_bytes (head + tail, a marker saying how much was cut).
Target (issue 8): the quiet tasks slowed by <= 10%, the master's memory bounded (its peak no higher than
with no loud task, give or take the ledger's page cache: we report both).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

if __name__ == "__main__":   # `python tools/bench_output.py` imports from the repository root, as `python -m tools.bench_output` does
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from tools.benchkit.cluster import Cluster
from tools.benchkit.measure import PeakRss, median
from tools.benchkit.processes import stop_all
from tools.benchkit.report import command_line, progress, verdict
from tools.benchkit.targets import OUTPUT
from tools.benchkit.workload import check_finished, specs, wait_final
from zmqgrid.client import Client, build_spec

SLOWDOWN = OUTPUT[0]

LOUD = ("import sys\nline = 'x' * 1023 + '\\n'\nfor _ in range({n}):\n    sys.stdout.write(line)\n")
# Controls: the loud task's slot and process without its output. `devnull` does the same writes into /dev/null
# (the task's own work, none of ours); `sleep` sleeps about as long as the loud task runs here and prints nothing.
CONTROLS = {"devnull": "import os, sys\nsys.stdout = open(os.devnull, 'w')\n" + LOUD,
            "sleep": "import time\ntime.sleep(1)\n"}


def quiet_run(client: Client, n: int, start: int, timeout_s: float) -> float:
    t0 = time.perf_counter()
    ids = client.submit(specs(n, start), notify=True, batch_size=100)
    results, _ = wait_final(client, ids, timeout_s)
    check_finished(results, ids, "quiet")
    return n / (time.perf_counter() - t0)


def one_run(k: int, a: argparse.Namespace, tmp: Path) -> dict:
    (tmp / f"run{k}").mkdir()
    cluster = Cluster(tmp / f"run{k}", concurrency=4, prefetch=12)
    cluster.start()
    pairs = []
    try:
        master = cluster.pids()["master"]
        with Client(cluster.url, timeout_s=30) as client:
            quiet_run(client, 500, 0, a.timeout)                      # warm-up, not counted
            start = 1000
            for j in range(a.pairs):
                pair: dict = {}
                for phase in (("quiet", "loud") if j % 2 == 0 else ("loud", "quiet")):
                    if phase == "quiet":
                        with PeakRss(master) as rss:
                            pair["quiet_per_s"] = quiet_run(client, a.n, start, a.timeout)
                        pair["master_peak_rss_quiet"] = rss.peak
                    else:
                        pair.update(loud_phase(client, a, master, start))
                    start += a.n
                pair["slowdown"] = 1 - pair["loud_per_s"] / pair["quiet_per_s"]
                progress(f"  run {k} pair {j + 1}/{a.pairs}: quiet {pair['quiet_per_s']:,.0f}/s, beside the "
                         f"{a.control or 'loud'} task {pair['loud_per_s']:,.0f}/s "
                         f"(slowdown {100 * pair['slowdown']:.1f}%)")
                pairs.append(pair)
            stdout = client.logs(pairs[-1]["loud_id"]).get("stdout") or ""
    finally:
        cluster.stop()
    return {"pairs": pairs, "slowdown": median([p["slowdown"] for p in pairs]),
            "quiet_per_s": median([p["quiet_per_s"] for p in pairs]), "loud_per_s": median([p["loud_per_s"] for p in pairs]),
            "master_peak_rss_quiet": max(p["master_peak_rss_quiet"] for p in pairs),
            "master_peak_rss_loud": max(p["master_peak_rss_loud"] for p in pairs),
            "loud_state": "done" if all(p["loud_state"] == "done" for p in pairs) else "not done",
            "loud_stdout_chars": len(stdout), "loud_stdout_cut_marker": bool(a.control) or "bytes of stdout cut" in stdout}


def loud_phase(client: Client, a: argparse.Namespace, master: int, start: int) -> dict:
    """N quiet tasks beside a task that starts first and prints --mb MB (with --control, one of CONTROLS)."""
    lines = a.mb * 1024
    command = (CONTROLS[a.control] if a.control else LOUD).format(n=lines)
    loud_id = client.submit(build_spec(shell=[sys.executable, "-c", command], name="loud"))[0]
    deadline = time.monotonic() + 30
    while client.task(loud_id)["state"] != "running":      # writing before the quiet tasks start
        if time.monotonic() > deadline:
            raise RuntimeError("the loud task did not start within 30 s")
        time.sleep(0.02)
    with PeakRss(master) as rss:
        per_s = quiet_run(client, a.n, start, a.timeout)
        loud_task = client.wait([loud_id], timeout_s=a.timeout).get(loud_id) or {}
    return {"loud_per_s": per_s, "master_peak_rss_loud": rss.peak, "loud_id": loud_id,
            "loud_state": client.task(loud_id).get("state") or loud_task.get("state")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=100, help="MB the loud task prints [100]")
    ap.add_argument("--n", type=int, default=5000, help="quiet no-op tasks per phase [5000]")
    ap.add_argument("--runs", type=int, default=3, help="runs, each on a fresh cluster [3]")
    ap.add_argument("--pairs", type=int, default=10, help="pairs of phases (quiet, loud) per run; the verdict is the "
                    "median slowdown over all pairs [10]")
    ap.add_argument("--control", choices=sorted(CONTROLS), help="instead of the loud task: devnull, the same "
                    "writes into /dev/null (what the task costs without our output handling), or sleep, a silent "
                    "task sleeping 1 s (what the bench alone reads as slowdown)")
    ap.add_argument("--timeout", type=float, default=300, help="seconds for one phase [300]")
    ap.add_argument("--json", action="store_true", help="all figures as JSON on stdout")
    a = ap.parse_args()
    progress(f"command: {command_line(__file__, None)}")
    runs = []
    try:
        with tempfile.TemporaryDirectory(prefix="zmqgrid-bench-output-") as tmp:
            for k in range(1, a.runs + 1):
                progress(f"run {k}/{a.runs}: {a.pairs} pairs: quiet {a.n} tasks, and again beside a task "
                         + (f"of control {a.control}" if a.control else f"printing {a.mb} MB") + " ...")
                r = one_run(k, a, Path(tmp))
                progress(f"run {k}/{a.runs}: quiet {r['quiet_per_s']:,.0f}/s, beside the loud task "
                         f"{r['loud_per_s']:,.0f}/s (slowdown {100 * r['slowdown']:.1f}%), master peak RSS "
                         f"{r['master_peak_rss_quiet'] >> 20} -> {r['master_peak_rss_loud'] >> 20} MB, loud task "
                         f"{r['loud_state']}, {r['loud_stdout_chars']:,} chars kept")
                runs.append(r)
    finally:
        stop_all()
    pairs = [p for r in runs for p in r["pairs"]]
    summary = {k: median([p[k] for p in pairs]) for k in ("quiet_per_s", "loud_per_s", "slowdown")}
    summary.update({k: max(r[k] for r in runs) for k in ("master_peak_rss_quiet", "master_peak_rss_loud")})
    ok_output = all(r["loud_state"] == "done" and r["loud_stdout_cut_marker"] for r in runs)
    result = {"mb": a.mb, "n": a.n, "pairs_per_run": a.pairs, "control": a.control,
              "runs": runs, "median": summary, "slowdown_pairs": [round(p["slowdown"], 4) for p in pairs],
              "loud_task_ok": ok_output,
              "slowdown_target_met": None if a.control else SLOWDOWN.met(summary["slowdown"])}
    if a.json:
        print(json.dumps(result, indent=2))
        return 0
    what = f"control task '{a.control}'" if a.control else f"a task printing {a.mb} MB of stdout"
    print(f"\n{what} beside {a.n} quiet no-op tasks (median of {len(pairs)} pairs in {len(runs)} runs)")
    print(f"  quiet tasks alone          {summary['quiet_per_s']:>10,.0f} tasks/s")
    print(f"  beside the loud task       {summary['loud_per_s']:>10,.0f} tasks/s   slowdown "
          f"{100 * summary['slowdown']:.1f}% (target <= {100 * SLOWDOWN.bound:g}%: "
          f"{verdict(bool(result['slowdown_target_met']))}"
          + (", but this is the control" if a.control else "") + ")")
    print("  slowdown of each pair      " + " ".join(f"{100 * p['slowdown']:.1f}%" for p in pairs))
    print(f"  master peak RSS            {summary['master_peak_rss_quiet'] / 2**20:>10.0f} MB alone, "
          f"{summary['master_peak_rss_loud'] / 2**20:.0f} MB beside the loud task")
    if not a.control:
        print(f"  loud task ended done with its output capped (head + tail + marker): {'yes' if ok_output else 'NO'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
