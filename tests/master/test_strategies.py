"""Load-balancing strategies on real workers: how 60 tasks spread over 3 workers under each strategy.

How the assertions are made to hold by design, not by luck (see `Cluster.dispatch` and `Cluster.pick`):

- The 60 tasks go in one `Submit`, so the master queues all of them in one turn and hands them out in that
  turn's dispatch, one `pick` per task, with each pick seeing the in-flight counts and credit left by the
  picks before it.
- A worker with no credit left drops out of the eligible list, which renumbers the others and changes what
  a strategy sees. So every worker gets credit 61 (concurrency 1 + prefetch 60): none can run out before all
  60 tasks are handed out, and every pick chooses among all three workers.
- `weighted` divides by capacity = weight x free CPU share, and the CPU share is whatever psutil measured on
  a machine running tests. Heartbeat metrics are switched off for that test, so capacity is the weight alone.
"""
from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from zmqgrid.client import build_spec

from ..helpers import REPO, Harness, db_query, free_port_block

pytestmark = pytest.mark.timeout(90)

TASKS = 60
WORKERS = ("w1", "w2", "w3")


def spread(harness: Harness, strategy: str, weights: dict[str, str] | None = None) -> Counter:
    """Start a master with `strategy` and 3 workers with credit 61 each, run 60 no-op tasks submitted at once,
    and count the tasks each worker ran (device_id in the ledger)."""
    harness.env["ZMQGRID_PREFETCH"] = "60"
    harness.start_master("--strategy", strategy)
    client = harness.client()
    for device_id in WORKERS:
        extra = ("--weight", weights[device_id]) if weights else ()
        harness.start_worker(device_id, *extra, concurrency=1)
    harness.wait_online(client, *WORKERS)
    # Every worker's full credit is known to the master before the tasks arrive.
    assert {d["device_id"]: d["credit"] for d in client.devices()} == dict.fromkeys(WORKERS, 61)

    ids = client.submit([build_spec(python="tests.tasks:noop") for _ in range(TASKS)], notify=True)
    results = client.wait(ids, timeout_s=40)
    assert {r["state"] for r in results.values()} == {"done"}, results

    rows = db_query(harness.db, "SELECT device_id, count(*) FROM tasks WHERE state = 'done' GROUP BY device_id")
    counts = Counter({device_id: 0 for device_id in WORKERS})
    counts.update(dict(rows))
    assert sum(counts.values()) == TASKS and set(counts) == set(WORKERS), counts
    return counts


def turns(harness: Harness) -> int:
    """Dispatch turns the tasks were handed out in (every assignment of a turn has that turn's time)."""
    return db_query(harness.db, "SELECT count(DISTINCT assigned_at) FROM attempts")[0][0]


def test_round_robin_gives_each_worker_the_same_share(harness):
    counts = spread(harness, "round_robin")
    # The turn counter advances once per pick over an eligible list that stays 3 long: 20 picks each.
    assert max(counts.values()) - min(counts.values()) <= 1, (counts, f"{turns(harness)} dispatch turns")
    assert set(counts.values()) == {20}, counts


def test_least_tasks_spreads_a_burst_evenly(harness):
    counts = spread(harness, "least_tasks")
    # Each pick goes to the fewest in flight, so within one turn the counts never differ by more than one.
    assert all(n >= 10 for n in counts.values()), (counts, f"{turns(harness)} dispatch turns")
    assert max(counts.values()) - min(counts.values()) <= 1, (counts, f"{turns(harness)} dispatch turns")


def test_random_gives_every_worker_some(harness):
    counts = spread(harness, "random")
    # Binomial(60, 1/3) per worker: below 5 has a probability of about 2e-6. Runs need not agree.
    assert all(n >= 5 for n in counts.values()), counts


def test_weighted_favours_the_heavier_worker(harness):
    harness.env["ZMQGRID_ENABLE_MONITORING"] = "false"   # capacity = weight (no measured CPU share)
    counts = spread(harness, "weighted", {"w1": "1", "w2": "1", "w3": "4"})
    # Fewest in flight per unit of weight: 10 / 10 / 40 when handed out in one turn.
    assert counts["w3"] >= 2 * counts["w1"] and counts["w3"] >= 2 * counts["w2"], \
        (counts, f"{turns(harness)} dispatch turns")
    assert counts["w1"] > 0 and counts["w2"] > 0, counts


def test_a_user_strategy_by_dotted_path_is_used(harness):
    counts = spread(harness, "tests.tasks:always_last")
    # Always the last eligible worker; with credit 61 it never drops out, so it takes all 60.
    busy = [device_id for device_id, n in counts.items() if n]
    assert len(busy) == 1 and counts[busy[0]] == TASKS, counts


def run_master(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """`python -m zmqgrid distribute --mode master ...` from an empty directory, every ZMQGRID_* variable cleared."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZMQGRID_")}
    env["PYTHONPATH"] = str(REPO)
    command = [sys.executable, "-m", "zmqgrid", "distribute", "--mode", "master", "--port", str(free_port_block()),
               "--db", str(tmp_path / "ledger.db"), "--log-file", str(tmp_path / "master.log"), *args]
    # A master that does start would serve until killed: the timeout turns that into a failure.
    return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=20,
                          stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("strategy", ["nope", "no_such_module_zq:pick", "tests.tasks:no_such_strategy"])
def test_a_strategy_that_cannot_be_loaded_stops_the_master_with_one_error_line(tmp_path, strategy):
    result = run_master(tmp_path, "--strategy", strategy)
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "load_balance_strategy" in lines[0] and strategy in lines[0], lines[0]
    assert result.returncode == 3, (result.returncode, result.stderr)
