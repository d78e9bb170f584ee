"""The end-to-end workload through zmqgrid.Client: no-op python calls submitted batched, one per Submit, or one
round trip at a time, each phase timed until every result is back, and the ledger checked for every task."""
from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import time
from pathlib import Path
from typing import Iterator

from zmqgrid.client import Client, build_spec
from zmqgrid.model import FINAL_STATES

from .cluster import Cluster
from .measure import pct
from .report import progress

FUNCTION = "zmqgrid.samples:noop"
WARMUP_BATCH, WARMUP_SINGLE = 200, 20


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
    """The phases on one cluster, each with fresh arguments. `args` carries batch, window, single_window (unacked
    Submits in flight) and phase_timeout (seconds for one phase's results)."""

    def __init__(self, cluster: Cluster, args: argparse.Namespace) -> None:
        self.cluster, self.a = cluster, args
        self.client = Client(cluster.url, timeout_s=30)
        self.next_arg = 0
        self.non_final = 0      # summaries Client.wait returned in a non-final state (a zmqgrid bug)
        pids = cluster.pids()
        self.cpu_groups = {"client": ([os.getpid()], False), "master": ([pids["master"]], False),
                           "workers": ([p for d, p in pids.items() if d != "master"], True)}

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
        l = self.latency(WARMUP_SINGLE)  # noqa: E741
        ledger_check(self.cluster.db, r["ids"] + l["ids"])
