#!/usr/bin/env python
"""A loud task beside quiet ones: how much one task printing 100 MB slows the others, and what it costs the
master's memory.

    python tools/bench_output.py                 # 100 MB of output, N=5000 no-op tasks, 3 runs (median)
    python tools/bench_output.py --mb 20 --runs 1 --json

Each run, on a real master and two real workers (tools/bench.py's Cluster, loopback, stopped by PID):
  1. quiet: N no-op python tasks, batched, timed until every one has finished;
  2. loud:  the same N, while a shell task on one of the workers writes --mb MB to stdout (started first,
            and still writing when the quiet tasks start);
and the master's RSS is sampled (psutil, every 50 ms) all along. The loud task must end `done` with its
output capped at max_output_bytes (head + tail, a marker saying how much was cut).
Target (issue 8): the quiet tasks slowed by <= 10%, the master's memory bounded (its peak no higher than
with no loud task, give or take the ledger's page cache: we report both).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import Cluster, check_finished, median, progress, specs, stop_all, wait_final  # noqa: E402
from zmqgrid.client import Client, build_spec  # noqa: E402

LOUD = ("import sys\nline = 'x' * 1023 + '\\n'\nfor _ in range({n}):\n    sys.stdout.write(line)\n")


class RssSampler:
    """Peak RSS of one process, sampled every 50 ms in a thread."""

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

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._halt.set()
        self._thread.join()


def quiet_run(client: Client, n: int, start: int, timeout_s: float) -> float:
    t0 = time.perf_counter()
    ids = client.submit(specs(n, start), notify=True, batch_size=100)
    results, _ = wait_final(client, ids, timeout_s)
    check_finished(results, ids, "quiet")
    return n / (time.perf_counter() - t0)


def one_run(k: int, a: argparse.Namespace, tmp: Path) -> dict:
    cluster = Cluster(tmp / f"run{k}", concurrency=4, prefetch=12)
    (tmp / f"run{k}").mkdir()
    cluster.start()
    try:
        master = cluster.pids()["master"]
        with Client(cluster.url, timeout_s=30) as client:
            quiet_run(client, 500, 0, a.timeout)                      # warm-up, not counted
            with RssSampler(master) as rss_quiet:
                quiet = quiet_run(client, a.n, 1000, a.timeout)
            lines = a.mb * 1024
            loud_id = client.submit(build_spec(shell=[sys.executable, "-c", LOUD.format(n=lines)], name="loud"))[0]
            deadline = time.monotonic() + 30
            while client.task(loud_id)["state"] != "running":      # writing before the quiet tasks start
                if time.monotonic() > deadline:
                    raise RuntimeError("the loud task did not start within 30 s")
                time.sleep(0.02)
            with RssSampler(master) as rss_loud:
                loud = quiet_run(client, a.n, 1000 + a.n, a.timeout)
                loud_task = client.wait([loud_id], timeout_s=a.timeout).get(loud_id) or {}
                detail = client.task(loud_id)
        stdout = (client_logs(cluster.url, loud_id) or "")
    finally:
        cluster.stop()
    return {"quiet_per_s": quiet, "loud_per_s": loud, "slowdown": 1 - loud / quiet,
            "master_peak_rss_quiet": rss_quiet.peak, "master_peak_rss_loud": rss_loud.peak,
            "loud_state": detail.get("state") or loud_task.get("state"), "loud_stdout_chars": len(stdout),
            "loud_stdout_cut_marker": "bytes of stdout cut" in stdout}


def client_logs(url: str, task_id: str) -> str:
    with Client(url, timeout_s=30) as c:
        return c.logs(task_id).get("stdout") or ""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=100, help="MB the loud task prints [100]")
    ap.add_argument("--n", type=int, default=5000, help="quiet no-op tasks per phase [5000]")
    ap.add_argument("--runs", type=int, default=3, help="runs; figures are medians [3]")
    ap.add_argument("--timeout", type=float, default=300, help="seconds for one phase [300]")
    ap.add_argument("--json", action="store_true", help="all figures as JSON on stdout")
    a = ap.parse_args()
    progress(f"command: python tools/bench_output.py {' '.join(sys.argv[1:])}".rstrip())
    runs = []
    try:
        with tempfile.TemporaryDirectory(prefix="zmqgrid-bench-output-") as tmp:
            for k in range(1, a.runs + 1):
                progress(f"run {k}/{a.runs}: quiet {a.n} tasks, then again beside a task printing {a.mb} MB ...")
                r = one_run(k, a, Path(tmp))
                progress(f"run {k}/{a.runs}: quiet {r['quiet_per_s']:,.0f}/s, beside the loud task "
                         f"{r['loud_per_s']:,.0f}/s (slowdown {100 * r['slowdown']:.1f}%), master peak RSS "
                         f"{r['master_peak_rss_quiet'] >> 20} -> {r['master_peak_rss_loud'] >> 20} MB, loud task "
                         f"{r['loud_state']}, {r['loud_stdout_chars']:,} chars kept")
                runs.append(r)
    finally:
        stop_all()
    summary = {k: median([r[k] for r in runs]) for k in ("quiet_per_s", "loud_per_s", "slowdown",
                                                         "master_peak_rss_quiet", "master_peak_rss_loud")}
    ok_output = all(r["loud_state"] == "done" and r["loud_stdout_cut_marker"] for r in runs)
    result = {"mb": a.mb, "n": a.n, "runs": runs, "median": summary, "loud_task_ok": ok_output,
              "slowdown_target_met": summary["slowdown"] <= 0.10}
    if a.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"\nloud task: {a.mb} MB of stdout beside {a.n} quiet no-op tasks (median of {len(runs)} runs)")
    print(f"  quiet tasks alone          {summary['quiet_per_s']:>10,.0f} tasks/s")
    print(f"  beside the loud task       {summary['loud_per_s']:>10,.0f} tasks/s   slowdown "
          f"{100 * summary['slowdown']:.1f}% (target <= 10%: {'MET' if result['slowdown_target_met'] else 'NOT MET'})")
    print(f"  master peak RSS            {summary['master_peak_rss_quiet'] / 2**20:>10.0f} MB alone, "
          f"{summary['master_peak_rss_loud'] / 2**20:.0f} MB beside the loud task")
    print(f"  loud task ended done with its output capped (head + tail + marker): {'yes' if ok_output else 'NO'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
