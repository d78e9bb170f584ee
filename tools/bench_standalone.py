"""Standalone's master thread polling awake or asleep: what `distribute --mode standalone --no-dashboard` gives.

Each run starts `python main.py distribute --mode standalone --no-dashboard --workers 2` twice, once as it starts
(the master thread polls awake after busy turns: awake_poll_us 800) and once with ZMQGRID_AWAKE_POLL_US=0 (asleep
between messages, what it does beside the dashboard or the demo), in alternating order, and measures on each:
`Client.map` of N no-op calls + `wait` (tasks/s) and a sequential round trip (`Client.run` of a no-op, p50 ms).
The figures are the medians over the runs of each run's awake/asleep ratio.

    python tools/bench_standalone.py [--n 20000] [--lat 300] [--runs 3] [--json]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tools.benchkit.measure import median, pct, poll   # noqa: E402
from tools.benchkit.processes import REPO, clean_env, free_port_block, spawn, stop_all, stop_process  # noqa: E402
from zmqgrid.client import Client, build_spec  # noqa: E402

NOOP = "zmqgrid.samples:noop"


def measure(tmp: Path, awake: bool, n: int, lat: int, deadline: float) -> dict:
    port = free_port_block()
    folder = Path(tempfile.mkdtemp(dir=tmp))
    env = clean_env(ZMQGRID_DB_PATH=str(folder / "ledger.db"), ZMQGRID_STATE_DIR=str(folder / "state"),
                    **({} if awake else {"ZMQGRID_AWAKE_POLL_US": "0"}))
    url = f"tcp://127.0.0.1:{port}"
    proc = spawn([sys.executable, str(REPO / "main.py"), "distribute", "--mode", "standalone", "--no-dashboard",
                  "--workers", "2", "--port", str(port), "--log-file", str(folder / "s.log")], cwd=folder, env=env,
                 log=folder / "s.out")
    try:
        with Client(url, timeout_s=30) as client:
            poll(lambda: sum(d["state"] == "online" for d in client.devices()) == 2, 60, "two workers online", 0.1)
            client.wait(client.map(NOOP, [(i,) for i in range(500)]), 60)   # warm the pools
            start = time.perf_counter()
            ids = client.map(NOOP, [(i,) for i in range(n)])
            client.wait(ids, max(1.0, deadline - time.monotonic()))
            rate = n / (time.perf_counter() - start)
            trips = []
            for _ in range(lat):
                began = time.perf_counter()
                client.run(build_spec(python=NOOP, args=[1]), timeout_s=30)
                trips.append((time.perf_counter() - began) * 1000)
        return {"rate": rate, "p50_ms": pct(trips, 50)}
    finally:
        stop_process(proc)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000, help="no-op calls per Client.map [20000]")
    parser.add_argument("--lat", type=int, default=300, help="sequential round trips per measurement [300]")
    parser.add_argument("--runs", type=int, default=3, help="runs (each: awake and asleep, alternating) [3]")
    parser.add_argument("--deadline", type=float, default=900.0, help="seconds for the whole benchmark [900]")
    parser.add_argument("--json", action="store_true")
    a = parser.parse_args(argv)
    deadline = time.monotonic() + a.deadline
    rows = []
    try:
        with tempfile.TemporaryDirectory(prefix="bench-standalone-") as tmp:
            for run in range(a.runs):
                order = (True, False) if run % 2 == 0 else (False, True)
                got = {awake: measure(Path(tmp), awake, a.n, a.lat, deadline) for awake in order}
                rows.append({"awake": got[True], "asleep": got[False],
                             "rate_ratio": got[True]["rate"] / got[False]["rate"],
                             "p50_ratio": got[True]["p50_ms"] / got[False]["p50_ms"]})
                print(f"run {run + 1}: awake {got[True]['rate']:.0f}/s p50 {got[True]['p50_ms']:.2f} ms; asleep "
                      f"{got[False]['rate']:.0f}/s p50 {got[False]['p50_ms']:.2f} ms", file=sys.stderr)
    finally:
        stop_all()
    result = {"command": "python tools/bench_standalone.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "runs": rows, "rate_ratio": median([r["rate_ratio"] for r in rows]),
              "p50_ratio": median([r["p50_ratio"] for r in rows])}
    if a.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"awake / asleep, medians of {len(rows)} runs: throughput {result['rate_ratio']:.2f}x, "
              f"round trip p50 {result['p50_ratio']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
