#!/usr/bin/env python
"""Long fuzz run against a real master, outside the default test suite (README, "Fuzzing").

    python tools/fuzz_long.py                          # 200,000 frames or 15 minutes, whichever comes first
    python tools/fuzz_long.py --frames 20000 --seconds 60 --seed 7
    python tools/fuzz_long.py --json                   # the summary as JSON on stdout (progress on stderr)
    python tools/fuzz_long.py --hostile                # hostile values in valid messages (below)
    python tools/fuzz_long.py --hostile --curve        # the same with CURVE on, from an accepted worker key

A master (`python -m zmqgrid distribute --mode master`) runs on 127.0.0.1 in a temporary folder, with one
queued task in its ledger and no worker. Frames from tests/fuzzframes.py (random bytes, random msgpack under
valid headers, type-confused fields, mutated valid encodings of every kind) go alternately to its ROUTER (from
a raw DEALER, replaced by a fresh identity every 5,000 frames) and its heartbeat PULL (raw PUSH). Valid
Submit, Control and Register messages are not sent: they are requests, and the ledger must not change.

Every 10,000 frames it checks that the master is alive and answers `status`, and prints progress. At the end
it reports: frames sent, frames the local decoder refuses, the growth of the master's `bad_messages`, the
master's memory, log lines at ERROR (a handler that raised: a bug even if the master survived), whether the
ledger changed, and whether the master died. Exit 0 only when nothing was found.

With --hostile it sends valid messages of every kind with hostile values in one to three fields (tests/hostile.py:
the wrong type, 2^63, -1, NaN, nested 1,000 deep, 10 MB, control characters), from a raw worker `fz1` holding a
live attempt, beside a real worker and a bystander client. Every 200 messages: the master is alive and answers,
and the bystander's tasks are acknowledged and done. At the end: the ledger's integrity and value sizes, the
master's log (tracebacks, failed commits, control characters, forged lines, size) and its memory growth.
"""
from __future__ import annotations

import argparse
import json
import random
import shutil
import signal
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import psutil
import zmq

if __name__ == "__main__":   # `python tools/fuzz_long.py` imports from the repository root, as `python -m tools.fuzz_long` does
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from tests import fuzzframes, hostile
from tests.helpers import Harness
from zmqgrid import protocol as p
from zmqgrid.client import Client, build_spec

TABLES = ("tasks", "attempts", "devices", "task_output", "heartbeats", "schedules")


def ledger(db: Path) -> dict:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return {t: conn.execute(f"SELECT * FROM {t} ORDER BY rowid").fetchall() for t in TABLES}
    finally:
        conn.close()


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run(frames_wanted: int, seconds: float, seed: int, keep: bool) -> dict:
    folder = Path(tempfile.mkdtemp(prefix="zmqgrid-fuzz-"))
    harness = Harness(folder)
    rng = random.Random(seed)
    ctx = zmq.Context()
    summary: dict = {"seed": seed, "frames_sent": 0, "router_frames": 0, "pull_frames": 0,
                     "refused_by_local_decoder": 0, "skipped_valid_requests": 0, "router_answers": 0}
    found: list[str] = []
    try:
        harness.start_master()
        master = psutil.Process(harness.master.pid)
        with Client(harness.url, timeout_s=10) as client:
            seeded = client.submit(build_spec(shell="echo seeded"))[0]
            bad_before = client.status()["bad_messages"]
        before, rss_before = ledger(harness.db), master.memory_info().rss
        push = ctx.socket(zmq.PUSH)
        push.setsockopt(zmq.LINGER, 0)
        push.connect(f"tcp://127.0.0.1:{harness.port + 2}")
        dealer = None
        started = time.monotonic()
        while summary["frames_sent"] < frames_wanted and time.monotonic() - started < seconds:
            n = summary["frames_sent"]
            if n % 5000 == 0:
                if dealer is not None:
                    summary["router_answers"] += drain(dealer, 1.0)
                    dealer.close(0)
                dealer = ctx.socket(zmq.DEALER)
                dealer.setsockopt(zmq.LINGER, 0)
                dealer.connect(harness.url)
            frames = fuzzframes.frames(rng)
            if fuzzframes.accepted_as_request(frames):
                summary["skipped_valid_requests"] += 1
                continue
            to_router = n % 2 == 0
            try:
                msg = p.decode(frames)
                refused = not to_router and not isinstance(msg, p.Heartbeat)
            except p.ProtocolError:
                refused = True
            summary["refused_by_local_decoder"] += refused
            (dealer if to_router else push).send_multipart(frames)
            summary["router_frames" if to_router else "pull_frames"] += 1
            summary["frames_sent"] += 1
            if n % 64 == 0:
                summary["router_answers"] += drain(dealer, 0)
            if (n + 1) % 10_000 == 0:
                if harness.master.poll() is not None:
                    found.append(f"the master exited with {harness.master.returncode}")
                    break
                with Client(harness.url, timeout_s=10) as client:
                    bad = client.status()["bad_messages"] - bad_before
                rate = (n + 1) / (time.monotonic() - started)
                log(f"{n + 1:>8} frames  {rate:7.0f}/s  bad_messages +{bad}  master rss "
                    f"{master.memory_info().rss / 2**20:.0f} MiB")
        summary["router_answers"] += drain(dealer, 2.0)
        summary["seconds"] = round(time.monotonic() - started, 1)
        if harness.master.poll() is None:
            time.sleep(1.0)   # let the master drain what is still queued on the PULL
            with Client(harness.url, timeout_s=10) as client:
                summary["bad_messages_counted"] = client.status()["bad_messages"] - bad_before
                if client.task(seeded)["state"] != "queued":
                    found.append("the seeded task changed state")
            summary["master_rss_mib"] = [round(rss_before / 2**20, 1), round(master.memory_info().rss / 2**20, 1)]
            if ledger(harness.db) != before:
                found.append("the ledger changed")
            if summary["bad_messages_counted"] < summary["refused_by_local_decoder"]:
                found.append("some undecodable frames were not counted in bad_messages")
        elif not found:
            found.append(f"the master exited with {harness.master.returncode}")
        errors = [line for line in (folder / "master.log").read_text(errors="replace").splitlines()
                  if " ERROR " in line or " CRITICAL " in line or "Traceback" in line]
        summary["master_error_lines"] = len(errors)
        found += [f"master log: {line}" for line in errors[:10]]
    finally:
        if dealer is not None:
            dealer.close(0)
        push.close(0)
        ctx.term()
        harness.stop()
        keep_if(folder, keep or bool(found))
    summary["found"] = found
    return summary


def run_hostile(messages_wanted: int, seconds: float, seed: int, keep: bool, curve: bool) -> dict:
    folder = Path(tempfile.mkdtemp(prefix="zmqgrid-hostile-"))
    rng = random.Random(seed)
    summary: dict = {"seed": seed, "curve": curve, "messages_sent": 0, "checks": 0, "by_value": {}}
    found: list[str] = []
    run = None
    started = time.monotonic()
    try:
        run = hostile.HostileRun(folder, secured=curve)
        while summary["messages_sent"] < messages_wanted and time.monotonic() - started < seconds:
            first = hostile.random_case(rng, run.fz.messages())
            cases = [first]
            for _ in range(rng.choice((0, 0, 1, 2))):   # sometimes two or three hostile fields in one message
                more = hostile.random_case(rng, {first.kind: run.fz.messages()[first.kind]})
                if not any(more.path[:len(c.path)] == c.path or c.path[:len(more.path)] == more.path for c in cases):
                    cases.append(more)
            run.send(cases)
            summary["messages_sent"] += 1
            for case in cases:
                summary["by_value"][case.value] = summary["by_value"].get(case.value, 0) + 1
            if summary["messages_sent"] % 200 == 0:
                summary["checks"] += 1
                problem = run.check()
                if problem is not None:
                    found.append(f"after {' + '.join(map(str, cases))}: {problem}")
                    if run.harness.master.poll() is not None:
                        break
                rate = summary["messages_sent"] / (time.monotonic() - started)
                log(f"{summary['messages_sent']:>8} messages  {rate:6.0f}/s  master rss +{run.rss_growth_mib():.0f} MiB")
    except AssertionError as e:   # the fuzz worker could not register or hold a task: the master stopped serving it
        found.append(f"the run stopped: {e}")
    try:
        summary["seconds"] = round(time.monotonic() - started, 1)
        if run is not None and run.harness.master.poll() is None:
            problem = run.check()
            if problem is not None:
                found.append(f"at the end: {problem}")
            summary["master_rss_growth_mib"] = round(run.rss_growth_mib(), 1)
            if summary["master_rss_growth_mib"] > 300:
                found.append(f"the master's memory grew by {summary['master_rss_growth_mib']} MiB")
    finally:
        if run is not None:
            run.close()
            found += run.findings()
        keep_if(folder, keep or bool(found))
    summary["found"] = found
    return summary


def keep_if(folder: Path, keep: bool) -> None:
    """Keep the run's folder (master log, ledger) when asked or when something was found; else remove it."""
    if keep:
        log(f"kept {folder}")
    else:
        shutil.rmtree(folder, ignore_errors=True)


def drain(sock: zmq.Socket, wait_s: float) -> int:
    """Read the master's answers (so they do not pile up); returns how many."""
    count = 0
    deadline = time.monotonic() + wait_s
    while True:
        try:
            sock.recv_multipart(zmq.NOBLOCK)
            count += 1
        except zmq.Again:
            if time.monotonic() >= deadline or not sock.poll(max(1, int((deadline - time.monotonic()) * 1000))):
                return count


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=None,
                        help="frames (with --hostile: messages) to send [200000; 20000 with --hostile]")
    parser.add_argument("--hostile", action="store_true", help="hostile values in valid messages")
    parser.add_argument("--curve", action="store_true", help="with --hostile: CURVE on, the sender an accepted worker key")
    parser.add_argument("--seconds", type=float, default=900, help="stop after this long [900]")
    parser.add_argument("--seed", type=int, default=1, help="random seed: a run is repeatable [1]")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (master log, ledger)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = parser.parse_args()
    # SIGTERM unwinds like Ctrl-C, so the master and workers this run started are stopped by its finally blocks
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.hostile:
        summary = run_hostile(args.frames or 20_000, args.seconds, args.seed, args.keep, args.curve)
    else:
        summary = run(args.frames or 200_000, args.seconds, args.seed, args.keep)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        for key, value in summary.items():
            print(f"{key}: {value}")
    return 1 if summary["found"] else 0


if __name__ == "__main__":
    sys.exit(main())
