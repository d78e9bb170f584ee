#!/usr/bin/env python
"""Failure detection and recovery time of the real system, with the default timings.

    python tools/bench_faults.py [--trials 10] [--json]

A real master and two real workers run on 127.0.0.1 (defaults: heartbeat 1 s, device_timeout 2.5 s,
liveness check every 0.2 s). Each trial: a long shell task runs on each worker, each with children and
grandchildren (tests/tasks.py's TREE: five processes); the victim worker is SIGKILLed; its task's processes are
polled every 10 ms until none runs (tree gone: the worker's reaper kills them), and the master until it marks the
victim offline (detection) and until the victim's task runs on the other worker (recovery). Both tasks are then
cancelled and the victim restarted. Reports the median and the worst of the trials. Every process it starts is
stopped by PID.
"""
from __future__ import annotations

import argparse
import json
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil

if __name__ == "__main__":   # `python tools/bench_faults.py` imports from the repository root, as `python -m tools.bench_faults` does
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from tests.tasks import TREE, TREE_PIDS
from tools.benchkit.cluster import Cluster
from tools.benchkit.measure import poll
from tools.benchkit.processes import forget, stop_all
from tools.benchkit.report import command_line, machine, progress
from zmqgrid.client import Client, build_spec

POLL_S = 0.01   # how often the master is asked during a trial: the resolution of the figures


def _tree(pids: Path) -> list[psutil.Process] | None:
    """The task's processes (with their create times, so a reused pid is never taken for one), once all started."""
    found = pids.read_text().split() if pids.exists() else []
    return [psutil.Process(int(pid)) for pid in found] if len(found) >= TREE_PIDS else None


def _runs(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def trial(cluster: Cluster, client: Client, n: int) -> dict:
    pids = [cluster.tmp / f"trial-{n}-{k}.pids" for k in range(2)]
    ids = client.submit([build_spec(shell=TREE.format(pids=p)) for p in pids])
    poll(lambda: all(client.task(i)["state"] == "running" for i in ids), 30, "both tasks to run", 0.05)
    on_victim = next(k for k, i in enumerate(ids) if client.task(i)["device_id"] == "bench-1")
    started: list[list[psutil.Process]] = []
    poll(lambda: started.append(_tree(pids[on_victim])) or started[-1], 30, "the victim's task tree to start", 0.05)
    tree = started[-1]
    victim = cluster.workers["bench-1"]
    t0 = time.monotonic()
    victim.send_signal(signal.SIGKILL)
    # Polled before the master: the tree goes in milliseconds, the device only after device_timeout.
    gone = poll(lambda: not any(_runs(proc) for proc in tree), 30, "the victim's task tree to die", POLL_S)
    on_victim = ids[on_victim]
    detected = poll(lambda: {d["device_id"]: d["state"] for d in client.devices()}["bench-1"] == "offline",
                    30, "the victim to be marked offline", POLL_S)
    recovered = poll(lambda: (lambda t: t["state"] == "running" and t["device_id"] == "bench-2")(
        client.task(on_victim)), 30, "its task to run on the other worker", POLL_S)
    victim.wait(10)
    forget(victim)
    client.cancel(ids)
    client.wait(ids, timeout_s=30)
    cluster.start_worker("bench-1")
    poll(lambda: "bench-1" in {d["device_id"] for d in client.devices() if d["state"] == "online"}, 30,
         "the victim to come back", 0.05)
    return {"tree_gone_s": round(gone - t0, 3), "detection_s": round(detected - t0, 3),
            "recovery_s": round(recovered - t0, 3)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    command = command_line(__file__, argv)
    with tempfile.TemporaryDirectory(prefix="zg-faults-") as tmp:
        cluster = Cluster(Path(tmp), concurrency=2, prefetch=0)
        try:
            cluster.start()
            with Client(cluster.url, timeout_s=10) as client:
                trials = []
                for n in range(1, args.trials + 1):
                    trials.append(trial(cluster, client, n))
                    progress(f"trial {n}/{args.trials}: tree gone {trials[-1]['tree_gone_s']:.3f}s "
                             f"detection {trials[-1]['detection_s']:.2f}s "
                             f"recovery {trials[-1]['recovery_s']:.2f}s")
        finally:
            cluster.stop()
            stop_all()
    result = {"command": command, "machine": machine(), "trials": trials}
    for key in ("tree_gone_s", "detection_s", "recovery_s"):
        values = [t[key] for t in trials]
        result[key] = {"median": round(statistics.median(values), 3), "worst": max(values)}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{command}\n{len(trials)} trials, defaults (heartbeat 1 s, device_timeout 2.5 s, check 0.2 s):")
        for key, label in (("tree_gone_s", "tree gone (SIGKILL -> its task's last process gone)"),
                           ("detection_s", "detection (SIGKILL -> offline)"),
                           ("recovery_s", "recovery (SIGKILL -> its task running elsewhere)")):
            print(f"  {label:<52} median {result[key]['median']:.3f} s   worst {result[key]['worst']:.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
