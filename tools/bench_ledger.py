#!/usr/bin/env python
"""Big-ledger benchmark (issue 8, target 6): a real master on a ledger of 1,000,000 tasks.

    python tools/bench_ledger.py                      # 1,000,000 tasks, built in a temporary folder
    python tools/bench_ledger.py --tasks 100000       # a smaller ledger
    python tools/bench_ledger.py --ledger big.db      # build big.db once (if absent) and run on a copy of it
    python tools/bench_ledger.py --json               # every figure as JSON on stdout (progress on stderr)

What it does, all on 127.0.0.1, in a temporary folder that it removes afterwards (kept on error or --keep):

1. Builds the ledger: the schema comes from zmqgrid's own migrations (`TaskStore`), then rows go in with
   `executemany` of the same columns TaskStore writes, journal off: tasks in submit order over the last
   `--days` days (88% done, 6% failed, 1% timed_out, 1% cancelled, 0.1% quarantined, 2% queued, the rest
   done; 300 running and 150 assigned on 16 devices), one attempts row per finished task (a second one for
   5%), output for 30% of the done tasks (stdout, ~200 bytes) and every failed one (stderr, ~400 bytes),
   and the 16 devices as `online` (as a master killed in full flight leaves them).
2. Starts the REAL master (`python -m zmqgrid distribute --mode master --db FILE --port P`, retention off)
   and times it until it answers a status query: the first start (with any migration the ledger lacks),
   then, after a SIGTERM, a restart (the recovery scan alone: the target figure). Reads its RSS (psutil)
   after each start and after the queries, and its peak (VmHWM).
3. `tasks list` latency, one page (50) newest first: through `zmqgrid.Client` (the server round trip, median
   and max of `--queries` queries) for several states, with a device filter, with only a device, unfiltered,
   a deep `--offset`, plus `status`; and through the real CLI (`python main.py tasks list --state done
   --json`, median of 5 runs: mostly interpreter start-up, shown for scale).
4. Retention: restarts the master with `retention_days` = `--days` / 2 and polls the ledger (read-only)
   until every finished task older than that is gone (bounded by `--retention-timeout`), timing the whole
   prune, reading the per-chunk times from the master's log, and measuring `tasks list` round trips while
   it prunes (how long a prune chunk holds the loop). Checks that no queued/assigned/running task was lost.

Every process it starts is stopped by its PID (SIGTERM, then SIGKILL), and the run is bounded by `--deadline`.
Targets: `tasks list` (one page, filtered by state) <= 50 ms, master RSS <= 200 MB, start-up <= 5 s.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import shlex
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import psutil

if __name__ == "__main__":   # `python tools/bench_ledger.py` imports from the repository root, as `python -m tools.bench_ledger` does
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from tests.helpers import REPO
from tools.benchkit.guard import DeadlineExceeded, guarded
from tools.benchkit.measure import timed
from tools.benchkit.processes import clean_env, free_port_block, spawn, stop_process
from tools.benchkit.report import emit, progress
from tools.benchkit.targets import LEDGER, by_key
from zmqgrid.client import Client
from zmqgrid.model import validate_task_spec
from zmqgrid.protocol import packb
from zmqgrid.store.task_store import TaskStore

TARGETS = by_key(LEDGER)
DEVICES = [f"dev-{i:02d}" for i in range(1, 17)]
RUNNING, ASSIGNED = 300, 150
FINAL = ("done", "failed", "timed_out", "cancelled", "quarantined")


# ---------------------------------------------------------------------------------------------- the ledger

def _state_for(i: int, n: int, rng: random.Random) -> str:
    r = rng.random()
    if r < 0.88:
        return "done"
    if r < 0.94:
        return "failed"
    if r < 0.95:
        return "timed_out"
    if r < 0.96:
        return "cancelled"
    if r < 0.961:
        return "quarantined"
    if r < 0.981:
        return "queued"
    return "done"


def build_ledger(path: Path, n: int, days: float, seed: int = 8) -> dict:
    """Write n tasks with attempts and output into a fresh ledger at `path`; returns counts by state."""
    t0 = time.perf_counter()
    TaskStore(path).close()                      # the schema exactly as zmqgrid's migrations make it
    rng = random.Random(seed)
    now = time.time()
    start = now - days * 86400
    step = (now - 120 - start) / max(1, n)       # submit order = rowid order = created_at order
    template = validate_task_spec({"kind": "shell", "command": "python crawl.py --site 0"})
    active = {}                                  # the last tasks are the ones still in flight
    for k in range(RUNNING + ASSIGNED):
        active[n - 1 - k * 3] = "running" if k < RUNNING else "assigned"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=DELETE")
    conn.execute("PRAGMA journal_mode=OFF")
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA cache_size=-1000000")
    counts: dict[str, int] = {}
    task_sql = ("INSERT INTO tasks (id, kind, name, state, priority, attempt, retries, timeout_s, tags, device_req, "
                "device_id, spec, created_at, updated_at, started_at, finished_at, exit_code, value, error, reason, "
                "not_before, deaths, evidence, group_id) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)")
    attempt_sql = ("INSERT INTO attempts (task_id, attempt, device_id, state, assigned_at, started_at, finished_at, "
                   "exit_code, error, stale) VALUES (?,?,?,?,?,?,?,?,?,0)")
    output_sql = "INSERT INTO task_output (task_id, attempt, stream, data) VALUES (?,?,?,?)"
    stdout_text = "fetched 48 pages, 1893 links, 0 errors\n" * 5
    stderr_text = "Traceback (most recent call last):\n  File \"crawl.py\", line 42\nConnectionError: reset\n" * 5
    error_json = json.dumps({"type": "ExitCode", "message": "exit code 1", "traceback": None})
    chunk = 50_000
    with conn:
        for lo in range(0, n, chunk):
            tasks, attempts, outputs = [], [], []
            for i in range(lo, min(n, lo + chunk)):
                state = active.get(i) or _state_for(i, n, rng)
                counts[state] = counts.get(state, 0) + 1
                task_id = f"{rng.getrandbits(64):016x}"
                created = start + i * step
                command = f"python crawl.py --site {i}"
                spec = dict(template, id=task_id, command=command, name=command)
                group = f"g{i // 10}" if i % 50 < 10 else None       # 2% of tasks from fan-outs of 10
                device = DEVICES[i % len(DEVICES)]
                attempt, started, finished, exit_code, error, reason = 0, None, None, None, None, None
                if state == "queued":
                    device = None
                elif state in ("running", "assigned"):
                    attempt = 1
                    started = created + 1 if state == "running" else None
                else:
                    attempt = 2 if i % 20 == 0 else 1
                    started, finished = created + 1, created + 1 + rng.uniform(0.5, 60)
                    if state != "done":
                        exit_code, error, reason = 1, error_json, f"{state} after {attempt} attempts"
                    else:
                        exit_code = 0
                    for a in range(1, attempt + 1):
                        a_state = state if a == attempt else "failed"
                        attempts.append((task_id, a, device, a_state, created + a - 0.5, started, finished,
                                         exit_code if a == attempt else 1, None if a_state == "done" else error_json))
                    if state == "done" and i % 10 < 3:
                        outputs.append((task_id, attempt, "stdout", stdout_text))
                    elif state == "failed":
                        outputs.append((task_id, attempt, "stderr", stderr_text))
                tasks.append((task_id, "shell", command, state, 0, attempt, 3, 3600.0, None, None, device,
                              packb(spec), created, finished or created + 1, started, finished, exit_code,
                              None, error, reason, None, 0, None, group))
            conn.executemany(task_sql, tasks)
            conn.executemany(attempt_sql, attempts)
            conn.executemany(output_sql, outputs)
            if lo // chunk % 4 == 3:
                progress(f"  built {min(n, lo + chunk):,} of {n:,} tasks")
        conn.executemany("INSERT OR REPLACE INTO devices (device_id, name, hostname, os, python_version, "
                         "python_executable, tags, concurrency, state, pid, version, registered_at, last_seen_at, "
                         "running) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                         [(d, d, f"host-{d}", "Linux", "3.11", "python3", "[]", 8, "online", 1000 + j, "0",
                           now - 3600, now - 5, 0) for j, d in enumerate(DEVICES)])
    conn.execute("PRAGMA journal_mode=WAL")
    conn.close()
    progress(f"  ledger built in {time.perf_counter() - t0:.1f}s: {path.stat().st_size / 1e6:.0f} MB")
    return counts


# ---------------------------------------------------------------------------------------------- processes

class Master:
    """The real master as a child process on 127.0.0.1, timed from its start until it answers (a cluster's harness
    polls with short timeouts, which would pile unanswered status queries on a master still scanning its ledger)."""

    def __init__(self, tmp: Path, db: Path) -> None:
        self.tmp, self.db = tmp, db
        self.port = free_port_block()
        self.url = f"tcp://127.0.0.1:{self.port}"
        # retention on only when measured
        self.env = clean_env(ZMQGRID_RETENTION_DAYS="0", ZMQGRID_RETENTION_MAX_TASKS="0")
        self.proc: subprocess.Popen | None = None
        self.argv: list[str] = []

    def start(self, timeout_s: float, env: dict[str, str] | None = None) -> float:
        """Start it; seconds until it answered a status query."""
        self.argv = [sys.executable, "-m", "zmqgrid", "distribute", "--mode", "master", "--db", str(self.db),
                     "--port", str(self.port), "--log-file", str(self.tmp / "master.log")]
        t0 = time.perf_counter()
        self.proc = spawn(self.argv, cwd=self.tmp, env={**self.env, **(env or {})}, log=self.tmp / "master.out")
        deadline = t0 + timeout_s
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the master exited with {self.proc.returncode}; see {self.tmp / 'master.out'}")
            # One request waits for the answer (a DEALER queues it until the master binds); a short timeout
            # would pile unanswered status queries on a master that is still scanning.
            with Client(self.url, timeout_s=5) as c:
                try:
                    c.status(timeout_s=5)
                    return time.perf_counter() - t0
                except Exception:  # not up yet: ask again until the deadline
                    if time.perf_counter() > deadline:
                        raise DeadlineExceeded(f"the master did not answer within {timeout_s:g}s") from None
                    time.sleep(0.02)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, grace_s=15.0)   # a big ledger's master takes a moment to close
            self.proc = None

    def rss_mb(self) -> float:
        return psutil.Process(self.proc.pid).memory_info().rss / 1e6

    def peak_mb(self) -> float | None:
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024 / 1e6
        except OSError:
            return None
        return None


# ---------------------------------------------------------------------------------------------- measurements

def list_queries(c: Client, times: int, offset: int) -> dict[str, dict]:
    page = 50
    cases: dict[str, Callable[[], Any]] = {
        "state=done": lambda: c.tasks("done", limit=page),
        "state=failed": lambda: c.tasks("failed", limit=page),
        "state=quarantined": lambda: c.tasks("quarantined", limit=page),
        "state=queued": lambda: c.tasks("queued", limit=page),
        "state=running": lambda: c.tasks("running", limit=page),
        "state=cancelled": lambda: c.tasks("cancelled", limit=page),
        "state=done device=dev-03": lambda: c.tasks("done", limit=page, device="dev-03"),
        "state=running device=dev-03": lambda: c.tasks("running", limit=page, device="dev-03"),
        "state=failed device=dev-03": lambda: c.tasks("failed", limit=page, device="dev-03"),
        "device=dev-03": lambda: c.tasks(None, limit=page, device="dev-03"),
        "no filter": lambda: c.tasks(None, limit=page),
        f"state=done offset={offset:,}": lambda: c.tasks("done", limit=page, offset=offset),
        "status": lambda: [c.status()],
    }
    out = {}
    for name, fn in cases.items():
        out[name] = timed(fn, times)
        progress(f"  {name:<34} median {out[name]['median_ms']:8.2f} ms  max {out[name]['max_ms']:8.2f} ms "
                 f"rows {out[name]['rows']}")
    return out


def cli_list(url: str, env: dict, tmp: Path, times: int = 5) -> dict:
    argv = [sys.executable, str(REPO / "main.py"), "tasks", "list", "--state", "done", "--json", "--master", url]
    samples = []
    for _ in range(times):
        t0 = time.perf_counter()
        res = subprocess.run(argv, cwd=tmp, env=env, capture_output=True, text=True, timeout=60,
                             stdin=subprocess.DEVNULL)
        samples.append((time.perf_counter() - t0) * 1000)
        if res.returncode != 0:
            raise RuntimeError(f"`{shlex.join(argv)}` failed: {res.stderr.strip()[-500:]}")
        rows = json.loads(res.stdout)
    return {"command": shlex.join(argv[1:]), "median_ms": round(statistics.median(samples), 1),
            "rows": len(rows)}


def ro_count(db: Path, sql: str, params: tuple = ()) -> int:
    conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=10)
    try:
        return conn.execute(sql, params).fetchone()[0]
    finally:
        conn.close()


def retention_run(master: Master, days: float, timeout_s: float) -> dict:
    """Restart with retention on; poll until every finished task older than `days` is gone."""
    master.stop()
    cutoff = time.time() - days * 86400
    old_sql = f"SELECT count(*) FROM tasks WHERE state IN {FINAL} AND finished_at < ?"
    eligible = ro_count(master.db, old_sql, (cutoff,))
    active_before = ro_count(master.db, "SELECT count(*) FROM tasks WHERE state IN ('queued','assigned','running')")
    # The master's cutoff moves on with its clock while it prunes: tasks finished after `safe` must all stay.
    safe = cutoff + timeout_s + 120
    kept_before = ro_count(master.db, f"SELECT count(*) FROM tasks WHERE state IN {FINAL} AND finished_at >= ?",
                           (safe,))
    progress(f"  {eligible:,} finished tasks older than {days:g} days to prune")
    log = master.tmp / "master.log"
    log_at = log.stat().st_size if log.exists() else 0
    master.start(60, env={"ZMQGRID_RETENTION_DAYS": str(int(days)), "ZMQGRID_RETENTION_MAX_TASKS": "0"})
    t0 = time.perf_counter()
    lat: list[float] = []
    left = eligible
    deadline = t0 + timeout_s
    with Client(master.url, timeout_s=10) as c:
        while left and time.perf_counter() < deadline:
            for _ in range(5):
                s = time.perf_counter()
                c.tasks("done", limit=50)
                lat.append((time.perf_counter() - s) * 1000)
                time.sleep(0.05)
            left = ro_count(master.db, old_sql, (cutoff,))
    took = time.perf_counter() - t0
    rss = master.rss_mb()
    chunks = []
    if log.exists():
        with open(log, "rb") as f:
            f.seek(log_at)
            for line in f.read().decode("utf-8", "replace").splitlines():
                m = re.search(r"retention pruned (\d+) .* in (\d+) chunk\(s\) of at most (\d+), longest ([\d.]+) ms, "
                              r"([\d.]+) ms in all", line)
                if m:   # (tasks, chunks, largest chunk, longest ms, ms in all) per log line
                    chunks.append((int(m[1]), int(m[2]), int(m[3]), float(m[4]), float(m[5])))
    active_after = ro_count(master.db, "SELECT count(*) FROM tasks WHERE state IN ('queued','assigned','running')")
    kept_after = ro_count(master.db, f"SELECT count(*) FROM tasks WHERE state IN {FINAL} AND finished_at >= ?",
                          (safe,))
    orphans = ro_count(master.db, "SELECT count(*) FROM attempts WHERE task_id NOT IN (SELECT id FROM tasks)") + \
        ro_count(master.db, "SELECT count(*) FROM task_output WHERE task_id NOT IN (SELECT id FROM tasks)")
    n_chunks = sum(c[1] for c in chunks)
    return {"eligible": eligible, "left": left, "seconds": round(took, 1), "done": left == 0,
            "rows_per_s": round((eligible - left) / took) if took else None,
            "chunks": n_chunks, "chunk_rows": max((c[2] for c in chunks), default=None),
            "chunk_ms_mean": round(sum(c[4] for c in chunks) / n_chunks, 1) if n_chunks else None,
            "chunk_ms_max": round(max(c[3] for c in chunks), 1) if chunks else None,
            "list_during_prune_median_ms": round(statistics.median(lat), 2) if lat else None,
            "list_during_prune_max_ms": round(max(lat), 2) if lat else None,
            "active_kept": active_after == active_before, "recent_kept": kept_after == kept_before,
            "orphan_rows": orphans, "rss_mb": round(rss, 1)}


# ---------------------------------------------------------------------------------------------- run

# m006's indexes, to put back on a copy for the commit A/B (m007 replaced them).
M006_INDEXES = ("CREATE INDEX idx_tasks_state_priority ON tasks (state, priority)",
                "CREATE INDEX idx_tasks_device_id ON tasks (device_id)",
                "CREATE INDEX idx_tasks_group_id ON tasks (group_id)",
                "CREATE INDEX idx_tasks_finished_at ON tasks (finished_at)",
                "CREATE INDEX idx_attempts_device_id ON attempts (device_id)")
M007_INDEXES = ("idx_tasks_state", "idx_tasks_device_state", "idx_tasks_finished", "idx_tasks_group")


def with_m006_indexes(db: Path) -> bool:
    """Swap a migrated ledger's m007 indexes back to m006's; False if it has no m007 indexes (nothing to compare)."""
    conn = sqlite3.connect(db)
    try:
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        if not set(M007_INDEXES) <= names:
            return False
        for name in M007_INDEXES:
            conn.execute(f"DROP INDEX {name}")
        for sql in M006_INDEXES:
            conn.execute(sql)
        conn.commit()
        return True
    finally:
        conn.close()


class CommitLoad:
    """The master's hot-path writes on a big ledger, through TaskStore as the master stages them: turns of
    `batch` tasks, each turn one commit: submit (insert), dispatch (assign), results (attempt row, output, finish)."""

    def __init__(self, db: Path, batch: int, tag: str) -> None:
        self.store = TaskStore(db)
        self.store.checkpoint_in_background()
        self.batch, self.tag, self.turn = batch, tag, 0
        self.template = validate_task_spec({"kind": "shell", "command": "python crawl.py --site 0"})
        self.ms: dict[str, list[float]] = {"insert": [], "assign": [], "finish": []}

    def _commit(self, phase: str) -> None:
        t0 = time.perf_counter()
        self.store.commit()
        self.ms[phase].append((time.perf_counter() - t0) * 1000)

    def run_turn(self) -> None:
        self.turn += 1
        now = time.time()
        ids = [f"{self.tag}-{self.turn}-{i}" for i in range(self.batch)]
        for task_id in ids:
            self.store.insert_tasks([(dict(self.template, id=task_id), 3, 3600.0)], now)
        self._commit("insert")
        for k, task_id in enumerate(ids):
            self.store.assign(task_id, 1, DEVICES[k % len(DEVICES)], now)
        self._commit("assign")
        for k, task_id in enumerate(ids):
            with self.store.op("result"):
                self.store.end_attempt(task_id, 1, DEVICES[k % len(DEVICES)], "done", now, assigned_at=now,
                                       started_at=now, exit_code=0, stdout="fetched 48 pages\n")
                self.store.finish_task(task_id, "done", now, started_at=now, exit_code=0)
        self._commit("finish")

    def figures(self) -> dict:
        med = {k: statistics.median(v) for k, v in self.ms.items()}
        return {**{f"{k}_ms": round(v, 2) for k, v in med.items()},
                "us_per_task": round(sum(med.values()) * 1000 / self.batch, 1)}

    def close(self) -> None:
        self.store.close()


def commit_ab(db: Path, tmp: Path, turns: int, batch: int) -> dict:
    """Hot-path commit cost on this ledger with m007's indexes and, on a copy, with m006's; turns interleaved."""
    other = tmp / "ledger-m006-indexes.db"
    shutil.copyfile(db, other)
    loads = {"m007": CommitLoad(db, batch, "ab7")}
    if with_m006_indexes(other):
        loads["m006"] = CommitLoad(other, batch, "ab6")
    try:
        for t in range(turns):
            for load in (loads.values() if t % 2 else reversed(list(loads.values()))):
                load.run_turn()
        return {name: load.figures() for name, load in loads.items()}
    finally:
        for load in loads.values():
            load.close()
        other.unlink()
        for suffix in ("-wal", "-shm"):
            Path(f"{other}{suffix}").unlink(missing_ok=True)


def run(args: argparse.Namespace, tmp: Path) -> dict:
    result: dict[str, Any] = {"tasks": args.tasks, "machine": {
        "cpus": os.cpu_count(), "python": platform.python_version(), "sqlite": sqlite3.sqlite_version,
        "platform": platform.platform()}}
    db = tmp / "ledger.db"
    t0 = time.perf_counter()
    if args.ledger:
        source = Path(args.ledger)
        if not source.exists():
            progress(f"building {args.tasks:,} tasks into {source} ...")
            result["counts"] = build_ledger(source, args.tasks, args.days)
        progress(f"copying {source} ...")
        shutil.copyfile(source, db)
    else:
        progress(f"building {args.tasks:,} tasks ...")
        result["counts"] = build_ledger(db, args.tasks, args.days)
    result["build_s"] = round(time.perf_counter() - t0, 1)
    result["counts"] = result.get("counts") or dict(sqlite3.connect(db).execute(
        "SELECT state, count(*) FROM tasks GROUP BY state").fetchall())
    result["db_mb"] = round(db.stat().st_size / 1e6, 1)
    master = Master(tmp, db)
    try:
        progress("first start ...")
        result["first_start_s"] = round(master.start(args.start_timeout), 2)
        result["rss_first_start_mb"] = round(master.rss_mb(), 1)
        progress(f"  answered after {result['first_start_s']} s, RSS {result['rss_first_start_mb']} MB")
        master.stop()
        progress("restart (recovery scan) ...")
        starts = []
        for _ in range(args.restarts):
            starts.append(master.start(args.start_timeout))
            rss = master.rss_mb()
            if len(starts) < args.restarts:
                master.stop()
        result["restart_s"] = round(statistics.median(starts), 2)
        result["restart_s_all"] = [round(s, 2) for s in starts]
        result["rss_after_start_mb"] = round(rss, 1)
        progress(f"  answered after {result['restart_s_all']} s, RSS {rss:.1f} MB")
        progress(f"tasks list through zmqgrid.Client ({args.queries} queries each) ...")
        with Client(master.url, timeout_s=30) as c:
            result["list"] = list_queries(c, args.queries, args.offset)
        progress("tasks list through the CLI ...")
        result["cli"] = cli_list(master.url, master.env, tmp)
        progress(f"  {result['cli']['median_ms']} ms per command ({result['cli']['rows']} rows)")
        result["rss_after_queries_mb"] = round(master.rss_mb(), 1)
        result["rss_peak_mb"] = master.peak_mb() and round(master.peak_mb(), 1)
        if args.commit_turns:
            master.stop()
            progress(f"hot-path commits, {args.commit_turns} turns of {args.commit_batch} tasks per index set ...")
            result["commits"] = commit_ab(db, tmp, args.commit_turns, args.commit_batch)
            for name, f in result["commits"].items():
                progress(f"  {name} indexes: {f}")
        if not args.no_retention:
            progress("retention ...")
            result["retention"] = retention_run(master, args.days / 2, args.retention_timeout)
            r = result["retention"]
            progress(f"  pruned {r['eligible'] - r['left']:,} of {r['eligible']:,} in {r['seconds']} s "
                     f"({r['chunks']} chunks, mean {r['chunk_ms_mean']} ms, longest {r['chunk_ms_max']} ms)")
    finally:
        master.stop()
    result["master_command"] = shlex.join(master.argv)
    state_lists = [v["median_ms"] for k, v in result["list"].items() if k.startswith("state=") and "offset" not in k]
    figures = {"list_ms": max(state_lists),
               "rss_mb": max(result["rss_after_start_mb"], result["rss_after_queries_mb"], result["rss_first_start_mb"]),
               "start_s": result["restart_s"]}
    result["targets"] = {t.label: (figures[key], t.met(figures[key])) for key, t in TARGETS.items()}
    if "retention" in result:
        r = result["retention"]
        ok = r["done"] and r["active_kept"] and r["recent_kept"] and not r["orphan_rows"]
        result["targets"]["retention prunes old finished tasks, keeps the rest"] = (r["eligible"] - r["left"], ok)
    return result


def print_table(r: dict) -> None:
    print(f"Big ledger: {r['tasks']:,} tasks, {r['db_mb']} MB ledger "
          f"({', '.join(f'{k} {v:,}' for k, v in sorted(r['counts'].items(), key=lambda kv: -kv[1]))})")
    print(f"machine: {r['machine']['cpus']} CPUs, Python {r['machine']['python']}, SQLite {r['machine']['sqlite']}")
    print(f"master: {r['master_command']}")
    print()
    print(f"{'figure':<44} {'value':>12}")
    print(f"{'ledger build (or copy, with --ledger) (s)':<44} {r['build_s']:>12}")
    print(f"{'first start, until status answers (s)':<44} {r['first_start_s']:>12}")
    print(f"{'restart = recovery scan, median (s)':<44} {r['restart_s']:>12}")
    print(f"{'RSS after first start (MB)':<44} {r['rss_first_start_mb']:>12}")
    print(f"{'RSS after restart (MB)':<44} {r['rss_after_start_mb']:>12}")
    print(f"{'RSS after the queries (MB)':<44} {r['rss_after_queries_mb']:>12}")
    print(f"{'peak RSS, VmHWM (MB)':<44} {str(r['rss_peak_mb']):>12}")
    print()
    print(f"{'Client round trip, one page of 50':<44} {'median ms':>12} {'max ms':>10} {'rows':>6}")
    for name, v in r["list"].items():
        print(f"{name:<44} {v['median_ms']:>12} {v['max_ms']:>10} {str(v['rows']):>6}")
    print(f"{'CLI: ' + r['cli']['command'][:38]:<44} {r['cli']['median_ms']:>12} {'':>10} {r['cli']['rows']:>6}")
    if "commits" in r:
        print()
        print(f"{'hot-path commit of 100 tasks, median ms':<44} {'insert':>8} {'assign':>8} {'finish':>8} {'us/task':>8}")
        for name, f in r["commits"].items():
            print(f"{name + ' indexes':<44} {f['insert_ms']:>8} {f['assign_ms']:>8} {f['finish_ms']:>8} "
                  f"{f['us_per_task']:>8}")
    if "retention" in r:
        t = r["retention"]
        print()
        print(f"retention: pruned {t['eligible'] - t['left']:,} of {t['eligible']:,} finished tasks in {t['seconds']} s "
              f"({t['rows_per_s']} rows/s), {t['chunks']} chunks of <= {t['chunk_rows']} rows, "
              f"chunk mean {t['chunk_ms_mean']} ms, longest {t['chunk_ms_max']} ms; tasks list during the prune: "
              f"median {t['list_during_prune_median_ms']} ms, max {t['list_during_prune_max_ms']} ms; "
              f"active kept {t['active_kept']}, recent kept {t['recent_kept']}, orphan rows {t['orphan_rows']}, "
              f"RSS {t['rss_mb']} MB")
    print()
    for name, (value, ok) in r["targets"].items():
        print(f"{'MET    ' if ok else 'NOT MET'} {name}: {value}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", type=int, default=1_000_000, help="tasks in the ledger [1000000]")
    ap.add_argument("--days", type=float, default=60, help="the ledger spans this many days; retention keeps half [60]")
    ap.add_argument("--ledger", metavar="FILE", help="build the ledger here once (if absent) and run on a copy")
    ap.add_argument("--queries", type=int, default=20, help="queries per case; figures are medians [20]")
    ap.add_argument("--offset", type=int, default=100_000, help="the deep-page case's offset [100000]")
    ap.add_argument("--restarts", type=int, default=3, help="restarts timed; the median is the figure [3]")
    ap.add_argument("--start-timeout", type=float, default=120, help="seconds for the master to answer [120]")
    ap.add_argument("--retention-timeout", type=float, default=300, help="seconds for the prune to finish [300]")
    ap.add_argument("--no-retention", action="store_true", help="skip the retention phase")
    ap.add_argument("--commit-turns", type=int, default=40, help="hot-path commit turns per index set; 0 skips [40]")
    ap.add_argument("--commit-batch", type=int, default=100, help="tasks per hot-path turn [100]")
    ap.add_argument("--deadline", type=float, default=1800, help="seconds for the whole run [1800]")
    ap.add_argument("--json", action="store_true", help="print every figure as JSON on stdout")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder (ledger, logs)")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="zmqgrid-ledger-"))
    result: dict = {}

    def measure() -> None:
        result.update(run(args, tmp))

    code = guarded(args, tmp, measure, kept="ledger and logs")
    if code:
        return code
    emit(args, result, print_table)
    return 0 if all(ok for _, ok in result["targets"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
