#!/usr/bin/env python
"""The CLI path against the API on one cluster: `submit --file F --wait` and `Client.map` + `Client.wait`, in turns.

    python tools/bench_cli.py                      # 20,000 no-op tasks, 3 pairs (ABAB...), 2 local workers
    python tools/bench_cli.py --pairs 5 --json
    python tools/bench_cli.py --repo /work/main    # the cluster, the CLI and the API of another checkout
    python tools/bench_cli.py --pairs 1 --profile-cli /tmp/cli.prof    # then one more CLI run under cProfile
    python tools/bench_cli.py --pairs 5 --base-cli /tmp/before   # a third side: that checkout's CLI, same cluster

What it does, all on 127.0.0.1, in a temporary folder that it removes afterwards (kept on error or --keep):

1. Starts one cluster as a user does: `python main.py distribute --mode standalone --workers W --no-dashboard`
   with a port the kernel chose, the ledger and log file in the temporary folder, and nothing else set (the
   built-in defaults: `concurrent_tasks` 3, `prefetch` 2; no ZMQGRID_* variable of the caller), then waits until
   its W workers are online.
2. Writes F: `--n` lines `{"python": "zmqgrid.samples:noop", "args": [i]}`.
3. Warms up (one small run of each side, not counted), then `--pairs` pairs, the order swapped every other pair
   (CLI, API, API, CLI, CLI, API, ...), each side a real child process timed from its start to its exit, so the
   interpreter's start and imports count for both:
   - CLI: `python main.py submit --file F --wait --master URL`, its stdout (a line per task) to a file, checked
     for `--n` lines of done tasks, exit 0;
   - API: `python -c` that imports zmqgrid.client, calls `Client.map("zmqgrid.samples:noop", [(i,) ...],
     notify=True)` (its defaults: 1,000 per Submit, window 8), then `Client.wait` on the ids.
   After each, the ledger (read-only sqlite3) must hold every task submitted so far in state `done`.
   With `--base-cli TREE`, each round has a third side, TREE's CLI (e.g. a worktree of the commit before a
   change: `git worktree add --detach /tmp/before COMMIT`) on the same cluster and file, and the order rotates
   (CLI, API, base; API, base, CLI; base, CLI, API; ...).
4. Reports each side's tasks/s per run, each round's ratio CLI/API (and base/API), the median of the ratios and
   the ratio of the medians. Target (issue 31): CLI >= 0.8x API. Also each side's CPU seconds (user + system of
   its process, which drift less than rates on a shared machine), and a stricter ratio: the CLI (start and
   imports counted) against the API's time inside its process (from Client() to wait's return, neither counted).

Every process it starts is stopped by its PID (SIGTERM, then SIGKILL, descendants included); the whole run is
bounded by `--deadline` seconds. Progress goes to stderr.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __name__ == "__main__":   # `python tools/bench_cli.py` imports from the repository root
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from tools.benchkit.guard import guarded
from tools.benchkit.measure import machine_busy
from tools.benchkit.processes import clean_env, free_port_block, spawn, stop_process, tail
from tools.benchkit.report import command_line, emit, fmt, machine, profile_text, progress
from zmqgrid.client import Client

REPO = Path(__file__).resolve().parents[1]
FUNCTION = "zmqgrid.samples:noop"
TARGET = 0.8
API_CHILD = """
import json, sys, time
from zmqgrid.client import Client
url, n = sys.argv[1], int(sys.argv[2])
t0 = time.perf_counter()
with Client(url, timeout_s=30) as c:
    ids = c.map({function!r}, [(i,) for i in range(n)], notify=True)
    results = c.wait(ids)
seconds = time.perf_counter() - t0
done = sum(1 for r in results.values() if r.get("state") == "done")
print(json.dumps({{"submitted": len(ids), "done": done, "seconds": seconds}}))
""".format(function=FUNCTION)


def write_tasks(path: Path, n: int) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            f.write(json.dumps({"python": FUNCTION, "args": [i]}) + "\n")


class Sides:
    """The two ways to run `n` tasks on one cluster, each a child process of `repo`'s code, timed from outside."""

    def __init__(self, repo: Path, tmp: Path, url: str, env: dict[str, str], timeout_s: float) -> None:
        self.repo, self.tmp, self.url, self.env, self.timeout_s = repo, tmp, url, env, timeout_s
        self.runs = 0

    def _child(self, argv: list[str], out: Path) -> dict:
        """Run one side: its wall time from start to exit (`s`) and the CPU it spent, user + system (`cpu_s`)."""
        self.runs += 1
        err = out.with_suffix(".err")
        with open(out, "wb") as stdout, open(err, "wb") as stderr:
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            t0 = time.perf_counter()
            proc = subprocess.Popen(argv, cwd=self.tmp, env=self.env, stdout=stdout, stderr=stderr,
                                    stdin=subprocess.DEVNULL)
            try:
                code = proc.wait(self.timeout_s)
            except subprocess.TimeoutExpired:
                stop_process(proc)
                raise RuntimeError(f"{argv[1]} did not end within {self.timeout_s:g}s: {tail(err)}") from None
            seconds = time.perf_counter() - t0
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if code != 0:
            raise RuntimeError(f"{' '.join(argv[:4])} exited {code}: {tail(err)}")
        return {"s": seconds, "cpu_s": after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime}

    def cli(self, tasks: Path, n: int, prefix: tuple[str, ...] = ()) -> dict:
        out = self.tmp / f"cli-{self.runs}.out"
        got = self._child([sys.executable, *prefix, str(self.repo / "main.py"), "submit", "--file", str(tasks),
                                  "--wait", "--master", self.url], out)
        with open(out, encoding="utf-8") as f:
            done = sum(1 for line in f if line.startswith("done "))
        if done != n:
            raise RuntimeError(f"the CLI printed {done} done lines for {n} tasks ({out})")
        return got

    def api(self, n: int) -> dict:
        """Also `in_s`: the time inside the child from Client() to wait's return (no start, no imports)."""
        out = self.tmp / f"api-{self.runs}.out"
        got = self._child([sys.executable, "-c", API_CHILD, self.url, str(n)], out)
        told = json.loads(out.read_text())
        if (told["submitted"], told["done"]) != (n, n):
            raise RuntimeError(f"the API child reports {told} for {n} tasks")
        return {**got, "in_s": told["seconds"]}


def ledger_done(db: Path, expected: int) -> None:
    """Every task submitted so far is in the ledger, state done."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        counts = dict(conn.execute("SELECT state, count(*) FROM tasks GROUP BY state").fetchall())
    finally:
        conn.close()
    if counts != {"done": expected}:
        raise RuntimeError(f"ledger check failed: {expected} tasks submitted, in the ledger by state: {counts}")


def start_cluster(repo: Path, tmp: Path, workers: int, env: dict[str, str]) -> tuple[subprocess.Popen, str, list[str]]:
    port = free_port_block()
    argv = [sys.executable, str(repo / "main.py"), "distribute", "--mode", "standalone", "--workers", str(workers),
            "--port", str(port), "--db", str(tmp / "ledger.db"), "--log-file", str(tmp / "distribution.log"),
            "--no-dashboard"]
    proc = spawn(argv, cwd=tmp, env=env, log=tmp / "standalone.out")
    url = f"tcp://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    with Client(url, timeout_s=2) as c:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"distribute exited {proc.returncode}: {tail(tmp / 'standalone.out')}")
            try:
                if sum(1 for d in c.devices() if d["state"] == "online") >= workers:
                    break
            except Exception:  # not answering yet
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{workers} workers not online within 60s: {tail(tmp / 'standalone.out')}")
            time.sleep(0.2)
    return proc, url, argv


def run(a: argparse.Namespace, tmp: Path, result: dict) -> None:
    repo = Path(a.repo).resolve()
    env = clean_env(repo)
    proc, url, argv = start_cluster(repo, tmp, a.workers, env)
    result["cluster"] = " ".join(argv)
    progress(f"cluster up at {url}: {a.workers} workers, built-in defaults")
    tasks, warm = tmp / "tasks.jsonl", tmp / "warm.jsonl"
    write_tasks(tasks, a.n)
    write_tasks(warm, a.warmup)
    sides = Sides(repo, tmp, url, env, a.timeout)
    submitted = 0
    if a.warmup:
        sides.cli(warm, a.warmup)
        sides.api(a.warmup)
        submitted += 2 * a.warmup
        progress(f"warm-up: {a.warmup} tasks each side")
    runs = {"cli": lambda: sides.cli(tasks, a.n), "api": lambda: sides.api(a.n)}
    if a.base_cli:
        base_repo = Path(a.base_cli).resolve()
        base = Sides(base_repo, tmp, url, clean_env(base_repo), a.timeout)
        base.cli(warm, a.warmup)
        submitted += a.warmup
        runs["base"] = lambda: base.cli(tasks, a.n)
        result["base_cli"] = str(base_repo)
    names = list(runs)
    rows = []
    for k in range(a.pairs):
        busy = machine_busy(1.0)
        order = names[k % len(names):] + names[:k % len(names)] if len(names) > 2 else names[::1 - 2 * (k % 2)]
        row: dict = {"order": "/".join(order), "busy_before_pct": busy}
        for side in order:
            got = runs[side]()
            submitted += a.n
            ledger_done(tmp / "ledger.db", submitted)
            row[f"{side}_s"] = round(got["s"], 3)
            row[f"{side}_per_s"] = round(a.n / got["s"], 1)
            row[f"{side}_cpu_s"] = round(got["cpu_s"], 2)
            if "in_s" in got:
                row["api_in_per_s"] = round(a.n / got["in_s"], 1)
        row["ratio"] = round(row["cli_per_s"] / row["api_per_s"], 3)
        row["ratio_in"] = round(row["cli_per_s"] / row["api_in_per_s"], 3)
        if "base" in runs:
            row["base_ratio"] = round(row["base_per_s"] / row["api_per_s"], 3)
        rows.append(row)
        progress(f"round {k + 1}/{a.pairs} ({row['order']}, machine {busy}% busy before): "
                 + ", ".join(f"{side} {fmt(row[f'{side}_per_s'])}/s ({row[f'{side}_s']:.2f}s)" for side in order)
                 + f"; CLI/API {row['ratio']:.3f}" + (f", base/API {row['base_ratio']:.3f}" if "base" in runs else "")
                 + f"; CLI CPU {row['cli_cpu_s']:.2f}s" + (f", base CPU {row['base_cpu_s']:.2f}s" if "base" in runs else ""))
    result["pairs"] = rows
    if rows:
        for side in names:
            result[f"{side}_median_per_s"] = statistics.median(r[f"{side}_per_s"] for r in rows)
            result[f"{side}_median_cpu_s"] = statistics.median(r[f"{side}_cpu_s"] for r in rows)
        result.update(median_ratio=statistics.median(r["ratio"] for r in rows),
                      median_ratio_in=statistics.median(r["ratio_in"] for r in rows),
                      ratio_of_medians=round(result["cli_median_per_s"] / result["api_median_per_s"], 3))
        if "base" in runs:
            result["base_median_ratio"] = statistics.median(r["base_ratio"] for r in rows)
        result["target_met"] = result["median_ratio"] >= TARGET
    if a.profile_cli:
        progress(f"one more CLI run under cProfile -> {a.profile_cli}")
        sides.cli(tasks, a.n, prefix=("-m", "cProfile", "-o", str(Path(a.profile_cli).resolve())))
        result["profile"] = profile_text(Path(a.profile_cli).resolve(), a.profile_top)
    stop_process(proc)


def report(result: dict) -> None:
    print(f"command: {result['command']}")
    print(f"cluster: {result.get('cluster')}")
    m = result["machine"]
    print(f"machine: {m['cpus']} CPUs, {m['cpu_model']}, Python {m['python']}, commit {m['zmqgrid_commit']}")
    base = "base_ratio" in (result.get("pairs") or [{}])[0]
    if base:
        print(f"base CLI: {result['base_cli']}")
    print(f"\n{'round':>5}  {'order':<13} {'busy%':>5}  {'CLI tasks/s':>11}  {'API tasks/s':>11}  {'CLI/API':>7}"
          + (f"  {'base tasks/s':>12}  {'base/API':>8}" if base else ""))
    for k, r in enumerate(result.get("pairs", []), 1):
        print(f"{k:>5}  {r['order']:<13} {fmt(r['busy_before_pct']):>5}  {fmt(r['cli_per_s']):>11}  "
              f"{fmt(r['api_per_s']):>11}  {r['ratio']:>7.3f}"
              + (f"  {fmt(r['base_per_s']):>12}  {r['base_ratio']:>8.3f}" if base else ""))
    if result.get("pairs"):
        print(f"\nmedians: CLI {fmt(result['cli_median_per_s'])}/s, API {fmt(result['api_median_per_s'])}/s; "
              f"median of the ratios CLI/API {result['median_ratio']:.3f}, ratio of the medians "
              f"{result['ratio_of_medians']:.3f} (target >= {TARGET}: {'MET' if result['target_met'] else 'NOT MET'})")
        if base:
            print(f"base CLI: median {fmt(result['base_median_per_s'])}/s, median of the ratios base/API "
                  f"{result['base_median_ratio']:.3f}")
        print("median CPU seconds (user + system) of one run's client process: "
              + ", ".join(f"{side} {result[f'{side}_median_cpu_s']:.2f}" for side in ("cli", "api", "base")
                          if f"{side}_median_cpu_s" in result))
        print(f"the CLI against the API's time inside its process (from Client() to wait's return, no start or "
              f"imports): median of the ratios {result['median_ratio_in']:.3f}")
    if result.get("profile"):
        print("\nthe CLI under cProfile:\n" + result["profile"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=20_000, help="tasks per run [20000]")
    p.add_argument("--pairs", type=int, default=3, help="rounds: one run of each side [3]")
    p.add_argument("--base-cli", metavar="TREE", help="a third side: the CLI of this checkout (e.g. the code before)")
    p.add_argument("--workers", type=int, default=2, help="the standalone's local workers [2]")
    p.add_argument("--warmup", type=int, default=1000, help="tasks of the uncounted first run of each side [1000]")
    p.add_argument("--repo", default=str(REPO), help="the checkout whose cluster, CLI and API run [this one]")
    p.add_argument("--timeout", type=float, default=600, help="seconds one run may take [600]")
    p.add_argument("--profile-cli", metavar="FILE", help="after the pairs, one CLI run under cProfile into FILE")
    p.add_argument("--profile-top", type=int, default=30, help="functions shown of the profile [30]")
    p.add_argument("--deadline", type=float, default=1800, help="seconds the whole run may take [1800]")
    p.add_argument("--json", action="store_true", help="the figures as JSON on stdout")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder (outputs, ledger, logs)")
    a = p.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="zmqgrid-bench-cli-"))
    result: dict = {"command": command_line(__file__, argv), "machine": machine(), "n": a.n}
    code = guarded(a, tmp, lambda: run(a, tmp, result), kept="outputs, ledger and logs")
    if code == 0:
        emit(a, result, report)
    return code


if __name__ == "__main__":
    os.environ.pop("PYTHONSTARTUP", None)
    sys.exit(main())
