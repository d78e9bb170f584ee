#!/usr/bin/env python
"""What a queue of tasks costs a real master: memory per queued task, and CPU while tasks nobody can take wait.

    python tools/bench_queue.py memory --n 200000       # RSS of the master before and after N queued tasks
    python tools/bench_queue.py parked --n 10050        # N tasks with a tag no worker has, then 100 plain ones
    python tools/bench_queue.py cpu                     # in-process: the master's CPU per task, no sockets

All on 127.0.0.1 in a temporary folder: a real master (`python -m zmqgrid distribute --mode master`, the default
config) as a child process with PYTHONPATH set to this repository, stopped by its PID at the end (tools/benchkit's
Cluster).

memory: no worker; `Client.map('zmqgrid.samples:noop', [(i,), ...])` queues N calls (1,000 per Submit), then the
master's RSS (psutil) is read after a settle; reports MiB before, after, and bytes per queued task.
parked: one worker (concurrency 2); N tasks tagged `nosuchtag`, then 100 untagged ones: reports how long the 100
took, and the master's CPU seconds over a `--window` of seconds while only the parked tasks are queued.
cpu: in this process, on a real ledger in a temporary folder, Board.submit + dispatch + record_result + commit of
20,000 calls (Submits of 16 and of 100, two devices of credit 16), and Board.submit alone of 100,000 calls in
Submits of 1,000 into a queue nobody takes from (the long queue, whose tasks keep their wire part packed): process
CPU per task, the minimum of `--repeat` runs. Run it for two revisions in turn to compare them.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import psutil

if __name__ == "__main__":   # `python tools/bench_queue.py` imports from the repository root, as `python -m tools.bench_queue` does
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from tools.benchkit.cluster import Cluster
from tools.benchkit.measure import cpu_seconds
from tools.benchkit.processes import stop_all
from zmqgrid.client import Client
from zmqgrid.errors import MasterUnavailable


def start_cluster(tmp: Path, workers: int) -> Cluster:
    """The master with the default config (and `workers` workers of concurrency 2), answering."""
    cluster = Cluster(tmp, concurrency=2, prefetch=None, workers=workers, log_level=None)
    cluster.start()
    return cluster


def rss_mib(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / 2**20


def memory(a: argparse.Namespace, tmp: Path) -> dict:
    cluster = start_cluster(tmp, workers=0)
    time.sleep(1.0)
    before = rss_mib(cluster.master.pid)
    with Client(cluster.url, timeout_s=120) as c:
        started = time.monotonic()
        ids = c.map("zmqgrid.samples:noop", [(i,) for i in range(a.n)])
        submit_s = time.monotonic() - started
    time.sleep(2.0)
    after = rss_mib(cluster.master.pid)
    return {"n": len(ids), "rss_before_mib": round(before, 1), "rss_after_mib": round(after, 1),
            "bytes_per_task": round((after - before) * 2**20 / len(ids)), "submit_tasks_per_s": round(a.n / submit_s)}


def parked(a: argparse.Namespace, tmp: Path) -> dict:
    cluster = start_cluster(tmp, workers=1)
    with Client(cluster.url, timeout_s=60) as c:
        c.map("zmqgrid.samples:noop", [(i,) for i in range(a.n)], tags=["nosuchtag"])
        started = time.monotonic()
        plain = c.map("zmqgrid.samples:noop", [(i,) for i in range(100)], notify=True)
        try:
            results = c.wait(plain, timeout_s=a.window * 2)
        except MasterUnavailable:   # they did not finish in time: starved behind the parked ones
            results = {}
        plain_s = time.monotonic() - started
        done = sum(1 for r in results.values() if r["state"] == "done")
        time.sleep(1.0)
        cpu0, t0 = cpu_seconds([cluster.master.pid], False), time.monotonic()
        time.sleep(a.window)
        cpu = cpu_seconds([cluster.master.pid], False) - cpu0
        wall = time.monotonic() - t0
    return {"parked": a.n, "plain_done": done, "plain_s": round(plain_s, 2),
            "master_cpu_percent_while_parked": round(100 * cpu / wall, 1)}


def _cluster(tmp: Path, name: str):
    from zmqgrid.master.board import Board
    from zmqgrid.master.strategies import least_tasks
    from zmqgrid.master.turn import Turn
    from zmqgrid.store.task_store import TaskStore
    store = TaskStore(tmp / f"{name}.db")
    return store, Board(store, Turn(), incarnation="bench", strategy=least_tasks, default_retries=3,
                        default_timeout_s=None, device_timeout_s=10.0)


def _calls(n: int, start: int) -> list[dict]:
    from zmqgrid.client import build_spec, compact_spec
    from zmqgrid.model import validate_batch
    from zmqgrid.model import new_task_id
    common = compact_spec(build_spec(python="zmqgrid.samples:noop"))
    del common["id"]
    return validate_batch([{"id": new_task_id(), "args": [i]} for i in range(start, start + n)], common)


def _round_trips(tmp: Path, name: str, batch: int, total: int = 20_000) -> float:
    from zmqgrid.master.entries import DeviceEntry
    store, cluster = _cluster(tmp, name)
    devices = [DeviceEntry(f"w{i}", f"w{i}".encode(), registered=True, credit=16, concurrency=8) for i in range(2)]
    cluster.fleet.devices.update((d.device_id, d) for d in devices)
    batches = [_calls(batch, k) for k in range(0, total, batch)]
    started = time.process_time()
    for specs in [*batches, *([[]] * (total // 16))]:
        if not specs and not cluster.tasks:
            break
        now = time.time()
        if specs:
            cluster.submit(specs, b"client", False, now)
        cluster.dispatch(time.monotonic(), now)
        for device in devices:
            for task_id in list(device.inflight):
                cluster.record_result(device, {"id": task_id, "attempt": cluster.tasks[task_id].attempt,
                                               "state": "done"}, time.monotonic(), now)
            device.credit = 16
        cluster.turn.take()
        store.commit()
    return (time.process_time() - started) / total * 1e6


def _long_queue(tmp: Path, name: str, total: int = 100_000) -> float:
    store, cluster = _cluster(tmp, name)
    batches = [_calls(1000, k) for k in range(0, total, 1000)]
    started, now = time.process_time(), time.time()
    for specs in batches:
        cluster.submit(specs, b"client", False, now)
        store.commit()
    return (time.process_time() - started) / total * 1e6


def cpu(a: argparse.Namespace, tmp: Path) -> dict:
    out = {}
    for batch in (16, 100):
        out[f"submit_dispatch_result_us_per_task_batch_{batch}"] = round(
            min(_round_trips(tmp, f"rt{batch}-{r}", batch) for r in range(a.repeat)), 1)
    out["submit_long_queue_us_per_task"] = round(min(_long_queue(tmp, f"lq{r}") for r in range(a.repeat)), 2)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=("memory", "parked", "cpu"))
    p.add_argument("--n", type=int, default=200_000)
    p.add_argument("--window", type=float, default=10.0, help="seconds of master CPU measured (parked)")
    p.add_argument("--repeat", type=int, default=5, help="runs of each in-process loop, the minimum counts (cpu)")
    a = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="zg-queue-") as d:
        try:
            result = {"memory": memory, "parked": parked, "cpu": cpu}[a.what](a, Path(d))
        finally:
            stop_all()
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
