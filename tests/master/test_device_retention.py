"""Offline devices that hold nothing leave the device table after device_retention_days (issue 24, item 10):
random Registers no longer grow it for good. A device with an unfinished task or drained by an operator stays."""
from __future__ import annotations

import os
import uuid

import pytest
import zmq

from zmqgrid import protocol as p
from zmqgrid.client import build_spec

from ..helpers import Harness, db_query, stays, wait_until

pytestmark = [pytest.mark.timeout(120), pytest.mark.open_wire]
RETENTION_DAYS = "0.00003"   # 2.6 s


def register(device_id: str) -> p.Register:
    return p.Register(device_id=device_id, name=device_id, hostname="random", os="Linux", python_version="3",
                      python_executable="python", tags=[], concurrency=1, credit=0, running=[], outbox=[],
                      pid=os.getpid(), version="0.1.0", weight=1.0)


def register_once(ctx: zmq.Context, url: str, device_id: str) -> None:
    """A device that registers, is acknowledged, and is never heard from again."""
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    sock.identity = device_id.encode()
    sock.connect(url)
    try:
        sock.send_multipart(register(device_id).encode())
        assert sock.poll(10_000), f"no RegisterAck for {device_id}"
        assert isinstance(p.decode(sock.recv_multipart()), p.RegisterAck)
    finally:
        sock.close(0)


def test_long_offline_devices_that_hold_nothing_are_pruned(tmp_path):
    h = Harness(tmp_path, env={"ZMQGRID_DEVICE_RETENTION_DAYS": RETENTION_DAYS})
    ctx = zmq.Context()
    try:
        h.start_master()
        h.start_worker("w1")
        client = h.client()
        h.wait_online(client, "w1")
        # Given 200 devices that registered once and went away, two of them still wanted: one has a task pinned
        # to it, one was drained by an operator
        # (the two wanted ones first: under load, registering all 200 can take longer than the retention)
        ids = [f"rnd-{uuid.uuid4().hex[:12]}" for _ in range(200)]
        pinned, drained = ids[0], ids[1]
        for device_id in ids[:2]:
            register_once(ctx, h.url, device_id)
        task_id = client.submit(build_spec(shell="true", device=pinned))[0]
        assert client.control_devices("drain", [drained])[drained] in ("draining", "draining when it returns")
        for device_id in ids[2:]:
            register_once(ctx, h.url, device_id)
        # When they have been offline longer than device_retention_days
        # Then all but the two wanted ones leave the table (and the ledger), w1 (online) stays
        wait_until(lambda: {d["device_id"] for d in client.devices()} == {"w1", pinned, drained}, 30,
                   "only w1 and the two wanted devices left")
        assert db_query(h.db, "SELECT count(*) FROM devices")[0][0] == 3
        assert client.task(task_id)["state"] == "queued"
        stays(lambda: {d["device_id"] for d in client.devices()} == {"w1", pinned, drained}, 1.0,
              "w1 and the wanted devices kept")
        # And a pruned device that registers again is simply new
        register_once(ctx, h.url, ids[2])
        assert ids[2] in {d["device_id"] for d in client.devices()}
    finally:
        h.stop()
        ctx.destroy(0)
