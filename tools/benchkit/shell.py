"""Shell tasks against fork and exec: N `--shell true` tasks through a cluster with the defaults, beside
`seq N | xargs -P SLOTS -n 1 sh -c true` (the same number of processes at once, started by a small C program), in the
same run, alternating, so each zmqgrid figure has an anchor measured next to it in time.

`shell_bench(args)` is the whole measurement (tools/bench_shell.py parses the arguments); with `baseline` a second
cluster runs another revision's zmqgrid beside this checkout's, in the same rotation, for a before/after ratio."""
from __future__ import annotations

import argparse
import resource
import subprocess
import tempfile
import time
from pathlib import Path

from tests.helpers import REPO
from zmqgrid.client import Client, build_spec

from .cluster import Cluster
from .measure import CpuMeter, median, settle
from .report import progress
from .spies import Spies
from .workload import check_finished, wait_final

WARMUP = 200


def xargs_command(n: int, slots: int) -> str:
    return f"seq {n} | xargs -P {slots} -n 1 sh -c true"


def run_xargs(n: int, slots: int) -> dict:
    """The anchor: N `sh -c true`, SLOTS at a time, each waited for by xargs; its rate and the CPU per task of
    xargs with its shells (their rusage, reaped)."""
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(["/bin/sh", "-c", xargs_command(n, slots)], check=True, stdin=subprocess.DEVNULL)
    dt = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    return {"tasks_per_s": n / dt, "cpu_us_per_task": {"xargs": round(cpu / n * 1e6)}}


class ShellCluster:
    """A master and `workers` workers as `distribute` starts them (the default config: `concurrency` slots,
    prefetch unset), running the zmqgrid of `repo`, and a client submitting `--shell true` tasks to it."""

    def __init__(self, name: str, tmp: Path, repo: Path, workers: int, concurrency: int) -> None:
        self.name = name
        self.cluster = Cluster(tmp, concurrency=concurrency, prefetch=None, workers=workers, repo=repo)
        self.client: Client | None = None

    def start(self) -> None:
        self.cluster.start()
        self.client = Client(self.cluster.url, timeout_s=30)
        pids = self.cluster.pids()
        self.cpu = CpuMeter({"master": ([pids["master"]], False),
                             "workers": ([p for d, p in pids.items() if d != "master"], True)})
        self.run(WARMUP, timeout_s=120)

    def worker_pids(self) -> list[int]:
        return [p.pid for p in self.cluster.workers.values()]

    def run(self, n: int, timeout_s: float) -> dict:
        """N `true` tasks submitted (1,000 per Submit, as `submit --file` sends them) and waited for."""
        assert self.client is not None
        specs = (build_spec(shell="true") for _ in range(n))
        self.cpu.start()
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        ids = self.client.submit(specs, notify=True)
        results, _ = wait_final(self.client, ids, timeout_s)
        dt = time.perf_counter() - t0
        client_cpu = time.process_time() - cpu0
        used = self.cpu.stop()   # % of one core over the wall time
        check_finished(results, ids, f"{self.name}: shell true")
        cpu_us = {k: round(v / 100 * dt / n * 1e6) for k, v in used.items()}
        cpu_us["client"] = round(client_cpu / n * 1e6)
        return {"tasks_per_s": n / dt, "cpu_us_per_task": cpu_us}

    def stop(self) -> None:
        if self.client is not None:
            self.client.close()
        self.cluster.stop()


def checkout(rev: str, into: Path) -> Path:
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "--force", str(into), rev],
                   check=True, capture_output=True, text=True)
    return into


def shell_bench(a: argparse.Namespace, tmp: Path) -> dict:
    """`a`: n, runs, workers, slots (per worker), settle, busy_threshold, baseline (a revision or None),
    phase_timeout. Returns every figure, the medians and the ratios."""
    slots = a.workers * a.slots
    trees = {"zmqgrid": REPO}
    if a.baseline:
        trees = {f"baseline {a.baseline}": checkout(a.baseline, tmp / "baseline-tree"), **trees}
    clusters: dict[str, ShellCluster] = {}
    measured: dict[str, list[dict]] = {name: [] for name in ["xargs", *trees]}
    try:
        for name, tree in trees.items():
            folder = Path(tempfile.mkdtemp(prefix="cluster-", dir=tmp))
            clusters[name] = ShellCluster(name, folder, tree, a.workers, a.slots)
            progress(f"starting {name} ({tree}): master + {a.workers} workers x {a.slots} slots ...")
            clusters[name].start()
        run_xargs(WARMUP, slots)
        order = ["xargs", *trees]
        for k in range(1, a.runs + 1):
            busy = settle(a.settle, a.busy_threshold, f"run {k}")
            turn = order[(k - 1) % len(order):] + order[:(k - 1) % len(order)]   # each goes first in turn
            for name in turn:
                spies = spy_on(a, clusters[name], k) if name == "zmqgrid" else None
                try:
                    m = run_xargs(a.n, slots) if name == "xargs" else clusters[name].run(a.n, a.phase_timeout)
                finally:
                    if spies is not None:
                        spies.stop()
                m["busy_before_pct"] = busy
                measured[name].append(m)
                cpu = m.get("cpu_us_per_task")
                progress(f"run {k}/{a.runs} {name}: {m['tasks_per_s']:,.0f} tasks/s"
                         + (f", CPU us/task {cpu}" if cpu else ""))
    finally:
        for c in clusters.values():
            c.stop()
        if a.baseline:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tmp / "baseline-tree")],
                           capture_output=True)
            subprocess.run(["git", "-C", str(REPO), "worktree", "prune"], capture_output=True)
    out = summarise(a, measured, list(trees))
    if a.py_spy:
        out["py_spy"] = Spies(Path(a.py_spy), {f"worker{i}": (0, False) for i in range(1, a.workers + 1)}).summary()
    return out


def spy_on(a: argparse.Namespace, cluster: ShellCluster, run: int) -> Spies | None:
    """py-spy on each worker of this checkout's cluster while it runs its tasks (`--py-spy DIR`)."""
    if not a.py_spy:
        return None
    spies = Spies(Path(a.py_spy), {f"worker{i}": (pid, False) for i, pid in enumerate(cluster.worker_pids(), 1)})
    spies.start(run)
    return spies


def summarise(a: argparse.Namespace, measured: dict[str, list[dict]], trees: list[str]) -> dict:
    medians = {name: median([m["tasks_per_s"] for m in ms]) for name, ms in measured.items()}
    out: dict = {"n": a.n, "runs": a.runs, "workers": a.workers, "slots_per_worker": a.slots,
                 "anchor": xargs_command(a.n, a.workers * a.slots), "runs_by_side": measured,
                 "median_tasks_per_s": medians, "cpu_us_per_task_median": {}}
    for name in measured:
        out["cpu_us_per_task_median"][name] = {k: median([m["cpu_us_per_task"][k] for m in measured[name]])
                                               for k in measured[name][0]["cpu_us_per_task"]}
    for name in trees:
        out[f"ratio {name}/xargs"] = medians[name] / medians["xargs"]
        out[f"run ratios {name}/xargs"] = [round(m["tasks_per_s"] / x["tasks_per_s"], 3)
                                           for m, x in zip(measured[name], measured["xargs"])]
    if len(trees) == 2:
        base, head = trees
        out["ratio zmqgrid/baseline"] = medians[head] / medians[base]
        out["run ratios zmqgrid/baseline"] = [round(h["tasks_per_s"] / b["tasks_per_s"], 3)
                                              for h, b in zip(measured[head], measured[base])]
    return out


def report(result: dict) -> None:
    for role, spied in result.get("py_spy", {}).items():
        print(f"py-spy {role}: {spied['samples']} samples holding the GIL; own time:")
        for frame, share in spied["self_pct"]:
            print(f"  {share:5.1f}%  {frame}")
    print(f"{result['n']:,} `--shell true` tasks, {result['workers']} workers x {result['slots_per_worker']} slots, "
          f"{result['runs']} runs; anchor: {result['anchor']}")
    for name, rate in result["median_tasks_per_s"].items():
        each = " ".join(f"{m['tasks_per_s']:,.0f}" for m in result["runs_by_side"][name])
        cpu = result["cpu_us_per_task_median"].get(name)
        print(f"  {name:>24}: median {rate:,.0f} tasks/s (each: {each})"
              + (f"; CPU us/task {', '.join(f'{k} {v:.0f}' for k, v in cpu.items())}" if cpu else ""))
    for key, value in result.items():
        if key.startswith("ratio "):
            runs = result.get("run " + key.replace("ratio ", "ratios ", 1), [])
            print(f"  {key}: {value:.3f} (each run: {' '.join(f'{r:.2f}' for r in runs)})")

