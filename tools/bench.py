#!/usr/bin/env python
"""End-to-end benchmark of the real zmqgrid on loopback, compared in the same run with the reference loop.

    python tools/bench.py                 # N=5000, 3 runs, then ../shared/bench/reference_loop.py
    python tools/bench.py --quick         # smoke run: N=500, N_single=200, 50 round trips, 1 run
    python tools/bench.py --json          # every figure as JSON on stdout (progress stays on stderr)

What it does, all on 127.0.0.1, in a temporary folder that it removes afterwards (kept on error or --keep):

1. Starts a real master (`python -m zmqgrid distribute --mode master ...`) and two real workers
   (`--mode worker --concurrency C`, ZMQGRID_PREFETCH=P, so each advertises credit C+P) as child processes
   with PYTHONPATH set to this repository and no inherited ZMQGRID_* variable, and waits until both
   devices are online (Client.devices()).
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
import json
import math
import os
import platform
import shlex
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterator

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import psutil  # noqa: E402
import zmq  # noqa: E402

from zmqgrid.client import Client, build_spec  # noqa: E402
from zmqgrid.model import FINAL_STATES  # noqa: E402

FUNCTION = "zmqgrid.samples:noop"
REFERENCE = REPO.parent / "shared" / "bench" / "reference_loop.py"
REF_VARIANTS = ("sqlite:100:16", "sqlite:1:16")
REF_BIG_VARIANT = "sqlite:100:16"   # run again on --submit-n tasks, for target 4
REF_BIG_LAT = 20                   # its latency round trips (not used; the reference always does some)
STEAL_WARN_PCT = 5.0   # machine CPU % taken by the hypervisor during a phase, above which ratios do not count
# Issue 8's targets against the reference in the same run: (ratio key, at least or at most, bound, what).
TARGETS = (("batched_vs_sqlite:100:16", ">=", 1.0, "1: batched throughput"),
           ("single_vs_sqlite:1:16", ">=", 1.0, "1: single-task throughput"),
           ("p50_vs_reference", "<=", 1.5, "3: latency p50"),
           ("p99_vs_reference", "<=", 1.5, "3: latency p99"),
           ("big_submit_vs_reference_big_submit", ">=", 0.8, "4: big submit rate"))
WARMUP_BATCH, WARMUP_SINGLE = 200, 20


class DeadlineExceeded(Exception):
    pass


# ---------------------------------------------------------------------------------------------- output

_T0 = time.monotonic()


def progress(text: str) -> None:
    """Progress goes to stderr, so `--json` keeps stdout clean."""
    print(f"[{time.monotonic() - _T0:7.1f}s] {text}", file=sys.stderr, flush=True)


class Ticker:
    """Prints 'still running' every few seconds while a long phase blocks in the client."""

    def __init__(self, what: str, every_s: float = 5.0, status: Callable[[], str] | None = None) -> None:
        self.what, self.every_s, self.status = what, every_s, status
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="bench-ticker")

    def _run(self) -> None:
        t0 = time.monotonic()
        while not self._stop.wait(self.every_s):
            extra = ""
            if self.status is not None:
                try:
                    extra = " " + self.status()
                except Exception:  # a status line is best effort
                    extra = ""
            progress(f"  ... {self.what}: {time.monotonic() - t0:.0f}s{extra}")

    def __enter__(self) -> "Ticker":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(1)


def pct(samples: list[float], p: float) -> float:
    """Nearest-rank percentile (the reference loop's definition)."""
    s = sorted(samples)
    if not s:
        return float("nan")
    return s[max(0, math.ceil(p / 100.0 * len(s)) - 1)]


def median(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


# ---------------------------------------------------------------------------------------------- processes

STARTED: list[subprocess.Popen] = []   # every child we started, stopped by PID at the end


def descendants(pid: int) -> list[int]:
    try:
        return [c.pid for c in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def stop_process(proc: subprocess.Popen, grace_s: float = 10.0) -> None:
    """SIGTERM one child by PID, wait, SIGKILL it if needed, then SIGKILL whatever it left behind."""
    kids = descendants(proc.pid)
    if proc.poll() is None:
        try:
            proc.terminate()
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
        except ProcessLookupError:
            pass
    for kid in kids:
        try:
            p = psutil.Process(kid)
            try:
                p.wait(2)
            except psutil.TimeoutExpired:
                p.kill()
        except psutil.NoSuchProcess:
            pass


def stop_all() -> None:
    while STARTED:
        stop_process(STARTED.pop())


def guarded(a: argparse.Namespace, tmp: Path, body: Callable[[], None], cleanup: Callable[[], None] = lambda: None,
            kept: str = "logs and ledger") -> int:
    """The frame every benchmark tool runs in: `--deadline` ends it (exit 2), so do Ctrl-C and SIGTERM (130); any
    other error is reported in one line (1). Then `cleanup()` and everything started is stopped by PID, and `tmp`
    is kept on failure or `--keep`, else removed. Returns the exit code."""
    def on_alarm(*_: object) -> None:
        raise DeadlineExceeded(f"the benchmark did not finish within --deadline {a.deadline:g}s")

    def on_term(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGALRM, on_alarm)
    signal.signal(signal.SIGTERM, on_term)
    signal.alarm(max(1, int(a.deadline)))
    code = 0
    try:
        body()
    except DeadlineExceeded as e:
        progress(f"error: {e}")
        code = 2
    except KeyboardInterrupt:
        progress("interrupted")
        code = 130
    except Exception as e:  # report, clean up, fail
        progress(f"error: {type(e).__name__}: {e}")
        code = 1
    finally:
        signal.alarm(0)
        cleanup()
        stop_all()
        if a.keep or code:
            progress(f"kept {tmp} ({kept})")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return code


def emit(a: argparse.Namespace, result: dict, report: Callable[[dict], None]) -> None:
    """The figures: JSON on stdout with --json, else the tool's report for a person."""
    if a.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        report(result)


def spawn(argv: list[str], *, cwd: Path, env: dict, log: Path) -> subprocess.Popen:
    with open(log, "ab") as out:
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    STARTED.append(proc)
    return proc


def free_port_block(count: int = 3) -> int:
    """A port p with p..p+count-1 free on 127.0.0.1 (the master binds port, port+1 and port+2)."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base + count > 65535:
            continue
        try:
            for p in range(base, base + count):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
    raise RuntimeError("no block of 3 free ports on 127.0.0.1")


def machine_busy(seconds: float = 1.0) -> float | None:
    """% of all cores busy over `seconds` (from /proc/stat), or None where there is no /proc."""
    a = SysStat._read()
    time.sleep(seconds)
    b = SysStat._read()
    if a is None or b is None:
        return None
    total = sum(b.values()) - sum(a.values())
    return round(100.0 * (1 - (b["idle"] - a["idle"]) / total), 1) if total else 0.0


def settle(max_wait_s: float, threshold: float, what: str) -> float | None:
    """Wait (at most max_wait_s) until the machine is at most `threshold`% busy; return the last busy %.
    Other programs on the machine (a test suite, a build) skew every figure, so the report shows this."""
    t_end = time.monotonic() + max_wait_s
    warned = False
    while True:
        busy = machine_busy()
        if busy is None or busy <= threshold or time.monotonic() >= t_end:
            if busy is not None and busy > threshold:
                progress(f"  warning: machine still {busy:.0f}% busy before {what}: figures are skewed by other load")
            return busy
        if not warned:
            progress(f"  machine {busy:.0f}% busy before {what} (other processes); waiting up to "
                     f"{max_wait_s:.0f}s for it to drop to {threshold:.0f}% ...")
            warned = True


def cpu_seconds(pids: list[int], tree: bool) -> float:
    total = 0.0
    for pid in pids:
        try:
            procs = [psutil.Process(pid)]
            if tree:
                procs += procs[0].children(recursive=True)
        except psutil.NoSuchProcess:
            continue
        for p in procs:
            try:
                t = p.cpu_times()
                # children_*: children already reaped (a worker's retired python-pool processes)
                total += t.user + t.system + (t.children_user + t.children_system if tree else 0.0)
            except psutil.NoSuchProcess:
                pass
    return total


class SysStat:
    """Machine-wide CPU between start() and stop() from /proc/stat, in % of all cores."""

    @staticmethod
    def _read() -> dict[str, int] | None:
        try:
            with open("/proc/stat") as f:
                v = list(map(int, f.readline().split()[1:9]))
        except (OSError, ValueError):
            return None
        user, nice, system, idle, iowait, irq, softirq, steal = v
        return {"user": user + nice, "system": system + irq + softirq, "idle": idle + iowait, "steal": steal}

    def start(self) -> "SysStat":
        self.s0 = self._read()
        return self

    def stop(self) -> dict[str, float]:
        s1 = self._read()
        if self.s0 is None or s1 is None:
            return {}
        d = {k: s1[k] - self.s0[k] for k in s1}
        total = sum(d.values()) or 1
        return {k: round(100.0 * v / total, 1) for k, v in d.items()}


class CpuMeter:
    """CPU used by groups of processes between start() and stop(), in % of ONE core."""

    def __init__(self, groups: dict[str, tuple[list[int], bool]]) -> None:
        self.groups = groups

    def _snap(self) -> dict[str, float]:
        return {name: cpu_seconds(pids, tree) for name, (pids, tree) in self.groups.items()}

    def start(self) -> "CpuMeter":
        self.t0, self.c0 = time.perf_counter(), self._snap()
        return self

    def stop(self) -> dict[str, float]:
        wall = time.perf_counter() - self.t0
        c1 = self._snap()
        return {name: round(100.0 * (c1[name] - self.c0[name]) / wall, 1) for name in self.groups}


class PeakSize:
    """The largest size a file reached, sampled every 0.1 s in a thread (the ledger's WAL under load)."""

    def __init__(self, path: Path) -> None:
        self.path, self.peak = path, 0
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="peak-size")

    def _run(self) -> None:
        while not self._halt.wait(0.1):
            try:
                self.peak = max(self.peak, self.path.stat().st_size)
            except OSError:
                pass

    def start(self) -> "PeakSize":
        self._thread.start()
        return self

    def stop(self) -> int:
        self._halt.set()
        self._thread.join()
        return self.peak


class Cluster:
    """A real master and two real workers, as child processes on 127.0.0.1."""

    def __init__(self, tmp: Path, *, concurrency: int, prefetch: int, workers: int = 2,
                 profile_master: Path | None = None) -> None:
        self.tmp = tmp
        self.port = free_port_block()
        self.url = f"tcp://127.0.0.1:{self.port}"
        self.db = tmp / "bench.db"
        self.concurrency, self.prefetch, self.n_workers = concurrency, prefetch, workers
        self.profile_master = profile_master
        env = {k: v for k, v in os.environ.items() if not k.startswith("ZMQGRID_")}  # nothing leaks in
        env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env["ZMQGRID_PREFETCH"] = str(prefetch)
        self.env = env
        self.master: subprocess.Popen | None = None
        self.workers: dict[str, subprocess.Popen] = {}
        self.commands: dict[str, str] = {}

    def start(self, timeout_s: float = 60.0) -> None:
        master_args = ["distribute", "--mode", "master", "--port", str(self.port), "--db", str(self.db),
                       "--log-file", str(self.tmp / "master.log"), "--log-level", "WARNING"]
        argv = [sys.executable, "-m", "zmqgrid", *master_args]
        if self.profile_master is not None:
            argv = [sys.executable, "-m", "cProfile", "-o", str(self.profile_master), "-m", "zmqgrid", *master_args]
        self.commands["master"] = shlex.join(argv)
        self.master = spawn(argv, cwd=self.tmp, env=self.env, log=self.tmp / "master.out")
        deadline = time.monotonic() + timeout_s
        while not self._answers():
            if time.monotonic() > deadline:
                raise RuntimeError(f"the master did not answer within {timeout_s:g}s; see {self.tmp / 'master.out'}")
            time.sleep(0.1)
        for j in range(1, self.n_workers + 1):
            device = f"bench-{j}"
            argv = [sys.executable, "-m", "zmqgrid", "distribute", "--mode", "worker", "--master", self.url,
                    "--device-id", device, "--concurrency", str(self.concurrency),
                    "--log-file", str(self.tmp / f"{device}.log"), "--log-level", "WARNING"]
            self.commands[device] = f"ZMQGRID_PREFETCH={self.prefetch} " + shlex.join(argv)
            self.workers[device] = spawn(argv, cwd=self.tmp, env=self.env, log=self.tmp / f"{device}.out")
        with Client(self.url, timeout_s=5) as c:
            while True:
                online = {d["device_id"] for d in c.devices() if d["state"] == "online"}
                if set(self.workers) <= online:
                    break
                for device, proc in self.workers.items():
                    if proc.poll() is not None:
                        raise RuntimeError(f"worker {device} exited with {proc.returncode}: "
                                           f"{_tail(self.tmp / f'{device}.out')}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"workers not online within {timeout_s:g}s (online: {sorted(online)})")
                time.sleep(0.1)

    def _answers(self) -> bool:
        if self.master is not None and self.master.poll() is not None:
            raise RuntimeError(f"the master exited with {self.master.returncode}: {_tail(self.tmp / 'master.out')}")
        with Client(self.url, timeout_s=0.5) as c:
            try:
                c.status()
                return True
            except Exception:
                return False

    def pids(self) -> dict[str, int]:
        out = {"master": self.master.pid} if self.master else {}
        out.update({d: p.pid for d, p in self.workers.items()})
        return out

    def alive(self) -> None:
        for name, proc in [("master", self.master), *self.workers.items()]:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode} during the benchmark")

    def stop(self) -> None:
        for proc in [*self.workers.values(), self.master]:
            if proc is not None:
                stop_process(proc)
                if proc in STARTED:
                    STARTED.remove(proc)


def _tail(path: Path, n: int = 1500) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return "(no output)"


class Spies:
    """py-spy record (sampling, --nonblocking, only stacks holding the GIL: CPU spent in Python) of the master, the workers (with their pool children) and this
    client, during the batched phases only. Raw stacks go to DIR/<role>-run<k>.txt; summary() ranks functions."""

    def __init__(self, outdir: Path, targets: dict[str, tuple[int, bool]], rate: int = 250) -> None:
        self.outdir, self.targets, self.rate = outdir, targets, rate
        self.exe = shutil.which("py-spy")
        if self.exe is None:
            raise RuntimeError("--py-spy needs py-spy on PATH (pip install py-spy)")
        outdir.mkdir(parents=True, exist_ok=True)
        self.procs: list[subprocess.Popen] = []

    def start(self, run: int) -> None:
        for role, (pid, subprocesses) in self.targets.items():
            argv = [self.exe, "record", "--pid", str(pid), "--rate", str(self.rate), "--format", "raw",
                    "--nonblocking", "--gil", "--nolineno", "--output", str(self.outdir / f"{role}-run{run}.txt")]
            if subprocesses:
                argv.append("--subprocesses")
            with open(self.outdir / f"{role}-run{run}.log", "wb") as log:
                proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        start_new_session=True)
            STARTED.append(proc)
            self.procs.append(proc)
        time.sleep(1.0)   # let py-spy attach before the phase starts

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)   # py-spy writes its file on SIGINT
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                stop_process(proc)
            if proc in STARTED:
                STARTED.remove(proc)
        self.procs = []

    def summary(self, top: int = 15) -> dict[str, dict]:
        """Per role: total samples, and the top functions by own ('self') and by inclusive samples."""
        out: dict[str, dict] = {}
        for role in self.targets:
            own: dict[str, int] = {}
            incl: dict[str, int] = {}
            total = 0
            for path in sorted(self.outdir.glob(f"{role}-run*.txt")):
                for line in path.read_text(errors="replace").splitlines():
                    stack, _, count = line.rpartition(" ")
                    if not stack or not count.isdigit():
                        continue
                    n = int(count)
                    frames = [f for f in stack.split(";") if f and not f.startswith("process ")
                              and not f.startswith("thread ")]
                    if not frames:
                        continue
                    total += n
                    own[frames[-1]] = own.get(frames[-1], 0) + n
                    for f in set(frames):
                        incl[f] = incl.get(f, 0) + n
            rank = lambda d: [(f, round(100.0 * c / total, 1)) for f, c in  # noqa: E731
                              sorted(d.items(), key=lambda kv: -kv[1])[:top]] if total else []
            out[role] = {"samples": total, "self_pct": rank(own), "inclusive_pct": rank(incl)}
        return out


# ---------------------------------------------------------------------------------------------- workload

def specs(n: int, start: int) -> Iterator[dict]:
    """Built as they are read: Client.submit reads a generator a batch at a time, as a user's loop would feed it."""
    return (build_spec(python=FUNCTION, args=[start + i]) for i in range(n))


def wait_final(client: Client, ids: list[str], timeout_s: float) -> tuple[dict, int]:
    """Client.wait, plus a work-around: Client.wait can return a summary whose state is not final (a `watch`
    answered from the ledger before the turn that finished the task was committed).
    Such ids are waited for again. Returns (results, how many ids needed that second wait)."""
    results = client.wait(ids, timeout_s=timeout_s)
    retried = 0
    for _ in range(10):
        pending = [i for i, r in results.items() if r.get("state") not in FINAL_STATES]
        if not pending:
            break
        retried += len(pending)
        results.update(client.wait(pending, timeout_s=timeout_s))
    return results, retried


def check_finished(results: dict, ids: list[str], what: str) -> None:
    bad = {i: r.get("state") for i, r in results.items() if r.get("state") != "done"}
    if len(results) != len(set(ids)) or bad:
        raise RuntimeError(f"{what}: {len(results)} results for {len(set(ids))} ids; not done: "
                           f"{dict(list(bad.items())[:5])}")


def ledger_check(db: Path, ids: list[str]) -> dict[str, int]:
    """Every id in the ledger, state done: read-only sqlite3 on the master's file."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    counts: dict[str, int] = {}
    try:
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            for state, n in conn.execute(f"SELECT state, count(*) FROM tasks WHERE id IN ({','.join('?' * len(chunk))})"
                                         " GROUP BY state", chunk):
                counts[state] = counts.get(state, 0) + n
    finally:
        conn.close()
    if counts.get("done", 0) != len(set(ids)) or set(counts) - {"done"}:
        raise RuntimeError(f"ledger check failed: {len(set(ids))} tasks submitted, in the ledger by state: {counts}")
    return counts


class Bench:
    def __init__(self, cluster: Cluster, args: argparse.Namespace) -> None:
        self.cluster, self.a = cluster, args
        self.client = Client(cluster.url, timeout_s=30)
        self.next_arg = 0
        self.non_final = 0      # summaries Client.wait returned in a non-final state (a zmqgrid bug)
        pids = cluster.pids()
        self.cpu_groups = {"client": ([os.getpid()], False), "master": ([pids["master"]], False),
                           "workers": ([p for d, p in pids.items() if d != "master"], True)}
        self.spies = None
        if args.py_spy:
            targets = {"master": (pids["master"], False), "client": (os.getpid(), False)}
            targets.update({d: (p, True) for d, p in pids.items() if d != "master"})
            self.spies = Spies(Path(args.py_spy).resolve(), targets)

    def close(self) -> None:
        self.client.close()

    def _specs(self, n: int) -> Iterator[dict]:
        out = specs(n, self.next_arg)
        self.next_arg += n
        return out

    def _arguments(self, n: int) -> list[tuple]:
        out = [(self.next_arg + i,) for i in range(n)]
        self.next_arg += n
        return out

    def batched(self, n: int, batch_size: int | None = None, window: int | None = None) -> dict:
        """N calls through Client.map (the API for many calls of one function), from the call to the last result."""
        c = self.client
        t0 = time.perf_counter()
        ids = c.map(FUNCTION, self._arguments(n), notify=True, batch_size=batch_size or self.a.batch,
                    window=window or self.a.window)
        t_sub = time.perf_counter() - t0
        results, retried = wait_final(c, ids, self.a.phase_timeout)
        dt = time.perf_counter() - t0
        check_finished(results, ids, "batched")
        self._note_retried("batched", retried)
        return {"ids": ids, "seconds": dt, "tasks_per_s": n / dt, "submit_seconds": t_sub,
                "submit_per_s": n / t_sub, "non_final_from_wait": retried}

    def single(self, n: int) -> dict:
        c = self.client
        t0 = time.perf_counter()
        ids = c.submit(self._specs(n), notify=True, batch_size=1, window=self.a.single_window)
        t_sub = time.perf_counter() - t0
        results, retried = wait_final(c, ids, self.a.phase_timeout)
        dt = time.perf_counter() - t0
        check_finished(results, ids, "single")
        self._note_retried("single", retried)
        return {"ids": ids, "seconds": dt, "tasks_per_s": n / dt, "submit_per_s": n / t_sub,
                "non_final_from_wait": retried}

    def latency(self, n: int) -> dict:
        c = self.client
        ids, lat, retried = [], [], 0
        for spec in self._specs(n):
            t0 = time.perf_counter()
            # What Client.run does (submit with notify, then wait), with wait_final's work-around.
            task_id = c.submit(spec, notify=True)[0]
            results, again = wait_final(c, [task_id], self.a.phase_timeout)
            lat.append((time.perf_counter() - t0) * 1000.0)
            retried += again
            if results[task_id].get("state") != "done":
                raise RuntimeError(f"latency task {task_id} ended {results[task_id].get('state')}: {results[task_id]}")
            ids.append(task_id)
        self._note_retried("latency", retried)
        return {"ids": ids, "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99), "mean_ms": statistics.fmean(lat),
                "max_ms": max(lat), "non_final_from_wait": retried}

    def _note_retried(self, phase: str, retried: int) -> None:
        if retried:
            self.non_final += retried
            progress(f"  note: Client.wait returned {retried} non-final summaries in the {phase} phase "
                     "(watch answered before commit); waited for them again")

    def warmup(self) -> None:
        progress(f"warm-up: {WARMUP_BATCH} tasks batched + {WARMUP_SINGLE} single round trips (not counted)")
        r = self.batched(WARMUP_BATCH)
        l = self.latency(WARMUP_SINGLE)
        ledger_check(self.cluster.db, r["ids"] + l["ids"])

    def run(self, k: int) -> dict:
        a = self.a
        self.cluster.alive()
        background = settle(a.settle, a.busy_threshold, f"run {k}")
        progress(f"run {k}/{a.runs}: machine {background}% busy before the run (our idle cluster included)")
        if self.spies is not None:
            progress(f"run {k}/{a.runs}: py-spy attaching to {list(self.spies.targets)} ...")
            self.spies.start(k)
        progress(f"run {k}/{a.runs}: batched {a.n} tasks, {a.batch} per Submit ...")
        meter, sysstat = CpuMeter(self.cpu_groups).start(), SysStat().start()
        try:
            with Ticker(f"run {k} batched", status=lambda: f"({len(self.client.finished)} Finished buffered)"):
                b = self.batched(a.n)
        finally:
            cpu, machine_cpu = meter.stop(), sysstat.stop()
            if self.spies is not None:
                self.spies.stop()
        progress(f"run {k}/{a.runs}: batched {b['tasks_per_s']:8.0f} tasks/s (submit-only {b['submit_per_s']:8.0f}/s, "
                 f"{b['seconds']:.2f}s) | CPU % of one core: " + ", ".join(f"{g} {v:.0f}" for g, v in cpu.items())
                 + " | machine %: " + ", ".join(f"{g} {v:.0f}" for g, v in machine_cpu.items()))
        progress(f"run {k}/{a.runs}: single {a.n_single} tasks, 1 per Submit, window {a.single_window} ...")
        meter = CpuMeter(self.cpu_groups).start()
        with Ticker(f"run {k} single"):
            s = self.single(a.n_single)
        cpu_s = meter.stop()
        progress(f"run {k}/{a.runs}: single  {s['tasks_per_s']:8.0f} tasks/s ({s['seconds']:.2f}s) | CPU % of one "
                 "core: " + ", ".join(f"{g} {v:.0f}" for g, v in cpu_s.items()))
        progress(f"run {k}/{a.runs}: latency, {a.lat} sequential submit -> Finished round trips ...")
        with Ticker(f"run {k} latency"):
            lt = self.latency(a.lat)
        progress(f"run {k}/{a.runs}: latency p50 {lt['p50_ms']:.2f} ms  p99 {lt['p99_ms']:.2f} ms "
                 f"(mean {lt['mean_ms']:.2f}, max {lt['max_ms']:.2f})")
        ids = b["ids"] + s["ids"] + lt["ids"]
        big = None
        if a.submit_n:
            progress(f"run {k}/{a.runs}: submit {a.submit_n} tasks with Client.map's defaults (1,000 per Submit, "
                     "window 8), then wait for them ...")
            wal = PeakSize(Path(f"{self.cluster.db}-wal")).start()
            with Ticker(f"run {k} big submit", status=lambda: f"({len(self.client.finished)} Finished buffered)"):
                big = self.batched(a.submit_n, batch_size=1000, window=8)
            big["wal_peak_mb"] = wal.stop() / 2**20
            progress(f"run {k}/{a.runs}: {a.submit_n} tasks acknowledged at {big['submit_per_s']:8.0f} tasks/s "
                     f"({big['submit_seconds']:.2f}s), all done at {big['tasks_per_s']:8.0f} tasks/s; the ledger's "
                     f"WAL file peaked at {big['wal_peak_mb']:.0f} MB")
            ids += big["ids"]
        counts = ledger_check(self.cluster.db, ids)
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


# ---------------------------------------------------------------------------------------------- reference

def run_reference(args: argparse.Namespace, tmp: Path, deadline: float, label: str = "") -> dict:
    """One run of the reference loop's variants (it does one run per call: they interleave with zmqgrid's), then,
    with --submit-n, one run of its sqlite:100:16 variant on that many tasks: the same batch size as zmqgrid's big
    submit, for target 4 (its 5,000-task batch is one transaction of 50 ms, which says little about 100,000)."""
    reference = Path(args.reference).resolve() if args.reference else REFERENCE
    if not reference.exists():
        progress(f"reference loop not found at {reference}: skipping it, no ratios")
        return {"missing": str(reference)}
    data, out = reference_process(reference, tmp / f"ref{label}", deadline, args, args.n, args.lat, REF_VARIANTS)
    for variant, row in zip(REF_VARIANTS, data["rows"]):
        out[variant] = reference_row(variant, row)
    if args.submit_n:
        data, big = reference_process(reference, tmp / f"ref{label}-big", deadline, args, args.submit_n,
                                      REF_BIG_LAT, (REF_BIG_VARIANT,))
        out["big"] = dict(reference_row(REF_BIG_VARIANT, data["rows"][0]), n=args.submit_n, command=big["command"])
    return out


def reference_process(reference: Path, ref_dir: Path, deadline: float, args: argparse.Namespace, n: int, lat: int,
                      variants: tuple[str, ...]) -> tuple[dict, dict]:
    """Run reference_loop.py once (--runs 1) and return its result file and how it was run."""
    ref_dir.mkdir()
    argv = [sys.executable, str(reference), "--runs", "1", "--n", str(n), "--lat", str(lat),
            "--variants", ",".join(variants)]
    env = dict(os.environ, ZG_REF_DIR=str(ref_dir), PYTHONUNBUFFERED="1")
    env.pop("A3_PROFILE", None)
    busy = settle(args.settle, args.busy_threshold, "the reference loop")
    progress(f"reference: machine {busy}% busy before it; " + shlex.join(argv))
    proc = subprocess.Popen(argv, cwd=reference.parent, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True, text=True, bufsize=1)
    STARTED.append(proc)
    lines: list[str] = []

    def pump() -> None:
        for line in proc.stdout:
            lines.append(line.rstrip())
            progress("  [reference] " + line.rstrip())

    reader = threading.Thread(target=pump, daemon=True, name="reference-output")
    reader.start()
    try:
        proc.wait(max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        raise DeadlineExceeded("the reference loop did not finish before the deadline") from None
    finally:
        reader.join(5)
        if proc.poll() is None:
            stop_process(proc)
        if proc in STARTED:
            STARTED.remove(proc)
    if proc.returncode != 0:
        raise RuntimeError(f"reference loop exited with {proc.returncode}: " + "\n".join(lines[-20:]))
    data = json.loads((ref_dir / "results" / "a3_durable_master_sketch.json").read_text())
    return data, {"command": f"ZG_REF_DIR={ref_dir} " + shlex.join(argv), "versions": data.get("versions"),
                  "busy_before_pct": busy}


def reference_row(variant: str, row: dict) -> dict:
    k, credit = variant.split(":")[1:]
    assert f"credit {credit} each; {k} task(s)/SUBMIT" in row["setup"], (variant, row["setup"])
    return {"tasks_per_s": row["throughput"], "tasks_per_s_runs": row["throughput_runs"],
            "submit_per_s": median(row.get("submit_rates") or []), "submit_per_s_runs": row.get("submit_rates"),
            "p50_ms": row["p50_ms"], "p99_ms": row["p99_ms"],
            "p50_ms_runs": row["p50_runs_ms"], "p99_ms_runs": row["p99_runs_ms"], "cpu": row.get("cpu")}


def merge_references(outs: list[dict]) -> dict:
    """The reference's interleaved runs as one result: per variant the medians over the runs, and each run's figure."""
    if not outs or "missing" in outs[0]:
        return outs[0] if outs else {}
    merged: dict[str, Any] = {"command": outs[0]["command"].replace("ref1", "ref<k>"),
                              "versions": outs[0]["versions"],
                              "busy_before_pct": [o["busy_before_pct"] for o in outs]}
    for variant in REF_VARIANTS:
        rows = [o[variant] for o in outs]
        merged[variant] = {
            "tasks_per_s": median([r["tasks_per_s"] for r in rows]),
            "tasks_per_s_runs": [v for r in rows for v in r["tasks_per_s_runs"]],
            "submit_per_s": median([r["submit_per_s"] for r in rows if r["submit_per_s"] is not None]),
            "submit_per_s_runs": [v for r in rows for v in (r["submit_per_s_runs"] or [])],
            "p50_ms": median([r["p50_ms"] for r in rows]), "p99_ms": median([r["p99_ms"] for r in rows]),
            "p50_ms_runs": [v for r in rows for v in r["p50_ms_runs"]],
            "p99_ms_runs": [v for r in rows for v in r["p99_ms_runs"]], "cpu": [r["cpu"] for r in rows]}
    bigs = [o["big"] for o in outs if "big" in o]
    if bigs:
        merged["big"] = {"n": bigs[0]["n"], "command": bigs[0]["command"].replace("ref1-big", "ref<k>-big"),
                         "submit_per_s": median([b["submit_per_s"] for b in bigs if b["submit_per_s"] is not None]),
                         "submit_per_s_runs": [v for b in bigs for v in (b["submit_per_s_runs"] or [])],
                         "tasks_per_s": median([b["tasks_per_s"] for b in bigs])}
    return merged


# ---------------------------------------------------------------------------------------------- report

def machine() -> dict:
    def version(dist: str) -> str | None:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import msgpack
    commit = None
    try:
        commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=5).stdout.strip() or None
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        if commit and dirty:
            commit += " (+ uncommitted changes)"
    except (OSError, subprocess.SubprocessError):
        pass
    return {"cpus": os.cpu_count(), "cpu_model": model, "platform": platform.platform(),
            "python": platform.python_version(), "pyzmq": zmq.__version__, "libzmq": zmq.zmq_version(),
            "msgpack": ".".join(map(str, msgpack.version)), "sqlite_utils": version("sqlite-utils"),
            "sqlite": sqlite3.sqlite_version, "psutil": psutil.__version__, "zmqgrid_commit": commit,
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


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
    out["targets"] = {key: {"what": what, "bound": f"{op} {bound}", "met": None if out[key] is None else
                            (out[key] >= bound if op == ">=" else out[key] <= bound)}
                      for key, op, bound, what in TARGETS}
    return out


def fmt(v: float | None, nd: int = 0) -> str:
    return "n/a" if v is None else f"{v:,.{nd}f}"


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
             (ref.get("big") or {}).get("submit_per_s"), f"{REF_BIG_VARIANT} n={a['submit_n']:,}",
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
            verdict = "n/a" if t["met"] is None else "MET" if t["met"] else "NOT MET"
            ratio = "n/a" if rt[key] is None else f"{rt[key]:.2f}x"
            what, note = t["what"], ""
            if key.startswith("big_submit"):
                what = f"4: submit of {a['submit_n']:,}"
                note = "" if a["submit_n"] == 100_000 else ", for 100,000"
            per_run = " ".join("n/a" if r.get(key) is None else f"{r[key]:.2f}" for r in result.get("ratios_per_run", []))
            print(f"  {what:28} {ratio:>7} (target {t['bound']}x{note}): {verdict:8} each run beside its reference: {per_run}")
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


def profile_text(path: Path, top: int = 25) -> str:
    import io
    import pstats
    buf = io.StringIO()
    stats = pstats.Stats(str(path), stream=buf)
    stats.sort_stats("tottime").print_stats(top)
    buf.write("\n")
    stats.sort_stats("cumulative").print_stats(top)
    text = buf.getvalue()
    return text[text.find("   ncalls"):] if "   ncalls" in text else text


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
    ap.add_argument("--submit-n", type=int, default=100_000,
                    help="per run, also submit this many tasks in one Client.map call (its defaults: 1,000 per Submit, "
                         "window 8), timed until all are acknowledged, then wait for them; 0 skips [100000]")
    ap.add_argument("--quick", action="store_true", help="smoke run: N=500, N_single=200, lat 50, 1 run, submit-n 2000")
    ap.add_argument("--reference", metavar="PATH", help=f"the reference loop [{REFERENCE}]")
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
    command = shlex.join(["python", os.path.relpath(__file__, Path.cwd()) if Path(__file__).is_relative_to(Path.cwd())
                          else __file__, *(sys.argv[1:] if argv is None else argv)])
    deadline = time.monotonic() + a.deadline
    tmp = Path(tempfile.mkdtemp(prefix="zmqgrid-bench-"))
    profile = Path(a.profile_master).resolve() if a.profile_master else None
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
        bench.warmup()
        # Each zmqgrid run is followed by one run of the reference (the cluster idles meanwhile): machines here
        # change speed from one half-minute to the next, so the two are compared run by run, side by side in time.
        runs, references, steal = [], [], {"zmqgrid": [], "reference": []}
        for k in range(1, a.runs + 1):
            machine = SysStat().start()
            runs.append(bench.run(k))
            steal["zmqgrid"].append(machine.stop().get("steal"))
            if not a.no_reference and not (references and "missing" in references[0]):
                machine = SysStat().start()
                references.append(run_reference(a, tmp, deadline, str(k)))
                steal["reference"].append(machine.stop().get("steal"))
        result["steal_pct"] = {role: max(v, default=None) if None not in v else None for role, v in steal.items()}
        result["steal_pct_runs"] = steal
        result["zmqgrid_runs"] = runs
        result["zmqgrid"] = summarize(runs)
        result["zmqgrid"]["non_final_from_wait_total"] = bench.non_final
        if bench.spies is not None:
            result["py_spy"] = {"dir": str(bench.spies.outdir), "roles": bench.spies.summary()}
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
