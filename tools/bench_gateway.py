#!/usr/bin/env python
"""HTTP gateway benchmark (issue 29): a `/metrics` scrape against a master with 1,000 devices and a big ledger.

    python tools/bench_gateway.py                          # 1,000 simulated devices, a 1,000,000-task ledger
    python tools/bench_gateway.py --tasks 100000 --json    # a smaller ledger; every figure as JSON on stdout

What it does, all on 127.0.0.1, in a temporary folder removed afterwards (kept on error or --keep):

1. Builds the ledger as tools/bench_ledger.py does (`build_ledger`: zmqgrid's migrations, then `executemany`).
2. Starts the REAL master on it (retention off) and `--devices` simulated workers (tools/benchkit/fleetsim.py: each
   what a real worker is on the wire, with a heartbeat of psutil figures), and waits until all are online.
3. Starts the REAL gateway (`python -m zmqgrid http --port P --master URL`, no token: loopback).
4. Times `GET /metrics` from this process over HTTP (a fresh connection each, as a Prometheus scrape is): "cold"
   scrapes more than `metrics_max_age_s` (1 s) apart, so each makes the gateway ask the master for `metrics`;
   "warm" scrapes back to back, served from the gateway's last answer. Parses the last body with
   prometheus-client's parser (families, samples). For scale, times the `metrics` query alone through
   `zmqgrid.Client`, and prometheus-client's rendering of its answer in this process; as the in-run anchor, the
   `status` and `devices` queries a reading took before (the whole-ledger count and the full device rows).
5. Starts a second gateway with `--metrics-refresh` (`--refresh`, 2 s) and times scrapes 1.1 s apart: each is
   served from the background reading.

Every process it starts is stopped by its PID; the run is bounded by `--deadline`. Target: a scrape <= 100 ms (p95).
"""
from __future__ import annotations

import argparse
import http.client
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

if __name__ == "__main__":   # `python tools/bench_gateway.py` imports from the repository root
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import psutil
from prometheus_client.parser import text_string_to_metric_families

from tools.bench_ledger import Master, build_ledger
from tools.benchkit.guard import guarded
from tools.benchkit.measure import pct, poll
from tools.benchkit.processes import clean_env, free_port_block, spawn, stop_process
from tools.benchkit.report import emit, machine, progress
from zmqgrid.client import Client
from zmqgrid.gateway.metrics import Metrics, Reading

TARGET_MS = 100.0


def scrape(port: int) -> tuple[float, bytes]:
    """One GET /metrics on a new connection: (milliseconds until the whole body was read, the body)."""
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", "/metrics")
        response = conn.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"/metrics answered {response.status}: {body[:200]!r}")
    finally:
        conn.close()
    return (time.perf_counter() - t0) * 1000, body


def figures(samples: list[float]) -> dict:
    return {"n": len(samples), "median_ms": round(statistics.median(samples), 2),
            "p95_ms": round(pct(samples, 95), 2), "max_ms": round(max(samples), 2)}


def run(a: argparse.Namespace, tmp: Path) -> dict:
    result: dict = {"machine": machine(), "tasks": a.tasks, "devices": a.devices}
    db = tmp / "ledger.db"
    progress(f"building a ledger of {a.tasks:,} tasks ...")
    t0 = time.perf_counter()
    build_ledger(db, a.tasks, days=60)
    result["ledger_build_s"] = round(time.perf_counter() - t0, 1)
    master = Master(tmp, db)
    result["master_start_s"] = round(master.start(a.start_timeout), 2)
    progress(f"master on {master.url}; {a.devices} simulated devices ...")
    env = clean_env()
    spawn([sys.executable, "-m", "tools.benchkit.fleetsim", "--master", master.url, "--prefix", "sim-",
           "--count", str(a.devices), "--ramp", str(a.ramp), "--seed", "29"], cwd=tmp, env=env, log=tmp / "sim.out")
    with Client(master.url, timeout_s=30) as c:
        poll(lambda: c.status()["devices"].get("online", 0) >= a.devices, a.ramp + 120,
             f"{a.devices} devices online", 0.5)
        status = c.status()
        result["ledger_tasks"] = sum(status["tasks"].values())
        result["devices_online"] = status["devices"]["online"]
        # The in-run anchor: what a reading cost before the `metrics` query, on this machine at this moment (the
        # whole-ledger `status` and the full `devices` rows, which the dashboard and the CLI still ask for), timed
        # in turn with it, so that a busy moment of the machine weighs on both alike.
        rounds = [(_timed(c.metrics), _timed(c.status), _timed(c.devices)) for _ in range(a.scrapes)]
        for n, key in enumerate(("master_metrics_query", "anchor_status_query", "anchor_devices_query")):
            result[key] = figures([r[n] for r in rounds])
        # The gateway's own share of a cold scrape, in-process: rendering two answers 1.1 s apart in turn (each
        # device's CPU and memory figures change between them, as between two cold scrapes), and with nothing kept.
        collector = Metrics(1.0)
        answers = [c.metrics()]
        time.sleep(1.1)
        answers.append(c.metrics())

        def render(n: int, keep: bool = True) -> float:
            collector.collector.reading = Reading(answers[n % 2], True, time.monotonic())
            if not keep:
                collector.texts.kept.clear()
            return _timed(collector.render)
        render(1)
        result["render_alone"] = figures([render(n) for n in range(a.scrapes)])
        result["render_alone_uncached"] = figures([render(n, keep=False) for n in range(a.scrapes)])
    port, gateway = start_gateway(master.url, tmp, env, "on-demand")
    progress(f"{a.scrapes} cold scrapes (1.1 s apart), then {a.scrapes} warm ones ...")
    cold = []
    body = b""
    cpu = []   # the gateway's own CPU time per cold scrape: what a busy machine stretches into the wall time above
    for _ in range(a.scrapes):
        time.sleep(1.1)   # past metrics_max_age_s: each of these asks the master
        before = _cpu_ms(gateway.pid)
        ms, body = scrape(port)
        cpu.append(_cpu_ms(gateway.pid) - before)
        cold.append(ms)
    # psutil reads CPU time in clock ticks (10 ms): the mean over all the scrapes is the finer figure
    result["gateway_cpu_per_cold_scrape"] = dict(figures(cpu), mean_ms=round(sum(cpu) / len(cpu), 1))
    warm = [scrape(port)[0] for _ in range(a.scrapes)]
    stop_process(gateway)
    result["inside_gateway"] = inside(tmp / "gateway-on-demand.log")
    port, gateway = start_gateway(master.url, tmp, env, "background", "--metrics-refresh", str(a.refresh))
    progress(f"{a.scrapes} scrapes 1.1 s apart of a gateway with --metrics-refresh {a.refresh:g} ...")
    time.sleep(a.refresh + 1)
    background = []
    for _ in range(a.scrapes):
        time.sleep(1.1)
        background.append(scrape(port)[0])
    stop_process(gateway)
    result["scrape_background"] = figures(background)
    families = list(text_string_to_metric_families(body.decode()))
    result["scrape_cold"] = figures(cold)
    result["scrape_warm"] = figures(warm)
    result["body_bytes"] = len(body)
    result["families"] = len(families)
    result["samples"] = sum(len(f.samples) for f in families)
    result["target_met"] = {"on_demand": result["scrape_cold"]["p95_ms"] <= TARGET_MS,
                            "background": result["scrape_background"]["p95_ms"] <= TARGET_MS}
    result["load_average"] = [round(x, 1) for x in os.getloadavg()]   # the machine is shared: say how busy it was
    master.stop()
    return result


def start_gateway(master_url: str, tmp: Path, env: dict, name: str, *extra: str):
    """The real gateway (no token: loopback) as a child process, once it answers; (its port, the process)."""
    port = free_port_block(1)
    proc = spawn([sys.executable, "-m", "zmqgrid", "http", "--port", str(port), "--master", master_url,
                  "--tokens", str(tmp / "no-tokens.json"), "--log-file", str(tmp / f"gateway-{name}.log"),
                  "--log-level", "DEBUG", *extra],
                 cwd=tmp, env=env, log=tmp / f"gateway-{name}.out")
    poll(lambda: _answers(port), 30, "the gateway to answer", 0.1)
    return port, proc


def inside(log: Path) -> dict:
    """The parts of each cold reading as the gateway timed them (its DEBUG lines): the master's `metrics` answer as
    its Client waited for it, and the rendering."""
    parts: dict[str, list[float]] = {"query_ms": [], "render_ms": []}
    for line in log.read_text().splitlines():
        if "metrics reading " in line:
            for word in line.split():
                key, _, value = word.partition("=")
                if key in parts:
                    parts[key].append(float(value))
    return {key: figures(values) for key, values in parts.items() if values}


def _cpu_ms(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return (times.user + times.system) * 1000


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1000


def _answers(port: int) -> bool:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        conn.request("GET", "/healthz")
        ok = conn.getresponse().status == 200
        conn.close()
        return ok
    except OSError:
        return False


def report(r: dict) -> None:
    print(f"ledger {r['ledger_tasks']:,} tasks (built in {r['ledger_build_s']} s), {r['devices_online']} devices online")
    print(f"{'':34} {'median':>9} {'p95':>9} {'max':>9}")
    for key, label in (("scrape_cold", "GET /metrics, asking the master"), ("scrape_warm", "GET /metrics, within 1 s"),
                       ("scrape_background", "GET /metrics, --metrics-refresh"),
                       ("master_metrics_query", "Client.metrics() alone"),
                       ("anchor_status_query", "anchor: Client.status() alone"),
                       ("anchor_devices_query", "anchor: Client.devices() alone"),
                       ("gateway_cpu_per_cold_scrape", "gateway CPU time per cold scrape"),
                       ("render_alone", "render alone (unchanged families kept)"),
                       ("render_alone_uncached", "render alone, every family")):
        f = r[key]
        print(f"{label:34} {f['median_ms']:>7.1f}ms {f['p95_ms']:>7.1f}ms {f['max_ms']:>7.1f}ms")
    for key, f in r["inside_gateway"].items():
        print(f"{'  in the gateway: ' + key.removesuffix('_ms'):34} {f['median_ms']:>7.1f}ms {f['p95_ms']:>7.1f}ms {f['max_ms']:>7.1f}ms")
    print(f"body {r['body_bytes']:,} bytes, {r['families']} families, {r['samples']:,} samples")
    for mode, met in r["target_met"].items():
        print(f"target: a scrape <= {TARGET_MS:g} ms (p95), {mode}: {'MET' if met else 'NOT MET'}")
    print(f"load average during the run: {r['load_average']}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", type=int, default=1_000_000, help="tasks in the ledger [1000000]")
    ap.add_argument("--devices", type=int, default=1000, help="simulated devices [1000]")
    ap.add_argument("--ramp", type=float, default=10.0, help="seconds over which the devices register [10]")
    ap.add_argument("--scrapes", type=int, default=20, help="scrapes per case [20]")
    ap.add_argument("--refresh", type=float, default=2.0, help="the background gateway's --metrics-refresh [2]")
    ap.add_argument("--start-timeout", type=float, default=120, help="seconds for the master to answer [120]")
    ap.add_argument("--deadline", type=float, default=900, help="seconds for the whole run [900]")
    ap.add_argument("--json", action="store_true", help="print every figure as JSON on stdout")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder (ledger, logs)")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="zmqgrid-gateway-"))
    result: dict = {}
    code = guarded(args, tmp, lambda: result.update(run(args, tmp)), kept="ledger and logs")
    if code:
        return code
    emit(args, result, report)
    return 0 if any(result["target_met"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
