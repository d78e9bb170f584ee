"""`tools/bench.py --defaults`: what a user gets without tuning, against the tuned cluster and the reference loop.

Each run measures, one after the other on this machine, N no-op python calls through Client.map (bench.py's batched
phase) on two fresh clusters and the reference loop:

- defaults: a master and two workers exactly as `distribute` starts them with no config file and no variable
  (concurrency 3, adaptive prefetch, log level INFO);
- tuned: `--concurrency 4`, ZMQGRID_PREFETCH=12 (credit 16, the reference's best variant), log level WARNING, as
  bench.py runs by default;
- fixed-2 (with --old-default): as defaults but ZMQGRID_PREFETCH=2, the fixed default before adaptive prefetch;
- the reference loop's sqlite:100:16 variant on the same N.

The clusters go in a rotating order from run to run (the machine's speed drifts), and each ratio is taken within a
run, then the median over the runs is reported.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from .cluster import Cluster
from .measure import median, settle
from .reference import run_reference
from .report import progress
from .workload import Bench, ledger_check

SETUPS = {"defaults": {"concurrency": 3, "prefetch": None, "log_level": None},
          "tuned": {"concurrency": 4, "prefetch": 12, "log_level": "WARNING"},
          "fixed-2": {"concurrency": 3, "prefetch": 2, "log_level": None}}


def one_cluster(label: str, tmp: Path, a: argparse.Namespace, k: int) -> dict:
    """Start the `label` cluster afresh, warm it up, measure N batched no-op calls, stop it."""
    folder = tmp / f"{label}-{k}"
    folder.mkdir()
    cluster = Cluster(folder, **SETUPS[label])
    bench = None
    try:
        cluster.start()
        bench = Bench(cluster, a)
        bench.warmup()
        busy = settle(a.settle, a.busy_threshold, f"{label} run {k}")
        b = bench.batched(a.n)
        ledger_check(cluster.db, b["ids"])
        prefetch = {d["device_id"]: (d.get("metrics") or {}).get("prefetch") for d in bench.client.devices()}
        progress(f"run {k}: {label:8} {b['tasks_per_s']:8.0f} tasks/s ({b['seconds']:.2f}s; machine {busy}% busy "
                 f"before; prefetch now {prefetch})")
        return {"tasks_per_s": b["tasks_per_s"], "busy_before_pct": busy, "prefetch": prefetch,
                "commands": dict(cluster.commands)}
    finally:
        if bench is not None:
            bench.close()
        cluster.stop()


def compare(a: argparse.Namespace, tmp: Path, reference: Path, deadline: float) -> dict:
    runs = []
    labels = list(SETUPS) if a.old_default else ["defaults", "tuned"]
    for k in range(1, a.runs + 1):
        order = labels[k % len(labels):] + labels[:k % len(labels)]
        run = {label: one_cluster(label, tmp, a, k) for label in order}
        if not a.no_reference:
            ref = run_reference(reference, tmp, deadline, n=a.n, lat=a.lat, submit_n=0, settle_s=a.settle,
                                busy_threshold=a.busy_threshold, label=f"d{k}")
            run["reference"] = None if "missing" in ref else ref["sqlite:100:16"]["tasks_per_s"]
        d, t, r = run["defaults"]["tasks_per_s"], run["tuned"]["tasks_per_s"], run.get("reference")
        run["defaults_vs_tuned"] = d / t
        run["defaults_vs_reference"] = d / r if r else None
        if "fixed-2" in run:
            run["fixed-2_vs_tuned"] = run["fixed-2"]["tasks_per_s"] / t
        progress(f"run {k}: defaults/tuned {d / t:.2f}x" + (f", defaults/reference {d / r:.2f}x" if r else ""))
        runs.append(run)
    return {"runs": runs,
            "median": {key: median([r.get(key) for r in runs])
                       for key in ("defaults_vs_tuned", "defaults_vs_reference", "fixed-2_vs_tuned")},
            "tasks_per_s": {label: median([r[label]["tasks_per_s"] for r in runs]) for label in labels},
            "reference_tasks_per_s": median([r.get("reference") for r in runs])}


def print_report(result: dict) -> None:
    c, m = result["defaults"], result["defaults"]["median"]
    print()
    print("zmqgrid with its defaults against the tuned cluster and the reference loop (no-op python calls, Client.map)")
    print(f"  command:  {result['command']}")
    print(f"  machine:  {result['machine']['cpus']} CPUs ({result['machine']['cpu_model']}), "
          f"zmqgrid {result['machine']['zmqgrid_commit']}; N={result['config']['n']} per run")
    for k, run in enumerate(c["runs"], 1):
        ref = run.get("reference")
        print(f"  run {k}: defaults {run['defaults']['tasks_per_s']:7.0f}/s (prefetch at the end "
              f"{run['defaults']['prefetch']})  tuned {run['tuned']['tasks_per_s']:7.0f}/s  reference "
              f"{'-' if ref is None else f'{ref:7.0f}/s'}  defaults/tuned {run['defaults_vs_tuned']:.2f}x"
              + ("" if run["defaults_vs_reference"] is None else f"  defaults/reference {run['defaults_vs_reference']:.2f}x")
              + (f"  fixed-2 {run['fixed-2']['tasks_per_s']:7.0f}/s = {run['fixed-2_vs_tuned']:.2f}x tuned"
                 if "fixed-2" in run else ""))
    print(f"  medians: defaults {c['tasks_per_s']['defaults']:.0f}/s, tuned {c['tasks_per_s']['tuned']:.0f}/s, "
          f"reference {c['reference_tasks_per_s'] or 0:.0f}/s")
    verdict = lambda x, bound: "n/a" if x is None else f"{x:.2f}x ({'met' if x >= bound else 'NOT met'}, target >= {bound})"  # noqa: E731
    print(f"  defaults/tuned:     {verdict(m['defaults_vs_tuned'], 0.9)}")
    print(f"  defaults/reference: {verdict(m['defaults_vs_reference'], 0.8)}")
    if m.get("fixed-2_vs_tuned") is not None:
        print(f"  fixed-2/tuned:      {m['fixed-2_vs_tuned']:.2f}x (the fixed default before adaptive prefetch)")
