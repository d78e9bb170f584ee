#!/usr/bin/env python
"""zmqgrid against Dramatiq + Redis and Celery + Redis: the same workload, on the same machine, in the same run.

    pip install -e ".[peers]"            # dramatiq[redis], celery[redis], redis (and a redis-server binary:
                                         # apt-get install -y redis-server)
    python tools/bench_peers.py          # N=5000, 200 round trips, 3 runs (medians), all three systems
    python tools/bench_peers.py --quick  # smoke run: N=500, 50 round trips, 1 run
    python tools/bench_peers.py --json   # every figure as JSON on stdout (progress stays on stderr)

The workload is tools/bench.py's batched phase and its latency phase, on every system:

- throughput: the client submits N no-op tasks (the callable returns its argument) and the clock stops when every
  result is back in the client -> tasks/s;
- latency: `--lat` sequential single round trips (submit one task, block until its result), each timed -> p50/p99.

All systems are started and warmed up (200 tasks + 20 round trips, not counted) first; then run k of every
system runs back to back, the order rotated from run to run, so that load from other programs on a shared machine
falls on all of them alike. `--runs` runs (3); the figures are medians, and zmqgrid's ratio to each peer is taken
from the medians (the ratios of the runs taken side by side are printed too).

Systems (2 worker processes each, all on 127.0.0.1, in a temporary folder removed afterwards):

- zmqgrid: tools/benchkit's Cluster and Bench (what tools/bench.py runs): a real master and two real workers with
  `--concurrency 4`, ZMQGRID_PREFETCH=12; `Client.submit(specs, notify=True, batch_size=100)` then `Client.wait`;
  every task is committed to the SQLite ledger before it is acknowledged, and each run checks the ledger.
- Dramatiq: `dramatiq peer_jobs --processes 2 --threads 8` on a RedisBroker, Results middleware with the Redis
  backend; the client calls `actor.send(i)` N times, then `message.get_result(block=True)` for each.
- Celery: `celery -A peer_jobs worker -P prefork -c 2` (one parent, two prefork children run the tasks) on the
  Redis broker and result backend; the client calls `task.delay(i)` N times, then `ResultSet(...).get()`.

The peers' tasks live in tools/peer_jobs.py. Both peers use one redis-server that this tool starts on a free port
of 127.0.0.1 with persistence off (`--save "" --appendonly no`), in the temporary folder: the peers are NOT durable
here, while zmqgrid commits every task before acknowledging it. Every process started (redis-server, workers,
master) is stopped by its PID (SIGTERM, then SIGKILL, descendants included) at the end, also on an error, Ctrl-C
or SIGTERM; the whole run is bounded by `--deadline` seconds.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

if __name__ == "__main__":   # `python tools/bench_peers.py` imports from the repository root, as `python -m tools.bench_peers` does
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from tests.helpers import REPO
from tools.benchkit.cluster import Cluster
from tools.benchkit.guard import guarded
from tools.benchkit.measure import CpuMeter, SysStat, median, pct, settle
from tools.benchkit.processes import spawn, stop_process, tail
from tools.benchkit.report import Ticker, command_line, emit, machine, progress
from tools.benchkit.targets import PEERS
from tools.benchkit.workload import WARMUP_BATCH, WARMUP_SINGLE, Bench, ledger_check

TOOLS = Path(__file__).resolve().parent   # the peers' workers import peer_jobs from here
SYSTEMS = ("zmqgrid", "dramatiq", "celery")


class Unavailable(Exception):
    """Something the tool needs is not installed: one line for the user, no traceback."""


# ---------------------------------------------------------------------------------------------- helpers

def dist_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def redis_server_version(exe: str) -> str | None:
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for word in out.split():
        if word.startswith("v="):
            return word[2:]
    return out.strip() or None


def check_installed(systems: list[str]) -> str | None:
    """The redis-server path when a peer is asked for; raises Unavailable with one line when something is missing."""
    peers = [s for s in systems if s != "zmqgrid"]
    if not peers:
        return None
    missing = [mod for mod, needed in (("redis", True), ("dramatiq", "dramatiq" in peers), ("celery", "celery" in peers))
               if needed and importlib.util.find_spec(mod) is None]
    if missing:
        raise Unavailable(f"the peers' Python packages are not installed (missing: {', '.join(missing)}); "
                          f"install the optional extra: pip install -e \".[peers]\"  (or run with --systems zmqgrid)")
    exe = shutil.which("redis-server")
    if exe is None:
        raise Unavailable("redis-server is not installed (not on PATH); install it, e.g. on Debian/Ubuntu: "
                          "apt-get install -y redis-server  (or run with --systems zmqgrid)")
    return exe


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what: str, ready, timeout_s: float, procs: list[subprocess.Popen], log: Path) -> None:
    """Poll ready() until true; fail early if one of procs exited, with the tail of its log."""
    deadline = time.monotonic() + timeout_s
    while True:
        for proc in procs:
            if proc.poll() is not None:
                raise RuntimeError(f"{what} exited with {proc.returncode}: {tail(log)}")
        try:
            if ready():
                return
        except Exception:  # not up yet
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not ready within {timeout_s:g}s; see {log}: {tail(log, 600)}")
        time.sleep(0.1)


def peer_env(redis_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZMQGRID_")}
    env["PYTHONPATH"] = os.pathsep.join([str(TOOLS), str(REPO)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env["ZG_PEERS_REDIS_URL"] = redis_url
    env["PYTHONUNBUFFERED"] = "1"
    return env


# ---------------------------------------------------------------------------------------------- redis-server

class RedisServer:
    """redis-server on 127.0.0.1:<free port>, persistence off, its files in its own folder; stopped by PID."""

    def __init__(self, exe: str, folder: Path) -> None:
        self.exe, self.folder = exe, folder
        folder.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.command = ""

    def start(self) -> None:
        import redis
        last = None
        for _ in range(3):   # a free port can be taken between our probe and redis' bind: try another
            self.port = free_port()
            argv = [self.exe, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no",
                    "--dir", str(self.folder), "--protected-mode", "yes", "--daemonize", "no",
                    "--logfile", "", "--databases", "4"]
            self.command = shlex.join(argv)
            log = self.folder / f"redis-{self.port}.log"
            self.proc = spawn(argv, cwd=self.folder, env=dict(os.environ), log=log)
            client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1)
            try:
                wait_for("redis-server", client.ping, 15, [self.proc], log)
                client.close()
                return
            except RuntimeError as e:
                last = e
                self.stop()
        raise RuntimeError(f"could not start redis-server: {last}")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None


# ---------------------------------------------------------------------------------------------- systems

class System:
    """One system under test: start(), warm-up, batched(n) -> seconds, latency(n) -> figures, stop()."""

    name = ""
    setup = ""

    def __init__(self, a: argparse.Namespace, tmp: Path) -> None:
        self.a, self.tmp = a, tmp
        self.commands: dict[str, str] = {}
        self.next_arg = 0

    def cpu_groups(self) -> dict[str, tuple[list[int], bool]]:
        raise NotImplementedError

    def alive(self) -> None:
        pass

    def warmup(self) -> None:
        self.batched(WARMUP_BATCH)
        self.latency(WARMUP_SINGLE)

    def check_run(self, batched: dict, latency: dict) -> str:
        return ""


class Peer(System):
    """A peer whose workers are one child process (with its own children) and whose client is this process."""

    def __init__(self, a: argparse.Namespace, tmp: Path, redis_server: RedisServer) -> None:
        super().__init__(a, tmp)
        self.redis = redis_server
        self.proc: subprocess.Popen | None = None
        self.jobs = None

    def _import_jobs(self):
        os.environ["ZG_PEERS_REDIS_URL"] = self.redis.url      # read by peer_jobs at import
        self.jobs = importlib.import_module("tools.peer_jobs")
        if self.jobs.REDIS_URL != self.redis.url:
            raise RuntimeError(f"peer_jobs was imported with {self.jobs.REDIS_URL}, not {self.redis.url}")
        return self.jobs

    def _spawn(self, argv: list[str]) -> None:
        self.log = self.tmp / f"{self.name}.log"
        env = peer_env(self.redis.url)
        self.commands["workers"] = f"ZG_PEERS_REDIS_URL={self.redis.url} PYTHONPATH=tools " + shlex.join(
            ["python" if argv[0] == sys.executable else argv[0], *argv[1:]])
        self.proc = spawn(argv, cwd=TOOLS, env=env, log=self.log)

    def cpu_groups(self) -> dict[str, tuple[list[int], bool]]:
        return {"client": ([os.getpid()], False), "redis": ([self.redis.proc.pid], False),
                "workers": ([self.proc.pid], True)}

    def alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} workers exited with {self.proc.returncode}: {tail(self.log)}")

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None

    def latency(self, n: int) -> dict:
        lat = []
        for _ in range(n):
            i = self.next_arg
            self.next_arg += 1
            t0 = time.perf_counter()
            value = self.round_trip(i)
            lat.append((time.perf_counter() - t0) * 1000.0)
            if value != i:
                raise RuntimeError(f"{self.name}: round trip {i} returned {value!r}")
        return {"p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99), "mean_ms": statistics.fmean(lat),
                "max_ms": max(lat)}

    def round_trip(self, i: int) -> Any:
        raise NotImplementedError


class Dramatiq(Peer):
    name = "dramatiq"

    def start(self) -> None:
        a = self.a
        self.setup = (f"dramatiq peer_jobs --processes {a.dramatiq_processes} --threads {a.dramatiq_threads}; "
                      "RedisBroker, Results middleware (RedisBackend); send() per task, get_result(block=True)")
        jobs = self._import_jobs()
        self.actor, self.results = jobs.dramatiq_noop, jobs.dramatiq_results
        self.results.client.flushdb()
        jobs.dramatiq_broker.client.flushdb()
        self._spawn([sys.executable, "-m", "dramatiq", "peer_jobs", "--processes", str(a.dramatiq_processes),
                     "--threads", str(a.dramatiq_threads), "--queues", "zg_bench"])

        def ready() -> bool:
            return self.log.read_text(errors="replace").count("Worker process is ready for action") \
                >= a.dramatiq_processes

        wait_for("dramatiq workers", ready, 90, [self.proc], self.log)

    def batched(self, n: int) -> dict:
        timeout_ms = int(self.a.phase_timeout * 1000)
        args = range(self.next_arg, self.next_arg + n)
        self.next_arg += n
        t0 = time.perf_counter()
        messages = [self.actor.send(i) for i in args]
        t_sub = time.perf_counter() - t0
        values = [m.get_result(block=True, timeout=timeout_ms) for m in messages]
        dt = time.perf_counter() - t0
        if values != list(args):
            raise RuntimeError(f"dramatiq: {sum(v != i for v, i in zip(values, args))} of {n} results are wrong")
        return {"seconds": dt, "submit_seconds": t_sub}

    def round_trip(self, i: int) -> Any:
        return self.actor.send(i).get_result(block=True, timeout=int(self.a.phase_timeout * 1000))


class Celery(Peer):
    name = "celery"

    def start(self) -> None:
        a = self.a
        self.setup = (f"celery -A peer_jobs worker -P prefork -c {a.celery_concurrency} (1 parent + "
                      f"{a.celery_concurrency} pool processes); Redis broker and result backend; delay() per task, "
                      "ResultSet.get()")
        jobs = self._import_jobs()
        self.app, self.task = jobs.app, jobs.celery_noop
        import redis
        for db in (2, 3):
            redis.Redis.from_url(f"{self.redis.url}/{db}").flushdb()
        self._spawn([sys.executable, "-m", "celery", "-A", "peer_jobs", "worker", "-P", "prefork",
                     "-c", str(a.celery_concurrency), "-Q", "zg_bench", "-n", f"zgbench-{os.getpid()}@%h",
                     "--loglevel", "WARNING", "--without-gossip", "--without-mingle", "--without-heartbeat"])

        def ready() -> bool:
            return bool(self.app.control.ping(timeout=0.5))

        wait_for("celery worker", ready, 90, [self.proc], self.log)

    def batched(self, n: int) -> dict:
        from celery.result import ResultSet
        args = list(range(self.next_arg, self.next_arg + n))
        self.next_arg += n
        t0 = time.perf_counter()
        results = [self.task.delay(i) for i in args]
        t_sub = time.perf_counter() - t0
        values = ResultSet(results).get(timeout=self.a.phase_timeout)
        dt = time.perf_counter() - t0
        if values != args:
            raise RuntimeError(f"celery: {sum(v != i for v, i in zip(values, args))} of {n} results are wrong")
        for r in results:
            r.forget()
        return {"seconds": dt, "submit_seconds": t_sub}

    def round_trip(self, i: int) -> Any:
        r = self.task.delay(i)
        value = r.get(timeout=self.a.phase_timeout)
        r.forget()
        return value


class Zmqgrid(System):
    """benchkit's Cluster and Bench, as tools/bench.py runs them: the batched and latency phases, and the ledger check."""

    name = "zmqgrid"

    def start(self) -> None:
        a = self.a
        self.setup = (f"master + 2 workers --concurrency {a.concurrency}, ZMQGRID_PREFETCH={a.prefetch}; "
                      f"Client.map(notify=True, batch_size={a.batch}) + Client.wait; durable (SQLite)")
        folder = self.tmp / "zmqgrid"
        folder.mkdir()
        self.cluster = Cluster(folder, concurrency=a.concurrency, prefetch=a.prefetch)
        self.cluster.start()
        self.commands.update(self.cluster.commands)
        # tools/bench.py's defaults for what it does not set: window 8, single window 1,000
        phases = argparse.Namespace(batch=a.batch, window=8, single_window=1000, phase_timeout=a.phase_timeout)
        self.bench = Bench(self.cluster, phases)

    def cpu_groups(self) -> dict[str, tuple[list[int], bool]]:
        return self.bench.cpu_groups

    def alive(self) -> None:
        self.cluster.alive()

    def warmup(self) -> None:
        self.bench.warmup()      # batched 200 + 20 round trips, and the ledger check of those

    def batched(self, n: int) -> dict:
        r = self.bench.batched(n)
        self._ids = r["ids"]
        return r

    def latency(self, n: int) -> dict:
        r = self.bench.latency(n)
        self._ids = self._ids + r["ids"]
        return r

    def check_run(self, batched: dict, latency: dict) -> str:
        counts = ledger_check(self.cluster.db, batched["ids"] + latency["ids"])
        return f"ledger check OK ({counts.get('done', 0)} tasks, all done)"

    def stop(self) -> None:
        bench, self.bench = getattr(self, "bench", None), None
        if bench is not None:
            bench.close()
        cluster, self.cluster = getattr(self, "cluster", None), None
        if cluster is not None:
            cluster.stop()


# ---------------------------------------------------------------------------------------------- measuring

def start(system: System) -> None:
    progress(f"{system.name}: starting ...")
    system.start()
    progress(f"{system.name}: up ({system.setup})")
    progress(f"{system.name}: warm-up, {WARMUP_BATCH} tasks + {WARMUP_SINGLE} round trips (not counted) ...")
    with Ticker(f"{system.name} warm-up"):
        system.warmup()


def run_once(system: System, a: argparse.Namespace, k: int) -> dict:
    """One run: N tasks submitted and every result back (tasks/s), then `--lat` sequential round trips."""
    system.alive()
    busy = settle(a.settle, a.busy_threshold, f"{system.name} run {k}")
    progress(f"{system.name} run {k}/{a.runs}: machine {busy}% busy before it; {a.n} tasks ...")
    meter, sysstat = CpuMeter(system.cpu_groups()).start(), SysStat().start()
    with Ticker(f"{system.name} run {k} batched"):
        b = system.batched(a.n)
    cpu, machine_cpu = meter.stop(), sysstat.stop()
    tput = a.n / b["seconds"]
    progress(f"{system.name} run {k}/{a.runs}: {tput:8.0f} tasks/s ({b['seconds']:.2f}s; all submitted after "
             f"{b['submit_seconds']:.2f}s) | CPU % of one core: " + ", ".join(f"{g} {v:.0f}" for g, v in cpu.items()))
    progress(f"{system.name} run {k}/{a.runs}: {a.lat} sequential round trips ...")
    with Ticker(f"{system.name} run {k} latency"):
        lt = system.latency(a.lat)
    progress(f"{system.name} run {k}/{a.runs}: latency p50 {lt['p50_ms']:.2f} ms  p99 {lt['p99_ms']:.2f} ms "
             f"(mean {lt['mean_ms']:.2f}, max {lt['max_ms']:.2f})")
    note = system.check_run(b, lt)
    if note:
        progress(f"{system.name} run {k}/{a.runs}: {note}")
    return {"tasks_per_s": tput, "seconds": b["seconds"], "submit_seconds": b["submit_seconds"],
            "p50_ms": lt["p50_ms"], "p99_ms": lt["p99_ms"], "lat_mean_ms": lt["mean_ms"], "lat_max_ms": lt["max_ms"],
            "cpu_batched": cpu, "machine_cpu_batched": machine_cpu, "busy_before_pct": busy}


def summarize(system: System, runs: list[dict]) -> dict:
    out: dict[str, Any] = {"setup": system.setup, "commands": system.commands}
    for key in ("tasks_per_s", "p50_ms", "p99_ms"):
        out[key] = median([r[key] for r in runs])
        out[key + "_runs"] = [round(r[key], 3) for r in runs]
    mid = sorted(range(len(runs)), key=lambda i: runs[i]["tasks_per_s"])[len(runs) // 2]
    out["cpu_batched_median_run"] = runs[mid]["cpu_batched"]
    out["runs"] = runs
    return out


def compare(results: dict) -> dict:
    z = results.get("zmqgrid")
    out: dict[str, Any] = {}
    for target in PEERS:
        p = results.get(target.key)
        if not z or not p:
            continue
        ratio = z["tasks_per_s"] / p["tasks_per_s"]
        per_run = [round(zr["tasks_per_s"] / pr["tasks_per_s"], 2) for zr, pr in zip(z["runs"], p["runs"])]
        out[target.key] = {"throughput_ratio": round(ratio, 2), "throughput_ratio_runs": per_run,
                           "target": target.bound, "target_met": target.met(ratio),
                           "p50_ratio": round(p["p50_ms"] / z["p50_ms"], 2),
                           "p99_ratio": round(p["p99_ms"] / z["p99_ms"], 2)}
    return out


# ---------------------------------------------------------------------------------------------- report

def fmt(v: float | None, nd: int = 0) -> str:
    return "n/a" if v is None else f"{v:,.{nd}f}"


def print_report(result: dict) -> None:
    m, v, a = result["machine"], result["versions"], result["config"]
    print()
    print("zmqgrid vs Dramatiq and Celery: no-op tasks, 2 worker processes, loopback, same machine, same run")
    print(f"  date:     {m['date']}")
    print(f"  command:  {result['command']}")
    print(f"  machine:  {m['cpus']} CPUs ({m['cpu_model']}), {m['platform']}")
    print("  versions: " + ", ".join(f"{k} {val}" for k, val in v.items() if val is not None))
    print(f"  workload: N={a['n']} tasks submitted by one client, timed until every result is back in the client; "
          f"{a['lat']} sequential round trips (p50/p99); median of {a['runs']} run(s) per system, after a warm-up")
    if result.get("redis_command"):
        print(f"  redis:    {result['redis_command']}  (persistence off: the peers are not durable)")
    for name, s in result["systems"].items():
        print(f"  {name}: {s['setup']}")
    print()
    print("per run:")
    for name, s in result["systems"].items():
        for i, r in enumerate(s["runs"], 1):
            print(f"  {name:9} run {i}: busy before {fmt(r['busy_before_pct'])}%  {r['tasks_per_s']:8.0f} tasks/s  "
                  f"p50 {r['p50_ms']:6.2f} ms  p99 {r['p99_ms']:6.2f} ms  CPU%: "
                  + ", ".join(f"{g} {c:.0f}" for g, c in r["cpu_batched"].items()))
    print()
    cmp = result["comparison"]
    print(f"{'system (median)':12} {'tasks/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'zmqgrid ÷ it (tasks/s)':>24} "
          f"{'its p50 ÷ zmqgrid':>18}")
    for name, s in result["systems"].items():
        c = cmp.get(name)
        ratio = f"{c['throughput_ratio']:.2f}x" if c else "-"
        p50 = f"{c['p50_ratio']:.2f}x" if c else "-"
        print(f"{name:12} {fmt(s['tasks_per_s']):>10} {fmt(s['p50_ms'], 2):>8} {fmt(s['p99_ms'], 2):>8} "
              f"{ratio:>24} {p50:>18}")
    print()
    for peer, c in cmp.items():
        verdict = "MET" if c["target_met"] else "NOT MET"
        print(f"target: zmqgrid >= {c['target']:g}x {peer}'s tasks/s -> {c['throughput_ratio']:.2f}x: {verdict}  "
              f"(run by run: {', '.join(f'{r:.2f}x' for r in c['throughput_ratio_runs'])})")
    if cmp:
        print("note: the peers ran on a redis-server with persistence off (not durable); zmqgrid committed every task "
              "to its SQLite ledger before acknowledging it")
    if not cmp:
        print("no ratios (zmqgrid and a peer were not both measured)")
    busy = [r["busy_before_pct"] for s in result["systems"].values() for r in s["runs"]]
    if any(b is not None and b > a["busy_threshold"] for b in busy):
        print(f"warning: the machine was busier than {a['busy_threshold']:.0f}% before some runs (other programs): "
              "those figures are skewed")


# ---------------------------------------------------------------------------------------------- main

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=5000, help="tasks per throughput run [5000]")
    ap.add_argument("--lat", type=int, default=200, help="sequential round trips per run [200]")
    ap.add_argument("--runs", type=int, default=3, help="runs per system; figures are medians [3]")
    ap.add_argument("--systems", default=",".join(SYSTEMS), help=f"comma-separated subset of {','.join(SYSTEMS)} "
                    "[all, in that order]")
    ap.add_argument("--concurrency", type=int, default=4, help="zmqgrid worker --concurrency [4]")
    ap.add_argument("--prefetch", type=int, default=12, help="zmqgrid ZMQGRID_PREFETCH [12]")
    ap.add_argument("--batch", type=int, default=100, help="zmqgrid tasks per Submit [100]")
    ap.add_argument("--dramatiq-processes", type=int, default=2, help="dramatiq --processes [2]")
    ap.add_argument("--dramatiq-threads", type=int, default=8, help="dramatiq --threads [8]")
    ap.add_argument("--celery-concurrency", type=int, default=2, help="celery prefork -c [2]")
    ap.add_argument("--quick", action="store_true", help="smoke run: N=500, 50 round trips, 1 run")
    ap.add_argument("--json", action="store_true", help="print all figures as JSON on stdout")
    ap.add_argument("--settle", type=float, default=30, help="before each run, wait up to this many seconds for "
                    "the machine to be quiet [30]")
    ap.add_argument("--busy-threshold", type=float, default=20, help="%% busy that counts as quiet [20]")
    ap.add_argument("--deadline", type=float, default=1800, help="seconds for the whole run [1800]")
    ap.add_argument("--phase-timeout", type=float, default=300, help="seconds for one phase's results [300]")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, ledger)")
    a = ap.parse_args(argv)
    if a.quick:
        a.n, a.lat, a.runs = 500, 50, 1
    a.systems = [s.strip() for s in a.systems.split(",") if s.strip()]
    unknown = set(a.systems) - set(SYSTEMS)
    if unknown or not a.systems:
        ap.error(f"--systems: choose among {', '.join(SYSTEMS)} (got {', '.join(sorted(unknown)) or 'nothing'})")
    if min(a.n, a.lat, a.runs, a.batch, a.concurrency, a.dramatiq_processes, a.dramatiq_threads,
           a.celery_concurrency) < 1 or a.prefetch < 0:
        ap.error("counts must be >= 1 (prefetch >= 0)")
    return a


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    command = command_line(__file__, argv)
    try:
        redis_exe = check_installed(a.systems)
    except Unavailable as e:
        print(f"error: {e}", file=sys.stderr)
        return 3

    tmp = Path(tempfile.mkdtemp(prefix="zmqgrid-bench-peers-"))
    m = machine()
    versions = {"python": m["python"], "redis-server": redis_server_version(redis_exe) if redis_exe else None,
                "dramatiq": dist_version("dramatiq"), "celery": dist_version("celery"), "kombu": dist_version("kombu"),
                "redis-py": dist_version("redis"), "pyzmq": m["pyzmq"], "libzmq": m["libzmq"],
                "zmqgrid": m["zmqgrid_commit"]}
    result: dict[str, Any] = {"command": command, "machine": m, "versions": versions,
                              "config": {k: getattr(a, k) for k in ("n", "lat", "runs", "systems", "concurrency",
                                                                    "prefetch", "batch", "dramatiq_processes",
                                                                    "dramatiq_threads", "celery_concurrency",
                                                                    "busy_threshold")},
                              "systems": {}}
    progress(f"machine: {m['cpus']} CPUs ({m['cpu_model']}), {m['platform']}")
    progress("versions: " + ", ".join(f"{k} {val}" for k, val in versions.items() if val is not None))
    progress(f"command: {command}")
    if a.runs < 3 and not a.quick:
        progress(f"note: --runs {a.runs}: medians of fewer than 3 runs are noisy")
    redis_server: RedisServer | None = None
    systems: dict[str, System] = {}

    def measure() -> None:
        nonlocal redis_server
        if redis_exe:
            redis_server = RedisServer(redis_exe, tmp / "redis")
            redis_server.start()
            result["redis_command"] = redis_server.command
            progress(f"redis-server {versions['redis-server']} on {redis_server.url} (pid {redis_server.proc.pid}, "
                     "persistence off)")
        for name in a.systems:      # all up at once, so that the runs can alternate between them
            kind = {"zmqgrid": Zmqgrid, "dramatiq": Dramatiq, "celery": Celery}[name]
            systems[name] = kind(a, tmp) if name == "zmqgrid" else kind(a, tmp, redis_server)
            start(systems[name])
        runs: dict[str, list[dict]] = {name: [] for name in a.systems}
        for k in range(1, a.runs + 1):
            # run k of every system back to back, the order rotated each run: load from other programs on the
            # machine then falls on all of them alike, and no system is always first
            shift = (k - 1) % len(a.systems)
            for name in a.systems[shift:] + a.systems[:shift]:
                runs[name].append(run_once(systems[name], a, k))
        for name, system in systems.items():
            progress(f"{name}: stopping ...")
            system.stop()
            result["systems"][name] = summarize(system, runs[name])
        result["comparison"] = compare(result["systems"])

    def cleanup() -> None:
        for system in systems.values():
            system.stop()
        if redis_server is not None:
            redis_server.stop()

    code = guarded(a, tmp, measure, cleanup, kept=f"logs{', ledger' if 'zmqgrid' in a.systems else ''}")
    if code:
        return code
    emit(a, result, print_report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
