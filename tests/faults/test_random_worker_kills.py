"""2,000 short tasks while workers are SIGKILLed at random 20 times and restarted: none lost, none twice."""
from __future__ import annotations

import random
import signal

import pytest

from zmqgrid.client import build_spec

from ..helpers import assert_none_lost, db_counts, wait_until

pytestmark = pytest.mark.timeout(240)


def test_2000_tasks_survive_20_random_worker_sigkills(harness):
    # Given three workers and 2,000 acknowledged tasks
    harness.start_master()
    names = ["k1", "k2", "k3"]
    for name in names:
        harness.start_worker(name, concurrency=4)
    client = harness.client(timeout_s=20)
    harness.wait_online(client, *names)
    ids = client.submit([build_spec(python="tests.tasks:sleep", args=[0.01]) for _ in range(2000)])
    rng = random.Random(20261123)

    # When a random worker is SIGKILLed 20 times as the run progresses, each time restarted at once
    for kill in range(20):
        target = (kill + 1) * 80
        wait_until(lambda: db_counts(harness.db).get("done", 0) >= target, 60, f"{target} tasks done")
        victim = rng.choice(names)
        harness.kill(harness.workers[victim], signal.SIGKILL)
        harness.start_worker(victim, concurrency=4)

    # Then every task ends, and the counts balance
    results = client.wait(ids, timeout_s=150)
    assert len(results) == 2000
    counts = assert_none_lost(harness.db, ids)
    assert counts["done"] >= 1990, counts
