"""Subscriptions on the master's PUB (issue 24, item 4): only the topics workers need are applied, and no
subscriber can make the master hold more than a bounded number of topics (docs/architecture.md, Subscriptions).

Real master and worker processes; raw pyzmq SUB sockets play the hostile subscribers."""
from __future__ import annotations

import os
import signal

import pytest
import zmq
from zmq.utils.monitor import recv_monitor_message

from zmqgrid.transport import Curve

from ..helpers import Harness, run_cli, stays, wait_until

pytestmark = pytest.mark.timeout(120)


def sub(ctx: zmq.Context, port: int, topics: list[bytes], curve: Curve | None = None) -> zmq.Socket:
    sock = ctx.socket(zmq.SUB)
    sock.linger = 0
    sock.sndhwm = 0    # every subscription reaches the master, however many
    if curve is not None:
        sock.curve_serverkey, sock.curve_publickey, sock.curve_secretkey = curve.server_key, curve.public, curve.secret
    sock.connect(f"tcp://127.0.0.1:{port}")
    for topic in topics:
        sock.setsockopt(zmq.SUBSCRIBE, topic)
    return sock


def drain(sock: zmq.Socket) -> list[list[bytes]]:
    got = []
    while sock.poll(0):
        got.append(sock.recv_multipart())
    return got


def subscriptions(h: Harness) -> dict:
    return h.client().status()["subscriptions"]


@pytest.fixture
def open_master(tmp_path):
    h = Harness(tmp_path)
    ctx = zmq.Context()
    try:
        h.start_master()
        h.start_worker("w1")
        h.wait_online(h.client(), "w1")
        h.ctx = ctx
        yield h
    finally:
        h.stop()
        ctx.destroy(0)


@pytest.mark.open_wire
def test_a_subscriber_gets_only_the_topics_the_master_publishes_for_workers(open_master):
    h = open_master
    # Given a subscriber to beacon, and one to everything a worker does not need (the empty prefix too)
    good = sub(h.ctx, h.port + 1, [b"beacon"])
    greedy = sub(h.ctx, h.port + 1, [b"", b"b", b"dev", b"device.", b"all"])
    seen: list = []
    wait_until(lambda: seen.extend(drain(good)) or len(seen) >= 3, 20, "three beacons on the beacon subscriber")
    # When the master publishes a command for w1 (drain, then resume)
    client = h.client()
    assert client.control_devices("drain", ["w1"]) == {"w1": "draining"}
    wait_until(lambda: [d["state"] for d in client.devices() if d["device_id"] == "w1"] == ["draining"], 10,
               "w1 draining")
    client.control_devices("resume", ["w1"])
    # Then the greedy one got nothing at all, and the master counts its five subscriptions refused
    stays(lambda: not greedy.poll(0), 1.0, "the greedy subscriber receives nothing")
    counts = subscriptions(h)
    assert counts["refused"] >= 5 and counts["applied"] <= 3, counts   # w1's beacon and device, the good beacon
    good.close(0)
    greedy.close(0)


@pytest.mark.open_wire
def test_a_flood_of_subscriptions_is_bounded_and_closes_the_connection(open_master):
    h = open_master
    before = subscriptions(h)
    # Given a subscriber that sends 5,000 distinct topics of a valid shape (only them: a topic past the PUB's size
    # limit would make libzmq drop the connection itself, maybe before the master reads enough to close it)
    flood = [b"device." + os.urandom(30).hex().encode() for _ in range(5000)]
    hostile = sub(h.ctx, h.port + 1, [])
    monitor = hostile.get_monitor_socket(zmq.EVENT_DISCONNECTED)
    for topic in flood:
        hostile.setsockopt(zmq.SUBSCRIBE, topic)
    # Then the master closes its connection (it reconnects by itself, and is closed again)
    wait_until(lambda: monitor.poll(100) and recv_monitor_message(monitor), 20, "the flooding SUB disconnected")
    wait_until(lambda: subscriptions(h)["closed"] > before["closed"], 10, "the master counting it closed")
    # And at no time does the master hold more than a few of its topics; w1 still gets its commands
    for _ in range(20):
        counts = subscriptions(h)
        assert counts["held"] <= 2 + 4 + 1 and counts["applied"] <= 2 + 4, counts
    client = h.client()
    assert client.control_devices("drain", ["w1"]) == {"w1": "draining"}
    log = h.dir / "w1.log"
    wait_until(lambda: "action=drain" in log.read_text(), 10, "w1 applying the drain")
    hostile.disable_monitor()
    monitor.close(0)
    hostile.close(0)
    # When it is gone, what it held is forgotten
    wait_until(lambda: subscriptions(h)["held"] <= 2, 10, "only w1's two topics held")
    # And a subscriber sending 1 KiB topics is dropped by the size limit, before anything of it is held
    oversized = sub(h.ctx, h.port + 1, [])
    monitor = oversized.get_monitor_socket(zmq.EVENT_DISCONNECTED)
    for _ in range(2):
        oversized.setsockopt(zmq.SUBSCRIBE, os.urandom(1024))
    wait_until(lambda: monitor.poll(100) and recv_monitor_message(monitor), 20, "the oversized SUB disconnected")
    assert subscriptions(h)["held"] <= 2
    oversized.disable_monitor()
    monitor.close(0)
    oversized.close(0)


def test_only_worker_keys_subscribe_and_only_to_their_own_device(tmp_path):
    h = Harness(tmp_path, secured=True)
    ctx = zmq.Context()
    try:
        h.start_master()
        h.start_worker("w1")
        h.start_worker("w2")
        client = h.client()
        h.wait_online(client, "w1", "w2")
        # Given subscribers with an admin key, a client key (accepted) and w2's key asking for w1's commands
        client_key = h.client_curve("client").public.decode()   # accepted as a client, as an operator would
        assert run_cli("keys", "accept", client_key, "--role", "client", "--db", str(h.db), cwd=h.dir).returncode == 0
        admin = sub(ctx, h.port + 1, [b"beacon"], h.client_curve("admin"))
        as_client = sub(ctx, h.port + 1, [b"beacon"], h.client_curve("client"))
        thief = sub(ctx, h.port + 1, [b"beacon", b"device.w1", b"device.w"], h.client_curve("w2"))
        beacons: list = []
        wait_until(lambda: beacons.extend(drain(thief)) or len(beacons) >= 3, 20, "beacons on the w2-key SUB")
        # When w1 is drained (a command on device.w1)
        assert client.control_devices("drain", ["w1"]) == {"w1": "draining"}
        wait_until(lambda: "action=drain" in (h.dir / "w1.log").read_text(), 10, "w1 applying the drain")
        # Then w2's key got beacons only, the admin and client keys nothing (ZAP refuses them on the PUB)
        stays(lambda: all(f[0] == b"beacon" for f in drain(thief)), 1.0, "only beacons for the w2-key SUB")
        assert not admin.poll(0) and not as_client.poll(0)
        assert subscriptions(h)["refused"] >= 2
        for sock in (admin, as_client, thief):
            sock.close(0)
    finally:
        h.stop()
        ctx.destroy(0)


def test_a_restarted_master_applies_the_workers_subscriptions_as_their_subs_reconnect(tmp_path):
    h = Harness(tmp_path)   # secured too when the suite runs with TEST_WITH_CURVE=1
    try:
        h.start_master()
        h.start_worker("w1")
        h.wait_online(h.client(), "w1")
        wait_until(lambda: subscriptions(h)["applied"] == 2, 10, "w1's beacon and device topics applied")
        # When the master is killed and started again on the same ledger and ports
        h.kill(h.master, signal.SIGKILL)
        h.start_master()
        # Then w1's SUB, reconnecting by itself, has both topics applied again, none refused
        wait_until(lambda: subscriptions(h)["applied"] == 2, 20, "w1's topics applied by the new master")
        assert subscriptions(h)["refused"] == 0
        client = h.client()
        h.wait_online(client, "w1")
        assert client.control_devices("drain", ["w1"]) == {"w1": "draining"}
        wait_until(lambda: "action=drain" in (h.dir / "w1.log").read_text(), 10, "w1 applying the drain")
    finally:
        h.stop()
