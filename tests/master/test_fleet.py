"""Heartbeat handling at fleet scale: a backlog of heartbeats is no evidence against a lease, and the ledger's devices
row is written every few heartbeats while the live view stays current."""
from __future__ import annotations

import time

import pytest
import zmq

from zmqgrid import protocol as p
from zmqgrid.client import build_spec

from ..helpers import Harness, db_query, stays, wait_until
from .test_malformed_input import Raw, register_body

pytestmark = [pytest.mark.timeout(60), pytest.mark.open_wire]


def receive(sock: zmq.Socket, kind: type, timeout_s: float = 10.0):
    deadline = time.monotonic() + timeout_s
    while sock.poll(max(0, int((deadline - time.monotonic()) * 1000))):
        msg = p.decode(sock.recv_multipart())
        if isinstance(msg, kind):
            return msg
    raise AssertionError(f"no {kind.__name__} within {timeout_s}s")


def beat(push: zmq.Socket, incarnation: str, seq: int, running: list) -> None:
    push.send_multipart(p.Heartbeat(device_id="raw-worker", incarnation=incarnation, seq=seq, running=running, held=[],
                                    metrics={}, sent_at=time.time()).encode())


def test_a_burst_of_heartbeats_drained_after_a_stall_does_not_end_an_attempt_but_paced_ones_do(tmp_path):
    # Given a master (heartbeat 1 s: lease grace 2 s) and a raw worker holding one task for longer than the grace
    harness = Harness(tmp_path, env={"ZMQGRID_HEARTBEAT_INTERVAL": "1", "ZMQGRID_DEVICE_TIMEOUT": "30"})
    raw = Raw(harness)
    try:
        harness.start_master()
        worker = raw.dealer(b"raw-worker")
        worker.send_multipart(register_body("raw-worker").encode())
        incarnation = receive(worker, p.RegisterAck).incarnation
        push = raw.push()
        client = harness.client()
        task_id = client.submit(build_spec(shell="true"))[0]
        attempt = receive(worker, p.Tasks).tasks[0]["attempt"]
        beat(push, incarnation, 1, [[task_id, attempt]])
        held = lambda: (lambda t: t["state"] in ("assigned", "running") and t["device_id"] == "raw-worker")(  # noqa: E731
            client.task(task_id))
        stays(held, 2.5, "the task on raw-worker past the lease grace")

        def handled_since(t0: float) -> bool:
            row = next(d for d in client.devices() if d["device_id"] == "raw-worker")
            return row["seconds_since_heartbeat"] <= time.monotonic() - t0

        # When three heartbeats that do not name it arrive at once (what the PULL holds after a long loop turn)
        t0 = time.monotonic()
        for seq in (2, 3, 4):
            beat(push, incarnation, seq, [])
        wait_until(lambda: handled_since(t0), 10, "the burst to be handled")

        # Then the attempt stands: a burst counts as one heartbeat at most
        stays(held, 0.8, "the task on raw-worker after the burst")

        # And a heartbeat at its own pace that does not name it either ends the attempt (the second miss)
        beat(push, incarnation, 5, [])
        wait_until(lambda: client.task(task_id)["state"] == "queued", 10, "the attempt to be lost and the task queued")
        attempts = client.task(task_id)["attempts"]
        assert attempts[0]["state"] == "lost" and "stopped naming it" in attempts[0]["error"]["message"]
    finally:
        raw.close()
        harness.stop()


def test_the_ledger_row_of_a_device_is_refreshed_every_few_heartbeats_and_the_live_view_on_each(tmp_path):
    # Given a master and a worker heartbeating every 0.2 s
    harness = Harness(tmp_path)
    try:
        harness.start_master()
        harness.start_worker("w1")
        client = harness.client()
        wait_until(lambda: any(d["device_id"] == "w1" and d["state"] == "online" for d in client.devices()), 20,
                   "w1 online")
        first = db_query(harness.db, "SELECT last_seen_at FROM devices WHERE device_id = 'w1'")[0][0]

        # Then the row in the ledger moves on (with the metrics), a few heartbeats at a time
        wait_until(lambda: db_query(harness.db, "SELECT last_seen_at, metrics FROM devices WHERE device_id = 'w1'"
                                    )[0][0] > first, 20, "the devices row to be written again")
        assert db_query(harness.db, "SELECT metrics FROM devices WHERE device_id = 'w1'")[0][0]

        # And the devices query shows each heartbeat: its last_seen_at is never behind the ledger's
        for _ in range(5):
            live = next(d for d in client.devices() if d["device_id"] == "w1")
            stored = db_query(harness.db, "SELECT last_seen_at FROM devices WHERE device_id = 'w1'")[0][0]
            assert live["last_seen_at"] >= stored - 0.01 and live["seconds_since_heartbeat"] < 1.0
            assert live["running"] == live["in_flight"] == 0 and live["metrics"].get("hostname")
        wait_until(lambda: db_query(harness.db, "SELECT count(*) FROM heartbeats WHERE device_id = 'w1'")[0][0] > 0,
                   20, "a metrics sample")
    finally:
        harness.stop()
