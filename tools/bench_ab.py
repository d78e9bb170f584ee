#!/usr/bin/env python
"""Two versions of zmqgrid measured in interleaved pairs: is a change faster, beyond the machine's drift?

    python tools/bench_ab.py 537bc8d                       # that commit against the working tree, single phase
    python tools/bench_ab.py HEAD~2 HEAD --phase latency   # two commits
    python tools/bench_ab.py main --phase batched --pairs 8 --n 20000 --json
    python tools/bench_ab.py HEAD HEAD --env-a ZMQGRID_DURABILITY=normal --env-b ZMQGRID_DURABILITY=full

The machines here change speed by tens of per cent from one half-minute to the next (docs/benchmarks.md), so a
bench run of one version an hour after the other says little about a change of a few per cent. This runs the two
side by side instead: `--pairs` pairs, each one measurement of A and one of B, the order swapped every other
pair, and reports both medians, each pair's ratio and the CPU each side spent per task, which drifts less than
the rates do.

One measurement is a fresh cluster of that version (its own `Cluster` and `Bench`, from the version's tree, in a
child process: tools/benchkit/ab_child.py; a real master and two real workers on 127.0.0.1, `--concurrency 4`,
ZMQGRID_PREFETCH=12, plus
that side's `--env-a`/`--env-b` settings, so one revision can be compared with itself under two configs),
its warm-up, then one phase:
  - single:  `--n` tasks, one per Submit, up to 1,000 Submits in flight -> tasks/s (higher is better);
  - batched: `--n` calls through `Client.map` (100 per Submit, window 8) -> tasks/s (higher is better);
  - latency: `--n` sequential submit -> result round trips -> p50 in ms (lower is better).
CPU per task: user + system seconds of the master, of the two workers with their pool children, and of the
client (this measurement's process), over the phase, divided by `--n`.

A commit is checked out with `git worktree add --detach` into a temporary folder (removed afterwards); without
a second commit, B is the working tree as it is. Each version must have tools/benchkit, or tools/bench.py with
`Cluster` and `Bench` (as every commit of it from before tools/benchkit has). Every process started is stopped by
PID; the whole run is bounded by `--deadline` seconds. Progress goes to stderr.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __name__ == "__main__":   # `python tools/bench_ab.py` imports from the repository root, as `python -m tools.bench_ab` does
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from tools.benchkit.processes import stop_process
from tools.benchkit.report import progress

REPO = Path(__file__).resolve().parents[1]
CHILD = Path(__file__).resolve().parent / "benchkit" / "ab_child.py"   # one measurement with a tree's own code
PHASES = {"single": ("tasks/s", True), "batched": ("tasks/s", True), "latency": ("p50 ms", False)}


def checkout(rev: str, into: Path) -> Path:
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "--force", str(into), rev],
                   check=True, capture_output=True, text=True)
    return into


def run_pairs(a: argparse.Namespace, trees: dict[str, Path], envs: dict[str, list[str]], deadline: float,
              logs: Path) -> list[dict]:
    measurements: list[dict] = []
    names = list(trees)
    for pair in range(a.pairs):
        for name in names if pair % 2 == 0 else names[::-1]:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"the comparison did not finish within --deadline {a.deadline:g}s")
            argv = [sys.executable, str(CHILD), str(trees[name]), a.phase, str(a.n), a.python_pool, *envs[name]]
            log = logs / f"pair{pair + 1}-{'ab'[names.index(name)]}.log"
            with open(log, "w") as err:
                proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err, text=True, stdin=subprocess.DEVNULL)
                try:
                    out, _ = proc.communicate(timeout=remaining)
                except BaseException as e:   # the deadline or Ctrl-C: SIGTERM lets it stop its cluster by PID
                    stop_process(proc, grace_s=30)
                    if isinstance(e, subprocess.TimeoutExpired):
                        raise TimeoutError(f"the comparison did not finish within --deadline {a.deadline:g}s") from None
                    raise
            if proc.returncode != 0:
                last = log.read_text(errors="replace").strip().splitlines()
                raise RuntimeError(f"measuring {name} failed: {last[-1] if last else proc.returncode}")
            m = dict(json.loads(out.strip().splitlines()[-1]), version=name, pair=pair + 1)
            measurements.append(m)
            progress(f"pair {pair + 1}/{a.pairs} {name}: {m['figure']:.3f} {PHASES[a.phase][0]}, CPU us/task "
                     + ", ".join(f"{k} {v:.0f}" for k, v in m["cpu_us_per_task"].items()))
    return measurements


def summarise(a: argparse.Namespace, names: list[str], measurements: list[dict]) -> dict:
    unit, higher_better = PHASES[a.phase]
    by = {name: [m for m in measurements if m["version"] == name] for name in names}
    summary = {}
    for name, ms in by.items():
        summary[name] = {"figure_median": statistics.median(m["figure"] for m in ms),
                         "figures": [round(m["figure"], 3) for m in ms],
                         "cpu_us_per_task_median": {k: statistics.median(m["cpu_us_per_task"][k] for m in ms)
                                                    for k in ms[0]["cpu_us_per_task"]}}
    base, head = names
    ratios = [h["figure"] / b["figure"] for b, h in zip(by[base], by[head])]
    better = sum((r > 1.0) == higher_better and r != 1.0 for r in ratios)
    return {"phase": a.phase, "unit": unit, "higher_is_better": higher_better, "n": a.n, "pairs": a.pairs,
            "python_pool": a.python_pool, "versions": summary,
            "ratio_of_medians": summary[head]["figure_median"] / summary[base]["figure_median"],
            "pair_ratios": [round(r, 3) for r in ratios], "pairs_where_b_is_better": better}


def report(result: dict, names: list[str]) -> None:
    base, head = names
    print(f"{result['phase']}: {result['n']} tasks, {result['pairs']} interleaved pairs, python_pool "
          f"{result['python_pool']} ({'higher' if result['higher_is_better'] else 'lower'} is better)")
    for name in names:
        v = result["versions"][name]
        cpu = ", ".join(f"{k} {x:.0f}" for k, x in v["cpu_us_per_task_median"].items())
        print(f"  {name:>12}: median {v['figure_median']:.3f} {result['unit']} (each: "
              f"{' '.join(f'{x:g}' for x in v['figures'])}); CPU us/task {cpu}")
    print(f"  B/A: {result['ratio_of_medians']:.3f} (pairs: {' '.join(f'{r:.2f}' for r in result['pair_ratios'])}); "
          f"B better in {result['pairs_where_b_is_better']} of {result['pairs']} pairs")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("a", nargs="?", help="version A: a git revision")
    ap.add_argument("b", nargs="?", help="version B: a git revision [the working tree]")
    ap.add_argument("--phase", choices=sorted(PHASES), default="single")
    ap.add_argument("--pairs", type=int, default=6, help="interleaved pairs [6]")
    ap.add_argument("--n", type=int, help="tasks per measurement [10000; latency 1000]")
    ap.add_argument("--python-pool", choices=("process", "inline"), default="process")
    ap.add_argument("--json", action="store_true", help="every figure as JSON on stdout")
    ap.add_argument("--deadline", type=float, default=1800, help="seconds for the whole comparison [1800]")
    ap.add_argument("--env-a", action="append", default=[], metavar="ZMQGRID_KEY=VALUE",
                    help="set for version A's master and workers (repeatable)")
    ap.add_argument("--env-b", action="append", default=[], metavar="ZMQGRID_KEY=VALUE",
                    help="set for version B's master and workers (repeatable)")
    a = ap.parse_args()
    a.n = a.n or (1000 if a.phase == "latency" else 10000)
    if not a.a or a.pairs < 1 or a.n < 1:
        ap.error("give version A (a git revision), --pairs >= 1 and --n >= 1")
    if any("=" not in item or not item.startswith("ZMQGRID_") for item in a.env_a + a.env_b):
        ap.error("--env-a and --env-b take ZMQGRID_KEY=VALUE")
    if a.a == a.b and a.env_a == a.env_b:
        ap.error("A and B are the same revision with the same settings")
    tmp = Path(tempfile.mkdtemp(prefix="zmqgrid-ab-trees-"))
    logs = Path(tempfile.mkdtemp(prefix="zmqgrid-ab-logs-"))   # each measurement's stderr; kept if one fails
    trees: dict[str, Path] = {}
    # A side is named by its revision and its settings, so the same revision under two configs gets two names.
    name_a, name_b = (" ".join([rev or "working tree", *env]) for rev, env in ((a.a, a.env_a), (a.b, a.env_b)))
    envs = {name_a: a.env_a, name_b: a.env_b}
    code = 1
    try:
        trees[name_a] = checkout(a.a, tmp / "a")
        trees[name_b] = checkout(a.b, tmp / "b") if a.b else REPO
        progress(f"A = {name_a} ({trees[name_a]}), B = {name_b}; {a.phase}, {a.n} tasks, {a.pairs} pairs")
        names = list(trees)
        measurements = run_pairs(a, trees, envs, time.monotonic() + a.deadline, logs)
        result = summarise(a, names, measurements)
        result["measurements"] = measurements
        if a.json:
            print(json.dumps(result, indent=2))
        else:
            report(result, names)
        code = 0
    except subprocess.CalledProcessError as e:
        progress(f"error: git could not check out {e.cmd[-1]} ({e.stderr.strip()}); give a commit, branch or tag of "
                 "this repository")
        code = 3
    except (RuntimeError, TimeoutError) as e:
        progress(f"error: {e}; the measurements' logs are in {logs}")
    finally:
        for tree in trees.values():
            if tree != REPO:
                subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)],
                               capture_output=True)
        subprocess.run(["git", "-C", str(REPO), "worktree", "prune"], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)
        if code != 1:
            shutil.rmtree(logs, ignore_errors=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
