#!/usr/bin/env python
"""Projects benchmark (issue 28): a 50 MB, 1,000-file project reaching 20 workers, and a no-op call's round trip
in a cached project, each against an anchor measured in the same run.

    python tools/bench_projects.py                 # 50 MB, 1,000 files, 20 workers, 3 runs
    python tools/bench_projects.py --mb 10 --files 200 --workers 4 --runs 1 --rt 10   # a smoke run
    python tools/bench_projects.py --json          # every figure as JSON on stdout (progress stays on stderr)

Each run, on 127.0.0.1, in a folder of its own that is removed once the run is over (everything is kept on error
or --keep):

1. Starts a REAL master and `--workers` REAL workers (`--concurrency 1` each, default config otherwise: so each
   fetches into a cache of its own under the shared state_dir) and waits until all are online; pushes a project
   of `--files` files of random bytes, `--mb` MB in all (incompressible; a new project each run).
2. Anchor "bare": the same bytes, once per worker, over a bare ZeroMQ DEALER -> ROUTER (tools/benchkit/
   bare_fetch.py: one server process holding the archive in memory, one client process per worker, requests of
   1 MiB with 4 in flight, as a worker asks; no hashing, no disk). Timed from "go" until the last client has
   every byte. Then "bare + files", the floor of a copy on this disk: the same, each client then writing the
   archive's files into a folder of its own beside the workers' caches (one os.open, os.write, os.close a file;
   no check, no hash), until the last client is done.
3. Cold: one `--all` shell task (`true`) of the project: every worker fetches the archive from the master, checks
   its hash, unpacks and checks it, and runs the task. Timed from the submit until every child task is done.
4. Warm: the same again (every copy is cached and checked now). Anchor "plain fan-out": the same `--all` task
   without a project.
5. Round trips: `--rt` sequential submit -> result round trips of a no-op python call (`zmqgrid.samples:noop`)
   on one worker in the cached project and as many without one, in blocks of 5 in the order plain, project,
   project, plain, ... (after 10 of each not counted), each side's p50.

Ratios are taken within each run (cold / bare, warm / plain fan-out, project / plain p50) and reported as their
medians over `--runs`. Targets: cold <= 3x bare; project round trip <= 1.2x plain. Every process it starts is
stopped by its PID; each wait is bounded, and the whole run by `--deadline` seconds.
"""
from __future__ import annotations

import argparse
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __name__ == "__main__":   # `python tools/bench_projects.py` imports from the repository root
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from tools.benchkit.cluster import Cluster
from tools.benchkit.guard import guarded
from tools.benchkit.measure import cpu_seconds, machine_busy, median, pct
from tools.benchkit.processes import adopt, clean_env, free_port_block, spawn, stop_process
from tools.benchkit.report import command_line, emit, fmt, machine, progress, verdict
from zmqgrid.client import Client, build_spec
from zmqgrid.model import FINAL_STATES

BARE = Path(__file__).resolve().parent / "benchkit" / "bare_fetch.py"
NOOP = "zmqgrid.samples:noop"
COLD_TARGET, RT_TARGET = 3.0, 1.2
RT_WARMUP = 10
RT_BLOCK = 5


def make_project(folder: Path, files: int, total_mb: float, seed: int) -> int:
    """`files` files of random bytes, `total_mb` MB in all, in a few folders; returns the bytes written."""
    rng = random.Random(seed)
    each = int(total_mb * 1_000_000) // files
    for i in range(files):
        path = folder / f"data{i % 10}" / f"part{i:04d}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.randbytes(each))
    (folder / "README.txt").write_text(f"bench project, seed {seed}\n")
    return each * files


def wait_done(client: Client, ids: list[str], timeout_s: float) -> None:
    results = client.wait(ids, timeout_s=timeout_s)
    for _ in range(10):   # a summary read before its turn's commit may not be final yet: ask again
        pending = [i for i, r in results.items() if r.get("state") not in FINAL_STATES]
        if not pending:
            break
        results.update(client.wait(pending, timeout_s=timeout_s))
    bad = {i: r.get("state") for i, r in results.items() if r.get("state") != "done"}
    if bad or len(results) != len(ids):
        raise RuntimeError(f"{len(bad)} of {len(ids)} tasks did not end done: {list(bad.items())[:3]}")


def fan_out(client: Client, cluster: Cluster, timeout_s: float, **spec: object) -> tuple[float, float, float]:
    """Seconds from the submit of one `--all` shell task until every worker's child is done, and the CPU seconds
    the master and the workers (with their children) spent meanwhile."""
    master, workers = [cluster.master.pid], [p.pid for p in cluster.workers.values()]
    c0 = cpu_seconds(master, False), cpu_seconds(workers, True)
    t0 = time.perf_counter()
    ids = client.submit([build_spec(shell="true", all=True, **spec)], notify=True)
    if len(ids) != len(workers):
        raise RuntimeError(f"--all reached {len(ids)} workers, not {len(workers)}")
    wait_done(client, ids, timeout_s)
    took = time.perf_counter() - t0
    return took, cpu_seconds(master, False) - c0[0], cpu_seconds(workers, True) - c0[1]


def bare(tmp: Path, archive: Path, workers: int, timeout_s: float, files: bool = False) -> tuple[float, float]:
    """Seconds for `workers` clients to each fetch `archive` over a bare DEALER -> ROUTER (and with `files`, write
    its files into a folder of their own), from "go" to the last, and the CPU seconds the server and the clients
    spent from "go" on (the clients': their whole life, which their start-up adds to)."""
    env = clean_env()
    port = free_port_block(1)
    server = spawn([sys.executable, str(BARE), "serve", str(port), str(archive)], cwd=tmp, env=env,
                   log=tmp / "bare-server.log")
    clients: list[subprocess.Popen] = []
    try:
        deadline = time.monotonic() + timeout_s
        while "ready" not in (tmp / "bare-server.log").read_text():
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the bare server did not start: {(tmp / 'bare-server.log').read_text()[-500:]}")
            time.sleep(0.05)
        size = archive.stat().st_size
        folders = [tmp / f"bare-files-{j}" for j in range(workers)] if files else []
        for j in range(workers):
            clients.append(adopt(subprocess.Popen(
                [sys.executable, str(BARE), "fetch", f"tcp://127.0.0.1:{port}", str(size), *map(str, folders[j:j + 1])],
                cwd=tmp, env=env,
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True)))
        for c in clients:   # bounded by --deadline (the guard's alarm) and the clients' own receive timeout
            if c.stdout.readline().strip() != "ready":
                raise RuntimeError("a bare client did not connect")
        server_cpu = cpu_seconds([server.pid], False)
        t0 = time.perf_counter()
        for c in clients:
            c.stdin.write("go\n")
            c.stdin.flush()
        cpu = 0.0
        for c in clients:
            line = c.stdout.readline().split()
            if not line or line[0] != "done":
                raise RuntimeError("a bare client did not finish")
            cpu += float(line[2])
        took = time.perf_counter() - t0
        return took, cpu + cpu_seconds([server.pid], False) - server_cpu
    finally:
        for proc in [*clients, server]:
            stop_process(proc, grace_s=5)
        for j in range(workers if files else 0):
            shutil.rmtree(tmp / f"bare-files-{j}", ignore_errors=True)


def round_trips(client: Client, device: str, project: str, n: int, timeout_s: float) -> dict:
    """p50 ms of `n` no-op calls on `device` per side, plain and in `project`, in blocks of RT_BLOCK in the order
    plain, project, project, plain, ... (so both sides share the machine's drift)."""
    def one(i: int, in_project: bool) -> float:
        spec = build_spec(python=NOOP, args=[i], device=device, **({"project": project} if in_project else {}))
        t0 = time.perf_counter()
        result = client.run(spec, timeout_s=timeout_s)
        took = (time.perf_counter() - t0) * 1000
        if result.get("state") != "done":
            raise RuntimeError(f"a round trip ended {result.get('state')}: {result.get('error')}")
        return took

    for i in range(RT_WARMUP):
        one(i, False)
        one(i, True)
    times: dict[bool, list[float]] = {False: [], True: []}
    for block in range(max(2, n // RT_BLOCK)):
        in_project = block % 4 in (1, 2)
        times[in_project] += [one(i, in_project) for i in range(RT_BLOCK)]
    plain, proj = pct(times[False], 50), pct(times[True], 50)
    return {"plain_p50_ms": plain, "project_p50_ms": proj, "rt_ratio": proj / plain, "rt_each": len(times[True])}


def run_once(a: argparse.Namespace, tmp: Path, k: int) -> dict:
    folder = tmp / f"run{k}"
    folder.mkdir()
    cluster = Cluster(folder, concurrency=1, prefetch=None, workers=a.workers, log_level="WARNING")
    try:
        busy = machine_busy()
        progress(f"run {k}/{a.runs}: machine {fmt(busy)}% busy; starting a master and {a.workers} workers ...")
        cluster.start(timeout_s=a.step_timeout)
        name = f"bench{k}"
        source = folder / name
        size = make_project(source, a.files, a.mb, seed=k)
        with Client(cluster.url, timeout_s=a.step_timeout) as client:
            t0 = time.perf_counter()
            pushed = client.push_project(str(source))
            push_s = time.perf_counter() - t0
            archive = cluster.db.parent / f"{cluster.db.name}.projects" / f"{pushed['version']}.tar"
            progress(f"run {k}/{a.runs}: pushed {pushed['files']} files, {pushed['size'] / 1e6:.1f} MB in "
                     f"{push_s:.2f}s; bare DEALER -> ROUTER to {a.workers} clients ...")
            bare_s, bare_cpu = bare(folder, archive, a.workers, a.step_timeout)
            progress(f"run {k}/{a.runs}: bare {bare_s:.2f}s ({a.workers * pushed['size'] / bare_s / 1e6:.0f} MB/s, "
                     f"{bare_cpu:.1f} CPU s); bare + files ...")
            files_s = bare(folder, archive, a.workers, a.step_timeout, files=True)[0]
            progress(f"run {k}/{a.runs}: bare + files {files_s:.2f}s; cold --all ...")
            cold_s, cold_master_cpu, cold_workers_cpu = fan_out(client, cluster, a.step_timeout, project=name)
            warm_s = fan_out(client, cluster, a.step_timeout, project=name)[0]
            plain_s = fan_out(client, cluster, a.step_timeout)[0]
            progress(f"run {k}/{a.runs}: cold {cold_s:.2f}s ({cold_s / bare_s:.2f}x bare, {cold_s / files_s:.2f}x "
                     f"bare + files; CPU s: master "
                     f"{cold_master_cpu:.1f}, workers {cold_workers_cpu:.1f}), warm {warm_s:.3f}s, plain fan-out "
                     f"{plain_s:.3f}s; round trips ...")
            rt = round_trips(client, "bench-1", name, a.rt, a.step_timeout)
            progress(f"run {k}/{a.runs}: round trip p50 plain {rt['plain_p50_ms']:.2f} ms, in the project "
                     f"{rt['project_p50_ms']:.2f} ms ({rt['rt_ratio']:.3f}x)")
    finally:
        cluster.stop()
    shutil.rmtree(folder, ignore_errors=True)
    return {"busy_before_pct": busy, "bytes": pushed["size"], "files": pushed["files"], "data_bytes": size,
            "push_s": push_s, "bare_s": bare_s, "bare_cpu_s": bare_cpu, "bare_files_s": files_s, "cold_s": cold_s,
            "cold_master_cpu_s": cold_master_cpu, "cold_workers_cpu_s": cold_workers_cpu, "warm_s": warm_s, "plain_fan_out_s": plain_s,
            "cold_ratio": cold_s / bare_s, "cold_files_ratio": cold_s / files_s, "warm_ratio": warm_s / plain_s, **rt}


def summarize(runs: list[dict]) -> dict:
    keys = ("cold_ratio", "cold_files_ratio", "warm_ratio", "rt_ratio", "bare_s", "bare_files_s", "cold_s", "warm_s",
            "plain_fan_out_s", "push_s", "plain_p50_ms", "project_p50_ms", "bare_cpu_s", "cold_master_cpu_s", "cold_workers_cpu_s")
    out = {k: median([r[k] for r in runs]) for k in keys}
    out["runs"] = {k: [round(r[k], 3) for r in runs] for k in keys}
    out["cold_met"] = out["cold_ratio"] <= COLD_TARGET
    out["rt_met"] = out["rt_ratio"] <= RT_TARGET
    return out


def report(result: dict) -> None:
    s, a = result["summary"], result["args"]
    print(f"\nProjects: {a['mb']} MB in {a['files']} files to {a['workers']} workers; medians of {a['runs']} runs")
    print(f"  command: {result['command']}")
    print(f"  machine: {result['machine']['cpus']} CPUs, {result['machine']['cpu_model']}, commit "
          f"{result['machine']['zmqgrid_commit']}; busy before each run: {[r['busy_before_pct'] for r in result['runs']]}%")
    rows = [("cold --all / bare DEALER->ROUTER", s["cold_ratio"], f"<= {COLD_TARGET:g}x", verdict(s["cold_met"])),
            ("cold --all / bare + files", s["cold_files_ratio"], "", ""),
            ("warm --all / plain --all", s["warm_ratio"], "", ""),
            ("round trip p50, project / none", s["rt_ratio"], f"<= {RT_TARGET:g}x", verdict(s["rt_met"]))]
    for label, value, target, met in rows:
        print(f"  {label:36s} {value:6.2f}x   runs {s['runs'][label_key(label)]}  {target} {met}")
    print(f"  seconds: bare {s['bare_s']:.2f}, bare + files {s['bare_files_s']:.2f}, cold {s['cold_s']:.2f}, warm {s['warm_s']:.3f}, plain fan-out "
          f"{s['plain_fan_out_s']:.3f}, push {s['push_s']:.2f}; round trip p50 plain {s['plain_p50_ms']:.2f} ms, "
          f"project {s['project_p50_ms']:.2f} ms")
    print(f"  CPU seconds: bare (server and clients) {s['bare_cpu_s']:.1f}; cold: master {s['cold_master_cpu_s']:.1f}, "
          f"workers {s['cold_workers_cpu_s']:.1f}")


def label_key(label: str) -> str:
    if label.startswith("cold"):
        return "cold_files_ratio" if "files" in label else "cold_ratio"
    return "warm_ratio" if label.startswith("warm") else "rt_ratio"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--mb", type=float, default=50.0, help="the project's size in MB (default 50)")
    p.add_argument("--files", type=int, default=1000, help="its number of files (default 1,000)")
    p.add_argument("--workers", type=int, default=20, help="real workers (default 20)")
    p.add_argument("--runs", type=int, default=3, help="runs, each on a fresh cluster (default 3)")
    p.add_argument("--rt", type=int, default=100, help="counted round trips per side and run (default 100)")
    p.add_argument("--step-timeout", type=float, default=300.0, help="bound of each wait, in seconds")
    p.add_argument("--deadline", type=float, default=1800.0, help="bound of the whole run, in seconds")
    p.add_argument("--json", action="store_true", help="every figure as JSON on stdout")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder")
    a = p.parse_args(argv)
    if a.mb <= 0 or a.files < 1 or a.workers < 1 or a.runs < 1 or a.rt < 4:
        p.error("--mb, --files, --workers and --runs must be positive, --rt at least 4")
    tmp = Path(tempfile.mkdtemp(prefix="zmqgrid-bench-projects-"))
    runs: list[dict] = []

    def body() -> None:
        for k in range(1, a.runs + 1):
            runs.append(run_once(a, tmp, k))
        emit(a, {"command": command_line(__file__, argv), "machine": machine(), "args": vars(a), "runs": runs,
                 "summary": summarize(runs)}, report)

    return guarded(a, tmp, body)


if __name__ == "__main__":
    sys.exit(main())
