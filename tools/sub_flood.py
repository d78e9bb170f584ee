#!/usr/bin/env python
"""A hostile subscriber against a real master: N random subscriptions of S bytes on its PUB, and the master's RSS.

    python tools/sub_flood.py                              # 20,000 random 1 KiB topics, this checkout's master
    python tools/sub_flood.py --count 20000 --size 60 --valid   # topics of an allowed shape: device.<hex>
    python tools/sub_flood.py --repo /path/to/other/checkout    # the master of another checkout (before/after)

The master (`python -m zmqgrid distribute --mode master`, open, 127.0.0.1, a temporary folder) runs from `--repo`;
the subscriber runs in a process of its own (libzmq's SUB keeps its own copy of what it subscribes to). Reported:
the master's RSS (psutil) before, at its peak while the subscriber is connected, and 5 s after it left, plus the
master's `subscriptions` counters if it has them. The subscriber reconnects by itself if the master closes it.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parents[1]
SUBSCRIBER = """
import os, sys, time, zmq
ctx = zmq.Context(); s = ctx.socket(zmq.SUB); s.linger = 0; s.sndhwm = 0
s.connect(sys.argv[1])
count, size, valid = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"
for _ in range(count):
    s.setsockopt(zmq.SUBSCRIBE, b"device." + os.urandom(size // 2).hex().encode()[:size - 7] if valid
                 else os.urandom(size))
print("subscribed", flush=True)
time.sleep(float(sys.argv[5]))
"""


def status(repo: Path, port: int) -> dict:
    sys.path.insert(0, str(repo))
    from zmqgrid.client import Client
    with Client(f"tcp://127.0.0.1:{port}", timeout_s=5) as c:
        return c.status()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=20_000)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--valid", action="store_true", help="topics device.<hex> instead of random bytes")
    ap.add_argument("--hold", type=float, default=10.0, help="seconds the subscriber stays connected after sending")
    ap.add_argument("--repo", type=Path, default=HERE)
    args = ap.parse_args()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZMQGRID_")}
    env["PYTHONPATH"] = str(args.repo)
    sys.path.insert(0, str(HERE))
    from tests.helpers import free_port_block
    port = free_port_block()
    with tempfile.TemporaryDirectory() as tmp:
        master = subprocess.Popen([sys.executable, "-m", "zmqgrid", "distribute", "--mode", "master", "--port",
                                   str(port), "--db", "ledger.db", "--log-file", "master.log"], cwd=tmp, env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            proc = psutil.Process(master.pid)
            deadline = time.monotonic() + 20
            while True:
                try:
                    status(args.repo, port)
                    break
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
            rss = lambda: proc.memory_info().rss / 2**20   # noqa: E731
            before = rss()
            sub = subprocess.Popen([sys.executable, "-c", SUBSCRIBER, f"tcp://127.0.0.1:{port + 1}", str(args.count),
                                    str(args.size), "1" if args.valid else "0", str(args.hold)], env=env)
            peak = before
            while sub.poll() is None:
                peak = max(peak, rss())
                time.sleep(0.05)
            time.sleep(5)
            after = rss()
            counters = status(args.repo, port).get("subscriptions")
        finally:
            master.terminate()
            master.wait(10)
    print(json.dumps({"count": args.count, "size": args.size, "valid": args.valid, "repo": str(args.repo),
                      "rss_mib": {"before": round(before, 1), "peak": round(peak, 1), "after": round(after, 1)},
                      "subscriptions": counters}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
