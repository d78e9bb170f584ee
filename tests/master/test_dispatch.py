"""Dispatch respects credit (bounded prefetch), and devices report their metrics and identity."""
from __future__ import annotations

import pytest

from zmqgrid.client import build_spec

from ..helpers import db_query, sample_until, wait_until

pytestmark = pytest.mark.timeout(60)


def test_dispatch_never_exceeds_a_workers_credit(harness):
    # Given one worker with concurrency 2 and prefetch 1: credit 3
    harness.env["ZMQGRID_PREFETCH"] = "1"
    harness.start_master()
    harness.start_worker("w1", concurrency=2)
    client = harness.client()
    harness.wait_online(client, "w1")

    # When 30 tasks are queued at once
    ids = client.submit([build_spec(python="tests.tasks:sleep", args=[0.05]) for _ in range(30)])

    # Then at no moment does the ledger show more than 3 tasks handed to it, and it does reach 3
    def handed() -> int:
        return db_query(harness.db, "SELECT count(*) FROM tasks WHERE state IN ('assigned', 'running')")[0][0]

    def all_done() -> bool:
        return db_query(harness.db, "SELECT count(*) FROM tasks WHERE state = 'done'")[0][0] == len(ids)
    seen = sample_until(handed, all_done, 45)
    assert max(seen) == 3, f"peak {max(seen)} tasks handed to a worker with credit 3"
    assert db_query(harness.db, "SELECT count(*) FROM tasks WHERE state = 'done'")[0][0] == 30


def test_devices_report_identity_and_psutil_metrics(cluster):
    client = cluster.client()

    def w1_metrics():
        rows = {d["device_id"]: d for d in client.devices()}
        return rows["w1"] if rows["w1"]["metrics"].get("cpu_percent") is not None else None
    w1 = wait_until(w1_metrics, 20, "a heartbeat with metrics")
    assert w1["state"] == "online" and w1["concurrency"] == 2 and w1["python_version"].startswith("3.")
    assert w1["hostname"] and w1["os"] and w1["seconds_since_heartbeat"] < 1.5
    for key in ("cpu_percent", "memory_percent", "disk_percent", "load_1m"):
        assert isinstance(w1["metrics"][key], (int, float)), key
    status = client.status()
    assert status["devices"]["online"] == 2 and status["tasks"]["queued"] == 0
