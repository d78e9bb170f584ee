"""One measurement of tools/bench_ab.py, with a tree's own code; bench_ab runs this file by path, in a child:

    python tools/benchkit/ab_child.py TREE PHASE N PYTHON_POOL [ZMQGRID_KEY=VALUE ...]   -> one JSON line

Client, master and workers all run TREE's zmqgrid, with TREE's benchmark machinery: tools/benchkit's Cluster and
Bench, or, in a tree from before tools/benchkit, tools/bench.py's (every commit of it has both). So this file
imports nothing from the checkout it lives in, only the standard library and, once TREE is first on sys.path,
TREE's modules. The measurement: a fresh cluster (`--concurrency 4`, ZMQGRID_PREFETCH=12, python_pool, the
settings given), its warm-up, then one phase of N tasks, and the CPU each side spent on it.
"""
from __future__ import annotations

import argparse
import importlib
import json
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace


def machinery(tree: Path) -> SimpleNamespace:
    """TREE's Cluster, Bench, cpu_seconds and stop_all, whichever layout its tools/ has."""
    if (tree / "tools" / "benchkit" / "workload.py").exists():
        cluster = importlib.import_module("tools.benchkit.cluster")
        measure = importlib.import_module("tools.benchkit.measure")
        processes = importlib.import_module("tools.benchkit.processes")
        workload = importlib.import_module("tools.benchkit.workload")
        return SimpleNamespace(Cluster=cluster.Cluster, Bench=workload.Bench, cpu_seconds=measure.cpu_seconds,
                               stop_all=processes.stop_all)
    bench = importlib.import_module("tools.bench")
    return SimpleNamespace(Cluster=bench.Cluster, Bench=bench.Bench, cpu_seconds=bench.cpu_seconds,
                           stop_all=bench.stop_all)


def measure(kit: SimpleNamespace, phase: str, n: int, python_pool: str, env: list[str]) -> dict:
    args = argparse.Namespace(batch=100, window=8, single_window=1000, phase_timeout=300, py_spy=None)
    tmp = Path(tempfile.mkdtemp(prefix="zmqgrid-ab-"))
    cluster = kit.Cluster(tmp, concurrency=4, prefetch=12)
    cluster.env["ZMQGRID_PYTHON_POOL"] = python_pool
    cluster.env.update(item.split("=", 1) for item in env)
    run = None
    try:
        cluster.start()
        run = kit.Bench(cluster, args)
        run.warmup()
        master, workers = [cluster.master.pid], [p.pid for p in cluster.workers.values()]
        before = kit.cpu_seconds(master, False), kit.cpu_seconds(workers, True), time.process_time()
        if phase == "latency":
            figure = run.latency(n)["p50_ms"]
        else:
            figure = getattr(run, phase)(n)["tasks_per_s"]
        after = kit.cpu_seconds(master, False), kit.cpu_seconds(workers, True), time.process_time()
        spent = {name: round((b - a) / n * 1e6, 1) for name, a, b in zip(("master", "workers", "client"), before, after)}
        return {"figure": figure, "cpu_us_per_task": spent}
    finally:
        if run is not None:
            run.close()
        cluster.stop()
        kit.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)


def _interrupted(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> int:
    tree, phase, n, python_pool, *env = sys.argv[1:]
    tree_path = Path(tree).resolve()
    sys.path[0] = str(tree_path)   # this file's folder gives way to TREE: every import from here on is TREE's
    signal.signal(signal.SIGTERM, _interrupted)   # so that `finally` stops the cluster
    print(json.dumps(measure(machinery(tree_path), phase, int(n), python_pool, env)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
