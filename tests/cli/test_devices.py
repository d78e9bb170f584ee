"""`devices list` through the real command line against a real master and worker: what an offline device shows,
and tasks running apart from those waiting on the worker for a slot."""
from __future__ import annotations

import json

import pytest

from ..helpers import Harness, run_cli, wait_until
from ..scenes import w1_offline_across_a_master_restart, w1_running_one_holding_two

pytestmark = pytest.mark.timeout(90)


def listed(h: Harness) -> dict[str, dict[str, str]]:
    """`devices list` as {device: {column: value}} (every column is one word or '-', so a split reads it)."""
    result = run_cli("devices", "list", "--master", h.url, cwd=h.dir)
    assert result.returncode == 0, result.stderr
    header, *lines = result.stdout.splitlines()
    columns = header.replace("LAST SEEN", "LAST_SEEN").split()
    rows = {}
    for line in lines:
        values = line.split()
        if values[columns.index("TASKS") + 1].startswith("+"):   # "1/1 +2" is one cell
            values[columns.index("TASKS"):columns.index("TASKS") + 2] = [" ".join(values[columns.index("TASKS"):
                                                                                    columns.index("TASKS") + 2])]
        rows[values[0]] = dict(zip(columns, values))
    return rows


def test_a_device_offline_across_a_master_restart_lists_when_it_was_last_seen_and_no_metrics(harness: Harness):
    # Given a worker whose heartbeats put its metrics in the ledger, killed with its master
    # When the master starts again (it has not heard from w1 since)
    w1_offline_across_a_master_restart(harness)
    row = listed(harness)["w1"]
    # Then w1 is offline, says when it was last seen, and shows no CPU, memory or disk figure
    assert row["STATE"] == "offline"
    assert row["LAST_SEEN"] != "-" and row["LAST_SEEN"].endswith("s"), row
    assert (row["CPU"], row["MEM"], row["DISK"]) == ("-", "-", "-"), row
    # --json keeps the last figures, with when they were sent
    (device,) = json.loads(run_cli("devices", "list", "--json", "--master", harness.url, cwd=harness.dir).stdout)
    assert device["seconds_since_heartbeat"] >= 0 and device["last_seen_at"] > 0
    assert "cpu_percent" in device["metrics"]
    assert (device["running"], device["assigned"], device["in_flight"]) == (0, 0, 0)


def test_tasks_waiting_on_a_worker_for_a_slot_are_listed_apart_from_those_running(harness: Harness):
    # Given a worker with one slot, which takes two more tasks than it runs (prefetch 2)
    w1_running_one_holding_two(harness)
    # Then the device shows 1 running of 1 slot, and 2 more waiting
    row = wait_until(lambda: (lambda r: r["PREFETCH"] != "-" and r)(listed(harness)["w1"]), 10, "a heartbeat")
    assert (row["TASKS"], row["PREFETCH"]) == ("1/1 +2", "2")   # the scene fixes its prefetch at 2
    (device,) = json.loads(run_cli("devices", "list", "--json", "--master", harness.url, cwd=harness.dir).stdout)
    assert (device["running"], device["assigned"], device["in_flight"]) == (1, 2, 3)
