#!/usr/bin/env python
"""End-to-end benchmark of the real zmqgrid on loopback, compared in the same run with the reference loop.

    python tools/bench.py                 # N=5000, 3 runs, then ../shared/bench/reference_loop.py (--reference)
    python tools/bench.py --quick         # smoke run: N=500, N_single=200, 50 round trips, 1 run
    python tools/bench.py --json          # every figure as JSON on stdout (progress stays on stderr)
    python tools/bench.py --defaults      # the defaults (adaptive prefetch) against the tuned cluster and the reference

What it does, all on 127.0.0.1, in a temporary folder that it removes afterwards (kept on error or --keep):

1. Starts a real master (`python -m zmqgrid distribute --mode master ...`) and two real workers
   (`--mode worker --concurrency C`, ZMQGRID_PREFETCH=P, so each advertises credit C+P) as child processes
   with PYTHONPATH set to this repository and no inherited ZMQGRID_* variable, and waits until both
   devices are online (Client.devices()): tools/benchkit/cluster.py, on the test suite's Harness.
2. Warms up (200 tasks batched + 20 single round trips, not counted), then for each of `--runs` runs
   (after waiting up to `--settle` seconds for the machine to be quiet; the busy % is reported):
   - batched: N no-op `python` calls (`zmqgrid.samples:noop`, args [i]) through
     `Client.map(FUNCTION, [(i,), ...], notify=True, batch_size=100)` (window 8), then `Client.wait` until
     all N have finished -> tasks/s; the time until `map` returned (every batch acknowledged, i.e.
     committed) gives the submit-only rate;
   - single: N_single (default N) tasks (`build_spec` calls in a generator, read by `Client.submit` as it
     sends, as the reference builds each task before its send), ONE task per Submit message (`batch_size=1`) with up to
     `--single-window` (1,000) unacknowledged Submits in flight (the reference's `sqlite:1:16` count and
     window), then `Client.wait` -> tasks/s;
   - latency: `--lat` sequential submit -> Finished round trips, each timed (what `Client.run` does)
     -> p50/p99 ms;
   - big submit (`--submit-n`, 100,000): one `Client.map` call with its defaults (1,000 per Submit,
     window 8), timed until every task is acknowledged -> tasks/s (issue 8, target 4), then waits for them;
   - checks in the ledger (sqlite3, read-only) that every task it submitted is there in state `done`.
3. After each zmqgrid run, runs `../shared/bench/reference_loop.py --runs 1 --variants sqlite:100:16,sqlite:1:16`
   (same N and lat) with ZG_REF_DIR in the temporary folder, while the zmqgrid cluster idles: the machines here
   change speed from one half-minute to the next, so each zmqgrid run has a reference run beside it in time.
   With --submit-n, it then runs the reference's sqlite:100:16 variant once more on --submit-n tasks
   (`--n 100000 --lat 20`): target 4 compares zmqgrid's big submit with the reference's submit of a batch of the
   same size (its rate on the N-task batch, one transaction of some 50 ms, is shown beside it).
   Reports zmqgrid / reference ratios of the medians (the verdicts) and each run's ratio to its neighbour.

Figures are medians over the runs. Every process it starts is stopped by its PID (SIGTERM, then SIGKILL,
descendants included), and the whole run is bounded by `--deadline` seconds.
Diagnostics: `--profile-master FILE` runs the master under cProfile and prints its top functions;
`--py-spy DIR` samples master, workers (with their python-pool children) and this client with py-spy
during the batched phases and prints where their Python CPU goes.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __name__ == "__main__":   # `python tools/bench.py` imports from the repository root, as `python -m tools.bench` does
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from tools.benchkit import defaults
from tools.benchkit.cluster import Cluster
from tools.benchkit.guard import guarded
from tools.benchkit.measure import CpuMeter, PeakSize, SysStat, median, settle
from tools.benchkit.reference import BIG_VARIANT, DEFAULT_PATH, merge_references, run_reference
from tools.benchkit.report import Ticker, command_line, emit, fmt, machine, profile_text, progress, verdict
from tools.benchkit.spies import Spies
from tools.benchkit.targets import END_TO_END, STEAL_WARN_PCT
from tools.benchkit.workload import Bench, ledger_check


# ---------------------------------------------------------------------------------------------- one run

def run_once(bench: Bench, spies: Spies | None, a: argparse.Namespace, k: int) -> dict:
    """Run k: the batched, single, latency and big-submit phases, then the ledger check of all their tasks."""
    bench.cluster.alive()
    background = settle(a.settle, a.busy_threshold, f"run {k}")
    progress(f"run {k}/{a.runs}: machine {background}% busy before the run (our idle cluster included)")
    if spies is not None:
        progress(f"run {k}/{a.runs}: py-spy attaching to {list(spies.targets)} ...")
        spies.start(k)
    progress(f"run {k}/{a.runs}: batched {a.n} tasks, {a.batch} per Submit ...")
    meter, sysstat = CpuMeter(bench.cpu_groups).start(), SysStat().start()
    try:
        with Ticker(f"run {k} batched", status=lambda: f"({len(bench.client.finished)} Finished buffered)"):
            b = bench.batched(a.n)
    finally:
        cpu, machine_cpu = meter.stop(), sysstat.stop()
        if spies is not None:
            spies.stop()
    progress(f"run {k}/{a.runs}: batched {b['tasks_per_s']:8.0f} tasks/s (submit-only {b['submit_per_s']:8.0f}/s, "
             f"{b['seconds']:.2f}s) | CPU % of one core: " + ", ".join(f"{g} {v:.0f}" for g, v in cpu.items())
             + " | machine %: " + ", ".join(f"{g} {v:.0f}" for g, v in machine_cpu.items()))
    progress(f"run {k}/{a.runs}: single {a.n_single} tasks, 1 per Submit, window {a.single_window} ...")
    meter = CpuMeter(bench.cpu_groups).start()
    with Ticker(f"run {k} single"):
        s = bench.single(a.n_single)
    cpu_s = meter.stop()
    progress(f"run {k}/{a.runs}: single  {s['tasks_per_s']:8.0f} tasks/s ({s['seconds']:.2f}s) | CPU % of one "
             "core: " + ", ".join(f"{g} {v:.0f}" for g, v in cpu_s.items()))
    progress(f"run {k}/{a.runs}: latency, {a.lat} sequential submit -> Finished round trips ...")
    with Ticker(f"run {k} latency"):
        lt = bench.latency(a.lat)
    progress(f"run {k}/{a.runs}: latency p50 {lt['p50_ms']:.2f} ms  p99 {lt['p99_ms']:.2f} ms "
             f"(mean {lt['mean_ms']:.2f}, max {lt['max_ms']:.2f})")
    ids = b["ids"] + s["ids"] + lt["ids"]
    big = None
    if a.submit_n:
        progress(f"run {k}/{a.runs}: submit {a.submit_n} tasks with Client.map's defaults (1,000 per Submit, "
                 "window 8), then wait for them ...")
        wal = PeakSize(Path(f"{bench.cluster.db}-wal")).start()
        with Ticker(f"run {k} big submit", status=lambda: f"({len(bench.client.finished)} Finished buffered)"):
            big = bench.batched(a.submit_n, batch_size=1000, window=8)
        big["wal_peak_mb"] = wal.stop() / 2**20
        progress(f"run {k}/{a.runs}: {a.submit_n} tasks acknowledged at {big['submit_per_s']:8.0f} tasks/s "
                 f"({big['submit_seconds']:.2f}s), all done at {big['tasks_per_s']:8.0f} tasks/s; the ledger's "
                 f"WAL file peaked at {big['wal_peak_mb']:.0f} MB")
        ids += big["ids"]
    counts = ledger_check(bench.cluster.db, ids)
    progress(f"run {k}/{a.runs}: ledger check OK: all {len(ids)} tasks of this run are in the ledger, "
             f"state done ({counts})")
    return {"batched_tasks_per_s": b["tasks_per_s"], "submit_per_s": b["submit_per_s"],
            "batched_seconds": b["seconds"], "single_tasks_per_s": s["tasks_per_s"],
            "single_submit_per_s": s["submit_per_s"], "p50_ms": lt["p50_ms"], "p99_ms": lt["p99_ms"],
            "lat_mean_ms": lt["mean_ms"], "cpu_batched": cpu, "cpu_single": cpu_s, "machine_cpu_batched": machine_cpu,
            "ledger_checked": len(ids), "busy_before_pct": background,
            "big_submit_per_s": big["submit_per_s"] if big else None,
            "big_tasks_per_s": big["tasks_per_s"] if big else None,
            "big_wal_peak_mb": big["wal_peak_mb"] if big else None,
            "non_final_from_wait": b["non_final_from_wait"] + s["non_final_from_wait"] + lt["non_final_from_wait"]}


def summarize(runs: list[dict]) -> dict:
    keys = ("batched_tasks_per_s", "submit_per_s", "single_tasks_per_s", "p50_ms", "p99_ms", "big_submit_per_s")
    out = {k: median([r[k] for r in runs]) for k in keys}
    out["runs"] = {k: [round(r[k], 2) if r[k] is not None else None for r in runs] for k in keys}
    mid = sorted(range(len(runs)), key=lambda i: runs[i]["batched_tasks_per_s"])[len(runs) // 2]
    out["cpu_batched_median_run"] = runs[mid]["cpu_batched"]
    out["machine_cpu_batched_median_run"] = runs[mid]["machine_cpu_batched"]
    return out


def ratios(z: dict, ref: dict) -> dict:
    if "missing" in ref or not ref:
        return {}
    b, s = ref["sqlite:100:16"], ref["sqlite:1:16"]

    def r(x: float | None, y: float | None) -> float | None:
        return round(x / y, 3) if x is not None and y else None

    out = {"batched_vs_sqlite:100:16": r(z["batched_tasks_per_s"], b["tasks_per_s"]),
           "single_vs_sqlite:1:16": r(z["single_tasks_per_s"], s["tasks_per_s"]),
           "p50_vs_reference": r(z["p50_ms"], b["p50_ms"]),
           "p99_vs_reference": r(z["p99_ms"], b["p99_ms"]),
           "submit_vs_sqlite:100:16_submit": r(z["submit_per_s"], b["submit_per_s"]),
           "big_submit_vs_sqlite:100:16_submit": r(z["big_submit_per_s"], b["submit_per_s"]),
           "big_submit_vs_reference_big_submit": r(z["big_submit_per_s"], (ref.get("big") or {}).get("submit_per_s"))}
    out["targets"] = {t.key: {"what": t.what, "bound": f"{t.op} {t.bound}", "met": t.met(out[t.key])}
                      for t in END_TO_END}
    return out


# ---------------------------------------------------------------------------------------------- report

def print_report(result: dict) -> None:
    m, z, ref, rt = result["machine"], result["zmqgrid"], result["reference"], result["ratios"]
    a = result["config"]
    print()
    print("zmqgrid end-to-end benchmark (loopback, no-op python tasks)")
    print(f"  date:     {m['date']}")
    print(f"  command:  {result['command']}")
    print(f"  machine:  {m['cpus']} CPUs ({m['cpu_model']}), {m['platform']}")
    print(f"  versions: Python {m['python']}, pyzmq {m['pyzmq']} (libzmq {m['libzmq']}), msgpack {m['msgpack']}, "
          f"sqlite-utils {m['sqlite_utils']} (SQLite {m['sqlite']}), zmqgrid {m['zmqgrid_commit']}")
    print(f"  setup:    master + 2 workers, --concurrency {a['concurrency']}, ZMQGRID_PREFETCH={a['prefetch']}, "
          f"python_pool {a.get('python_pool', 'process')} "
          f"(credit {a['concurrency'] + a['prefetch']} per worker); N={a['n']} batched ({a['batch']}/Submit, "
          f"window {a['window']}), N_single={a['n_single']} (1/Submit, window {a['single_window']}), "
          f"{a['lat']} latency round trips; median of {a['runs']} run(s)")
    print()
    print("per run (zmqgrid):")
    for i, r in enumerate(result["zmqgrid_runs"], 1):
        print(f"  run {i}: busy before {fmt(r.get('busy_before_pct'))}%  batched {r['batched_tasks_per_s']:8.0f}/s  submit-only {r['submit_per_s']:8.0f}/s  "
              f"single {r['single_tasks_per_s']:7.0f}/s  p50 {r['p50_ms']:6.2f} ms  p99 {r['p99_ms']:6.2f} ms  "
              f"CPU% master {r['cpu_batched']['master']:.0f} workers {r['cpu_batched']['workers']:.0f} "
              f"client {r['cpu_batched']['client']:.0f}"
              + (f"  WAL peak {r['big_wal_peak_mb']:.0f} MB" if r.get("big_wal_peak_mb") is not None else ""))
    print()
    have_ref = "missing" not in ref and ref
    rb, rs = (ref.get("sqlite:100:16", {}), ref.get("sqlite:1:16", {})) if have_ref else ({}, {})
    rows = [("batched throughput (tasks/s)", z["batched_tasks_per_s"], rb.get("tasks_per_s"), "sqlite:100:16",
             rt.get("batched_vs_sqlite:100:16"), 0),
            ("submit-only rate (tasks/s acked)", z["submit_per_s"], rb.get("submit_per_s"), "sqlite:100:16",
             rt.get("submit_vs_sqlite:100:16_submit"), 0),
            (f"submit of {a['submit_n']:,} (tasks/s acked)", z["big_submit_per_s"],
             (ref.get("big") or {}).get("submit_per_s"), f"{BIG_VARIANT} n={a['submit_n']:,}",
             rt.get("big_submit_vs_reference_big_submit"), 0),
            (f"  the same, against n={a['n']:,}", z["big_submit_per_s"], rb.get("submit_per_s"),
             "sqlite:100:16", rt.get("big_submit_vs_sqlite:100:16_submit"), 0),
            ("single, 1 task/Submit (tasks/s)", z["single_tasks_per_s"], rs.get("tasks_per_s"), "sqlite:1:16",
             rt.get("single_vs_sqlite:1:16"), 0),
            ("latency p50 (ms)", z["p50_ms"], rb.get("p50_ms"), "sqlite:100:16", rt.get("p50_vs_reference"), 2),
            ("latency p99 (ms)", z["p99_ms"], rb.get("p99_ms"), "sqlite:100:16", rt.get("p99_vs_reference"), 2)]
    print(f"{'metric (median)':34} {'zmqgrid':>10} {'reference':>10} {'ref variant':>22} {'zmqgrid/ref':>12}")
    for name, zv, rv, var, ratio, nd in rows:
        print(f"{name:34} {fmt(zv, nd):>10} {fmt(rv, nd):>10} {var if have_ref else '-':>22} "
              f"{(f'{ratio:.2f}x' if ratio is not None else 'n/a'):>12}")
    print()
    if have_ref:
        print("issue 8 targets (zmqgrid/reference in this run):")
        for key, t in rt["targets"].items():
            ratio = "n/a" if rt[key] is None else f"{rt[key]:.2f}x"
            what, note = t["what"], ""
            if key.startswith("big_submit"):
                what = f"4: submit of {a['submit_n']:,}"
                note = "" if a["submit_n"] == 100_000 else ", for 100,000"
            per_run = " ".join("n/a" if r.get(key) is None else f"{r[key]:.2f}" for r in result.get("ratios_per_run", []))
            print(f"  {what:28} {ratio:>7} (target {t['bound']}x{note}): {verdict(t['met']):8} each run beside its reference: {per_run}")
    elif ref.get("missing"):
        print(f"reference loop missing ({ref['missing']}): no ratios")
    else:
        print("reference loop skipped (--no-reference): no ratios")
    busy = [r.get("busy_before_pct") for r in result["zmqgrid_runs"]] + list(ref.get("busy_before_pct") or [])
    if any(b is not None and b > a["busy_threshold"] for b in busy):
        print(f"warning: the machine was busier than {a['busy_threshold']:.0f}% before some runs (other programs): "
              "those figures are skewed")
    steal = {k: v for k, v in (result.get("steal_pct") or {}).items() if v is not None and v > STEAL_WARN_PCT}
    if steal:
        # Seen on these VMs: at 30-40% steal the reference ran at a quarter of its speed and every ratio moved.
        print("WARNING: the hypervisor took CPU from this machine (steal: " +
              ", ".join(f"{k} {v:.0f}%" for k, v in steal.items()) + f"; more than {STEAL_WARN_PCT}%): "
              "the two systems were not measured on the same machine, the ratios and verdicts above do not count")
    if z.get("non_final_from_wait_total"):
        print(f"warning: Client.wait returned {z['non_final_from_wait_total']} summaries in a non-final state "
              "(a watch answered from the ledger before the commit of the turn that finished them); "
              "the benchmark waited for those again")
    if result.get("py_spy"):
        print()
        print(f"py-spy during the batched phases (raw stacks in {result['py_spy']['dir']}), % of samples:")
        for role, d in result["py_spy"]["roles"].items():
            print(f"  {role}: {d['samples']} samples; own time:")
            for f, p in d["self_pct"][:10]:
                print(f"    {p:5.1f}%  {f}")
            print(f"  {role}: inclusive:")
            for f, p in d["inclusive_pct"][:12]:
                print(f"    {p:5.1f}%  {f}")
    if result.get("profile"):
        print()
        print(f"master profile (cProfile, {result['profile']['file']}), top functions by own time:")
        print(result["profile"]["text"])




# ---------------------------------------------------------------------------------------------- main

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=5000, help="tasks per batched run [5000]")
    ap.add_argument("--n-single", type=int, help="tasks per single run (1 per Submit) [N, as the reference's]")
    ap.add_argument("--lat", type=int, default=200, help="sequential latency round trips per run [200]")
    ap.add_argument("--runs", type=int, default=3, help="runs; figures are medians [3]")
    ap.add_argument("--batch", type=int, default=100, help="tasks per Submit in the batched run [100]")
    ap.add_argument("--window", type=int, default=8, help="unacked Submits in flight, batched (Client default) [8]")
    ap.add_argument("--single-window", type=int, default=1000, help="unacked Submits in flight, single run "
                    "[1000, the reference's]")
    ap.add_argument("--concurrency", type=int, default=4, help="worker --concurrency [4]")
    ap.add_argument("--python-pool", choices=("process", "inline"), default="process",
                    help="workers' python_pool: process (pool children, the default) or inline [process]")
    ap.add_argument("--durability", choices=("full", "normal"), help="the master's ZMQGRID_DURABILITY: full fsyncs "
                    "each turn's commit, normal does not [the config default]")
    ap.add_argument("--prefetch", type=int, default=12, help="worker ZMQGRID_PREFETCH; credit = concurrency + "
                    "prefetch [12, so credit 16 like the reference's best variant]")
    ap.add_argument("--defaults", action="store_true", help="instead: per run, N batched calls on a cluster as "
                    "`distribute` starts it (concurrency 3, adaptive prefetch), on the tuned one (--concurrency 4, "
                    "prefetch 12) and through the reference loop; ratios within each run (tools/benchkit/defaults.py)")
    ap.add_argument("--old-default", action="store_true", help="with --defaults: also a cluster with the fixed "
                    "prefetch 2 that was the default before adaptive prefetch")
    ap.add_argument("--submit-n", type=int, default=100_000,
                    help="per run, also submit this many tasks in one Client.map call (its defaults: 1,000 per Submit, "
                         "window 8), timed until all are acknowledged, then wait for them; 0 skips [100000]")
    ap.add_argument("--quick", action="store_true", help="smoke run: N=500, N_single=200, lat 50, 1 run, submit-n 2000")
    ap.add_argument("--reference", metavar="PATH", help=f"the reference loop [{DEFAULT_PATH}]")
    ap.add_argument("--no-reference", action="store_true", help="skip the reference loop (no ratios)")
    ap.add_argument("--json", action="store_true", help="print all figures as JSON on stdout")
    ap.add_argument("--settle", type=float, default=60, help="before each run, wait up to this many seconds "
                    "for the machine to be quiet [60]")
    ap.add_argument("--busy-threshold", type=float, default=20, help="%% busy that counts as quiet [20]")
    ap.add_argument("--deadline", type=float, default=1800, help="seconds for the whole run [1800]")
    ap.add_argument("--phase-timeout", type=float, default=300, help="seconds for one phase to finish [300]")
    ap.add_argument("--profile-master", metavar="FILE.prof", help="run the master under cProfile, write FILE.prof "
                    "and print its top functions")
    ap.add_argument("--py-spy", metavar="DIR", help="sample master, workers and client with py-spy during the "
                    "batched phases (raw stacks in DIR) and print their top functions; slows the system down")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, ledger)")
    a = ap.parse_args(argv)
    if a.quick:
        a.n, a.n_single, a.lat, a.runs, a.submit_n = 500, 200, 50, 1, 2000
    if a.n_single is None:
        a.n_single = a.n
    if min(a.n, a.n_single, a.lat, a.runs, a.batch, a.window, a.single_window, a.concurrency) < 1 or \
            min(a.prefetch, a.submit_n) < 0:
        ap.error("counts must be >= 1 (prefetch and submit-n >= 0)")
    return a


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    command = command_line(__file__, argv)
    deadline = time.monotonic() + a.deadline
    tmp = Path(tempfile.mkdtemp(prefix="zmqgrid-bench-"))
    profile = Path(a.profile_master).resolve() if a.profile_master else None
    reference = Path(a.reference).resolve() if a.reference else DEFAULT_PATH
    result: dict[str, Any] = {"command": command, "machine": machine(),
                              "config": {k: getattr(a, k) for k in ("n", "n_single", "lat", "runs", "batch", "window",
                                                                    "single_window", "concurrency", "prefetch",
                                                                    "python_pool", "busy_threshold", "submit_n", "durability")}}
    m = result["machine"]
    progress(f"machine: {m['cpus']} CPUs ({m['cpu_model']}), {m['platform']}, Python {m['python']}, "
             f"pyzmq {m['pyzmq']} (libzmq {m['libzmq']}), msgpack {m['msgpack']}, sqlite-utils {m['sqlite_utils']} "
             f"(SQLite {m['sqlite']})")
    progress(f"command: {command}")
    if a.runs < 3 and not a.quick:
        progress(f"note: --runs {a.runs}: medians of fewer than 3 runs are noisy")
    cluster: Cluster | None = None
    bench: Bench | None = None
    if a.defaults:
        def compare() -> None:
            result["defaults"] = defaults.compare(a, tmp, reference, deadline)
        code = guarded(a, tmp, compare)
        if not code:
            emit(a, result, defaults.print_report)
        return code

    def measure() -> None:
        nonlocal cluster, bench
        cluster = Cluster(tmp, concurrency=a.concurrency, prefetch=a.prefetch, profile_master=profile)
        cluster.env["ZMQGRID_PYTHON_POOL"] = a.python_pool
        if a.durability:
            cluster.env["ZMQGRID_DURABILITY"] = a.durability
        progress(f"starting master on {cluster.url} (durability {a.durability or 'default'}) and 2 workers "
                 f"(concurrency {a.concurrency}, prefetch {a.prefetch}, python_pool {a.python_pool}) in {tmp} ...")
        cluster.start()
        progress(f"cluster up: pids {cluster.pids()}")
        result["commands"] = cluster.commands
        bench = Bench(cluster, a)
        spies = None
        if a.py_spy:
            pids = cluster.pids()
            targets = {"master": (pids["master"], False), "client": (os.getpid(), False)}
            targets.update({d: (p, True) for d, p in pids.items() if d != "master"})
            spies = Spies(Path(a.py_spy).resolve(), targets)
        bench.warmup()
        # Each zmqgrid run is followed by one run of the reference (the cluster idles meanwhile): machines here
        # change speed from one half-minute to the next, so the two are compared run by run, side by side in time.
        runs, references, steal = [], [], {"zmqgrid": [], "reference": []}
        for k in range(1, a.runs + 1):
            machine = SysStat().start()
            runs.append(run_once(bench, spies, a, k))
            steal["zmqgrid"].append(machine.stop().get("steal"))
            if not a.no_reference and not (references and "missing" in references[0]):
                machine = SysStat().start()
                references.append(run_reference(reference, tmp, deadline, n=a.n, lat=a.lat, submit_n=a.submit_n,
                                                settle_s=a.settle, busy_threshold=a.busy_threshold, label=str(k)))
                steal["reference"].append(machine.stop().get("steal"))
        result["steal_pct"] = {role: max(v, default=None) if None not in v else None for role, v in steal.items()}
        result["steal_pct_runs"] = steal
        result["zmqgrid_runs"] = runs
        result["zmqgrid"] = summarize(runs)
        result["zmqgrid"]["non_final_from_wait_total"] = bench.non_final
        if spies is not None:
            result["py_spy"] = {"dir": str(spies.outdir), "roles": spies.summary()}
        bench.close()
        bench = None
        progress("stopping the zmqgrid cluster ...")
        cluster.stop()
        cluster = None
        if profile is not None:
            if profile.exists():
                result["profile"] = {"file": str(profile), "text": profile_text(profile)}
            else:
                progress(f"no profile written at {profile} (did the master exit cleanly?)")
        result["reference"] = merge_references(references)
        result["ratios"] = ratios(result["zmqgrid"], result["reference"])
        result["ratios_per_run"] = [ratios(summarize([z]), merge_references([r])) for z, r in zip(runs, references)]

    def cleanup() -> None:
        if bench is not None:
            bench.close()
        if cluster is not None:
            cluster.stop()

    code = guarded(a, tmp, measure, cleanup)
    if code:
        return code
    emit(a, result, print_report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
