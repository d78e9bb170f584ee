#!/usr/bin/env python
"""Many workers on one master: 1,000 simulated workers with real sockets, the real master, default timings.

    python tools/bench_fleet.py [--workers 1000] [--procs 4] [--tasks 5000] [--json]

All on 127.0.0.1, in a temporary folder removed afterwards (kept on error or with --keep):

1. Starts the real master (`python -m zmqgrid distribute --mode master`, default config: heartbeat 1 s,
   device_timeout 2.5 s, liveness check 0.2 s, log level INFO) and `--procs` simulator processes
   (tools/benchkit/fleetsim.py), each running workers/procs simulated workers. A simulated worker is what a real one is on the
   wire: its own DEALER (identity = device id), SUB (beacon, all, device.<id>) and PUSH (heartbeats), speaking
   zmqgrid.protocol's messages (Register with credit, Heartbeat every heartbeat_interval with psutil metrics,
   Results with credit and `started`, the worker's Outbox). It registers after a random delay in [0, --ramp]
   (a fleet started together), re-registers with the real worker's jittered backoff when unanswered, and "runs"
   a task by holding it: `zmqgrid.samples:nap` for its seconds, anything else ends at once (done).
2. Registration: time until the master has all of them online, and how the Registers were spread: first Registers
   sent per 100 ms (a herd would put most of the fleet into a few buckets), retries, and the master's own
   `registered_at` (which its loop turns batch).
3. Idle: the master's CPU (psutil, % of one core) over --idle seconds with the whole fleet heartbeating, and
   whether any device flapped offline.
4. Fault: submits --tasks `nap(--task-s)` tasks, SIGKILLs one simulator process while its workers hold tasks,
   and polls the ledger (read-only, every 20 ms) until its devices are offline (detection) and every task they
   held is re-queued (then: running elsewhere or done). Waits for every task; checks submitted = done in the ledger.

Every process it starts is stopped by PID (also on error, Ctrl-C or --deadline). Progress on stderr.
"""
from __future__ import annotations

import argparse
import json
import resource
import shlex
import signal
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import psutil

if __name__ == "__main__":   # `python tools/bench_fleet.py` imports from the repository root, as `python -m tools.bench_fleet` does
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from tools.benchkit.cluster import Cluster
from tools.benchkit.fleetsim import raise_fd_limit
from tools.benchkit.guard import guarded
from tools.benchkit.measure import SysStat, poll, settle, thread_times
from tools.benchkit.processes import spawn, stop_process
from tools.benchkit.report import command_line, emit, machine, progress
from tools.benchkit.spies import Spies
from tools.benchkit.targets import FLEET, FLEET_IDLE_BUSY_PCT, HERD_SHARE, by_key
from zmqgrid.client import Client, build_spec

TARGETS = by_key(FLEET)
POLL_S = 0.02   # how often the ledger is read while a figure is timed: its resolution


class Ledger:
    """Read-only views of the master's SQLite file (what the master committed, one loop turn behind at most)."""

    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)

    def one(self, sql: str, params: tuple = ()) -> object:
        return self.conn.execute(sql, params).fetchone()[0]

    def rows(self, sql: str, params: tuple = ()) -> list[tuple]:
        return self.conn.execute(sql, params).fetchall()


def buckets(times: list[float], width_s: float) -> dict[int, int]:
    out: dict[int, int] = {}
    for t in times:
        out[int(t // width_s)] = out.get(int(t // width_s), 0) + 1
    return out


def run(a: argparse.Namespace, tmp: Path, result: dict) -> None:
    cluster = Cluster(tmp, workers=0, prefetch=None, log_level=None)   # default config, log level INFO
    url, db, env = cluster.url, cluster.db, cluster.env
    sims: dict = {}
    cluster.start()
    master = cluster.master
    result["commands"] = dict(cluster.commands)
    client = Client(url, timeout_s=10)
    try:
        master_ps = psutil.Process(master.pid)
        progress(f"master pid {master.pid} on {url}; fd limit soft/hard {resource.getrlimit(resource.RLIMIT_NOFILE)}")
        ledger = Ledger(db)
        # ---- registration
        per = [a.workers // a.procs + (1 if p < a.workers % a.procs else 0) for p in range(a.procs)]
        t_spawn_wall = time.time()
        t_spawn = time.monotonic()
        for p, count in enumerate(per):
            prefix = f"sim{p}-"
            sargv = [sys.executable, "-m", "tools.benchkit.fleetsim", "--master", url, "--prefix", prefix,
                     "--count", str(count), "--ramp", str(a.ramp), "--concurrency", str(a.concurrency),
                     "--prefetch", str(a.prefetch), "--seed", str(a.seed + p)]
            sims[prefix] = spawn(sargv, cwd=tmp, env=env, log=tmp / f"{prefix}out")
        result["commands"]["simulator"] = shlex.join(sargv)
        progress(f"{a.procs} simulator processes ({'+'.join(map(str, per))} workers), ramp {a.ramp:g}s ...")
        last = [0.0]

        def all_online() -> bool:
            for prefix, proc in sims.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"simulator {prefix} exited with {proc.returncode}; see {tmp}/{prefix}out")
            n = ledger.one("SELECT count(*) FROM devices WHERE state='online'")
            if time.monotonic() - last[0] >= 1.0:
                last[0] = time.monotonic()
                progress(f"  {n}/{a.workers} online")
            return n >= a.workers

        t_all = poll(all_online, 60, f"all {a.workers} workers online", 0.05)
        status = client.status()
        files = [tmp / f"{prefix}reg.json" for prefix in sims]
        poll(lambda: all(f.exists() for f in files), 10, "the simulators' register times", 0.1)
        sent = [json.loads(f.read_text()) for f in files]
        reg = sorted(t - t_spawn_wall for s in sent for t in s["first_sent"])   # when each first Register left
        accepted = sorted(r[0] - t_spawn_wall for r in ledger.rows("SELECT registered_at FROM devices"))
        b100 = buckets(reg, 0.1)
        reg_fig = {"all_registered_s": round(t_all - t_spawn, 2), "online_in_status": status["devices"]["online"],
                   "first_s": round(reg[0], 2), "last_s": round(reg[-1], 2), "registers_sent": sum(
                       s["registers"] for s in sent), "max_per_100ms": max(b100.values()),
                   "max_per_1s": max(buckets(reg, 1.0).values()),
                   "buckets_100ms": [b100.get(i, 0) for i in range(int(reg[-1] // 0.1) + 1)],
                   "accepted_max_per_100ms": max(buckets(accepted, 0.1).values()),
                   "accepted_last_s": round(accepted[-1], 2)}
        result["registration"] = reg_fig
        progress(f"all {a.workers} online after {reg_fig['all_registered_s']}s (status says "
                 f"{reg_fig['online_in_status']}); at most {reg_fig['max_per_100ms']} registrations in one 100 ms")
        # ---- idle
        time.sleep(2.0)   # the last ones' first heartbeats and registration logs are behind us
        busy_before = settle(a.settle, FLEET_IDLE_BUSY_PCT, "the idle measurement")
        spies = Spies(Path(a.py_spy), {"master": (master.pid, False)}) if a.py_spy else None
        if spies is not None:
            spies.start(1)
        cpu0, sys0, t0 = master_ps.cpu_times(), SysStat().start(), time.perf_counter()
        threads0 = thread_times(master.pid)
        sim_cpu0 = sum(sum(psutil.Process(p.pid).cpu_times()[:2]) for p in sims.values())
        hb0 = ledger.one("SELECT count(*) FROM heartbeats")
        flaps = 0
        while time.perf_counter() - t0 < a.idle:
            time.sleep(0.5)
            flaps = max(flaps, a.workers - ledger.one("SELECT count(*) FROM devices WHERE state='online'"))
        wall = time.perf_counter() - t0
        cpu1 = master_ps.cpu_times()
        threads1 = thread_times(master.pid)
        sim_cpu1 = sum(sum(psutil.Process(p.pid).cpu_times()[:2]) for p in sims.values())
        idle = {"seconds": round(wall, 1), "master_cpu_pct": round(100 * ((cpu1.user + cpu1.system)
                                                                             - (cpu0.user + cpu0.system)) / wall, 1),
                "master_user_system_pct": [round(100 * (cpu1.user - cpu0.user) / wall, 1),
                                           round(100 * (cpu1.system - cpu0.system) / wall, 1)],
                "master_threads_pct": {k: round(100 * (v - threads0.get(k, 0.0)) / wall, 1)
                                       for k, v in threads1.items() if v - threads0.get(k, 0.0) > 0.001 * wall},
                "simulators_cpu_pct": round(100 * (sim_cpu1 - sim_cpu0) / wall, 1), "machine": sys0.stop(),
                "machine_busy_before_pct": busy_before, "offline_at_worst": flaps,
                "heartbeat_rows_per_s": round((ledger.one("SELECT count(*) FROM heartbeats") - hb0) / wall, 1),
                "master_rss_mb": round(master_ps.memory_info().rss / 2**20, 1), "master_fds": master_ps.num_fds()}
        result["idle"] = idle
        if spies is not None:
            spies.stop()
            result["py_spy"] = spies.summary()["master"]
            progress("py-spy, master while idle (own %): " + ", ".join(f"{f} {p}" for f, p in
                                                                     result["py_spy"]["self_pct"][:8]))
        progress(f"idle: master {idle['master_cpu_pct']}% of a core over {idle['seconds']}s (simulators "
                 f"{idle['simulators_cpu_pct']}%, machine {idle['machine']}); offline at worst {flaps}")
        # ---- tasks and a SIGKILLed simulator
        specs = [build_spec(python="zmqgrid.samples:nap", args=[a.task_s]) for _ in range(a.tasks)]
        ids = client.submit(specs, batch_size=1000)
        t_sub = time.monotonic()
        victim_prefix = "sim0-"
        held_sql = ("SELECT id FROM tasks WHERE state IN ('assigned','running') AND device_id LIKE ?")
        poll(lambda: len(ledger.rows(held_sql, (victim_prefix + "%",))) >= min(per[0], a.tasks // a.procs // 2),
             30, "the victim's workers to hold tasks", 0.05)
        time.sleep(max(0.0, a.kill_after - (time.monotonic() - t_sub)))
        held = [r[0] for r in ledger.rows(held_sql, (victim_prefix + "%",))]
        victim = sims[victim_prefix]
        t_kill = time.monotonic()
        victim.send_signal(signal.SIGKILL)
        progress(f"SIGKILLed simulator {victim_prefix} (pid {victim.pid}, {per[0]} workers) holding {len(held)} tasks")
        offline_sql = "SELECT count(*) FROM devices WHERE state='offline' AND device_id LIKE ?"
        t_first = poll(lambda: ledger.one(offline_sql, (victim_prefix + "%",)) > 0, 30, "a victim device offline",
                       POLL_S)
        t_det = poll(lambda: ledger.one(offline_sql, (victim_prefix + "%",)) >= per[0], 30, "every victim offline",
                     POLL_S)
        marks = ",".join("?" * len(held))

        def moved(queued_too: bool) -> bool:
            """Every task the victim held is no longer its: final (a result that left before the kill counts), or
            queued again (if `queued_too`), or assigned/running on another device."""
            rows = ledger.rows(f"SELECT state, device_id FROM tasks WHERE id IN ({marks})", tuple(held))
            return all(s not in ("queued", "assigned", "running") or (s == "queued" and queued_too)
                       or (s != "queued" and not (d or "").startswith(victim_prefix)) for s, d in rows)

        t_req = poll(lambda: moved(True), 30, "the victim's tasks re-queued", POLL_S)
        t_else = poll(lambda: moved(False), 60, "the victim's tasks running elsewhere or done", POLL_S)
        view = {d["device_id"]: d["state"] for d in client.devices()}
        fault = {"victim_workers": per[0], "held_at_kill": len(held),
                 "first_offline_s": round(t_first - t_kill, 2), "detection_s": round(t_det - t_kill, 2),
                 "requeue_s": round(t_req - t_kill, 2), "running_elsewhere_s": round(t_else - t_kill, 2),
                 "victims_offline_in_devices": sum(1 for d, s in view.items()
                                                   if d.startswith(victim_prefix) and s == "offline")}
        progress(f"detection {fault['detection_s']}s (first {fault['first_offline_s']}s), re-queued "
                 f"{fault['requeue_s']}s, all running elsewhere {fault['running_elsewhere_s']}s")
        poll(lambda: ledger.one("SELECT count(*) FROM tasks WHERE state NOT IN ('done','failed','timed_out',"
                                "'cancelled','quarantined')") == 0, 120, "every task to finish", 0.2)
        fault["all_done_s"] = round(time.monotonic() - t_sub, 2)
        counts = dict(ledger.rows("SELECT state, count(*) FROM tasks GROUP BY state"))
        fault["ledger"] = {"submitted": len(ids), "states": counts,
                           "lost_attempts": ledger.one("SELECT count(*) FROM attempts WHERE state='lost'"),
                           "ok": counts.get("done", 0) == len(ids) == a.tasks}
        result["fault"] = fault
        progress(f"all {len(ids)} tasks final after {fault['all_done_s']}s: {counts}")
        ledger.conn.close()
    finally:
        client.close()
        for proc in sims.values():
            stop_process(proc)
        cluster.stop()


def verdicts(r: dict) -> dict:
    reg, idle, fault = r["registration"], r["idle"], r["fault"]
    herd_limit = max(1, int(HERD_SHARE * r["config"]["workers"]))
    idle_cpu, registered = TARGETS["idle_cpu_pct"], TARGETS["all_registered_s"]
    detection, requeue = TARGETS["detection_s"], TARGETS["requeue_s"]
    return {"idle_cpu": (f"{idle['master_cpu_pct']}% of a core", idle_cpu.bound_text,
                         idle_cpu.met(idle["master_cpu_pct"])),
            "registered": (f"{reg['all_registered_s']} s", registered.bound_text, registered.met(reg["all_registered_s"])),
            "no_herd": (f"max {reg['max_per_100ms']} per 100 ms", f"≤ {herd_limit} per 100 ms",
                        reg["max_per_100ms"] <= herd_limit),
            "no_flap": (f"{idle['offline_at_worst']} offline while idle", "0", idle["offline_at_worst"] == 0),
            "detection": (f"{fault['detection_s']} s", detection.bound_text, detection.met(fault["detection_s"])),
            "requeue": (f"{fault['requeue_s']} s", requeue.bound_text, requeue.met(fault["requeue_s"])),
            "no_task_lost": (f"{fault['ledger']['states'].get('done', 0)}/{fault['ledger']['submitted']} done",
                             "all done", fault["ledger"]["ok"])}


def report(r: dict) -> None:
    m = r["machine"]
    print(f"{r['command']}\n{m['cpus']} CPUs ({m['cpu_model']}), Python {m['python']}, pyzmq {m['pyzmq']} "
          f"(libzmq {m['libzmq']}), commit {m['zmqgrid_commit']}, {m['date']}")
    reg, idle, fault = r["registration"], r["idle"], r["fault"]
    print(f"registration: first Registers sent {reg['first_s']}-{reg['last_s']} s after spawn ({reg['registers_sent']} "
          f"Registers in all), max {reg['max_per_1s']} per 1 s; accepted by the master up to {reg['accepted_last_s']} s, "
          f"at most {reg['accepted_max_per_100ms']} in one 100 ms (its loop turns batch them)")
    print(f"idle {idle['seconds']} s: simulators {idle['simulators_cpu_pct']}% of a core, machine {idle['machine']}, "
          f"busy before {idle['machine_busy_before_pct']}%, master RSS {idle['master_rss_mb']} MB, "
          f"{idle['master_fds']} fds, {idle['heartbeat_rows_per_s']} heartbeat rows/s")
    print(f"master while idle: user/system {idle['master_user_system_pct']} %, by thread {idle['master_threads_pct']}")
    print(f"fault: {fault['victim_workers']} workers killed holding {fault['held_at_kill']} tasks; first offline "
          f"{fault['first_offline_s']} s; running elsewhere {fault['running_elsewhere_s']} s; "
          f"all {fault['ledger']['submitted']} final {fault['all_done_s']} s after submit; "
          f"lost attempts {fault['ledger']['lost_attempts']}")
    print(f"\n| {'measure':<14} | {'figure':<26} | {'target':<18} | met |\n|---|---|---|---|")
    for name, (figure, target, ok) in r["verdicts"].items():
        print(f"| {name:<14} | {figure:<26} | {target:<18} | {'yes' if ok else 'NO'} |")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=1000)
    ap.add_argument("--procs", type=int, default=4, help="simulator processes")
    ap.add_argument("--tasks", type=int, default=5000)
    ap.add_argument("--task-s", type=float, default=2.0, help="seconds each task holds its simulated worker")
    ap.add_argument("--kill-after", type=float, default=1.0, help="seconds after the submit to kill a simulator")
    ap.add_argument("--ramp", type=float, default=2.0, help="simulated workers start at random within this")
    ap.add_argument("--idle", type=float, default=15.0, help="seconds of the idle CPU measurement")
    ap.add_argument("--concurrency", type=int, default=1)
    ap.add_argument("--prefetch", type=int, default=1)
    ap.add_argument("--settle", type=float, default=30.0, help="wait up to this for a quieter machine")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--deadline", type=float, default=300.0)
    ap.add_argument("--py-spy", metavar="DIR", help="py-spy the master during the idle phase (GIL stacks)")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    if (a.procs < 2 or a.workers < a.procs or a.tasks < 1):
        ap.error("need --procs >= 2 (one is killed), --workers >= --procs and --tasks >= 1")
    return a


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    limits = raise_fd_limit()   # the children (master included) inherit it
    command = command_line(__file__, argv)
    tmp = Path(tempfile.mkdtemp(prefix="zmqgrid-fleet-"))
    result: dict = {"command": command, "machine": machine(), "fd_limit": list(limits),
                    "config": {k: getattr(a, k) for k in ("workers", "procs", "tasks", "task_s", "ramp", "idle",
                                                          "concurrency", "prefetch", "kill_after")}}
    progress(f"command: {command}; fd limit {limits}; folder {tmp}")

    def measure() -> None:
        run(a, tmp, result)
        result["verdicts"] = verdicts(result)

    code = guarded(a, tmp, measure)
    if code:
        return code
    emit(a, result, report)
    return 0 if all(ok for _, _, ok in result["verdicts"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
