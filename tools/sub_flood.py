#!/usr/bin/env python
"""A hostile subscriber against a real master: N random subscriptions of S bytes on its PUB, and the master's RSS.

    python tools/sub_flood.py                              # 20,000 random 1 KiB topics, this checkout's master
    python tools/sub_flood.py --count 20000 --size 60 --valid   # topics of an allowed shape: device.<hex>
    python tools/sub_flood.py --repo /path/to/other/checkout    # the master of another checkout (before/after)

The master (`python -m zmqgrid distribute --mode master`, open, 127.0.0.1, a temporary folder, tools/benchkit's
Cluster) runs from `--repo`, and is asked for its status by this checkout's client;
the subscriber runs in a process of its own (libzmq's SUB keeps its own copy of what it subscribes to). Reported:
the master's RSS (psutil) before, at its peak while the subscriber is connected, and 5 s after it left, plus the
master's `subscriptions` counters if it has them. The subscriber reconnects by itself if the master closes it.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

if __name__ == "__main__":   # `python tools/sub_flood.py` imports from the repository root, as `python -m tools.sub_flood` does
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from tests.helpers import REPO
from tools.benchkit.cluster import Cluster
from tools.benchkit.processes import adopt, stop_all
from zmqgrid.client import Client

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


def status(url: str) -> dict:
    with Client(url, timeout_s=5) as c:
        return c.status()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=20_000)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--valid", action="store_true", help="topics device.<hex> instead of random bytes")
    ap.add_argument("--hold", type=float, default=10.0, help="seconds the subscriber stays connected after sending")
    ap.add_argument("--repo", type=Path, default=REPO)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cluster = Cluster(Path(tmp), workers=0, prefetch=None, log_level=None, repo=args.repo.resolve())
        try:
            cluster.start()
            port = cluster.port
            proc = psutil.Process(cluster.master.pid)
            rss = lambda: proc.memory_info().rss / 2**20   # noqa: E731
            before = rss()
            sub = adopt(subprocess.Popen([sys.executable, "-c", SUBSCRIBER, f"tcp://127.0.0.1:{port + 1}",
                                          str(args.count), str(args.size), "1" if args.valid else "0", str(args.hold)],
                                         env=cluster.env))
            peak = before
            while sub.poll() is None:
                peak = max(peak, rss())
                time.sleep(0.05)
            time.sleep(5)
            after = rss()
            counters = status(cluster.url).get("subscriptions")
        finally:
            cluster.stop()
            stop_all()
    print(json.dumps({"count": args.count, "size": args.size, "valid": args.valid, "repo": str(args.repo),
                      "rss_mib": {"before": round(before, 1), "peak": round(peak, 1), "after": round(after, 1)},
                      "subscriptions": counters}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
