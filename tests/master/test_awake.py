"""The master's awake poll: it spins only after task traffic, returns what is waiting at once, and spends no more
CPU awake than its budget allows. Real ZeroMQ sockets on loopback; the CPU is the thread's own (time.thread_time)."""
from __future__ import annotations

import time

import pytest
import zmq

from zmqgrid.master.awake import AwakePoller

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def pair():
    ctx = zmq.Context()
    server, peer = ctx.socket(zmq.PULL), ctx.socket(zmq.PUSH)
    port = server.bind_to_random_port("tcp://127.0.0.1")
    peer.connect(f"tcp://127.0.0.1:{port}")
    poller = zmq.Poller()
    poller.register(server, zmq.POLLIN)
    yield server, peer, poller
    for sock in (server, peer):
        sock.close(0)
    ctx.term()


@pytest.mark.parametrize("busy", [False, True])
def test_a_waiting_message_is_returned_at_once(pair, busy):
    server, peer, poller = pair
    peer.send(b"result")
    awake = AwakePoller(poller)
    awake.after_turn(busy)
    assert awake.poll(5000) == {server: zmq.POLLIN}
    assert server.recv() == b"result"


def test_without_task_traffic_it_sleeps(pair):
    _, _, poller = pair
    awake = AwakePoller(poller)
    awake.after_turn(False)
    assert awake.poll(20) == {}
    assert awake.spent == 0.0


def test_after_a_busy_turn_it_polls_awake_for_spin_s_then_sleeps(pair):
    _, _, poller = pair
    awake = AwakePoller(poller, spin_s=0.002)
    awake.after_turn(True)
    assert awake.poll(50) == {}
    assert 0.0 < awake.spent <= 0.002 + 0.001   # CPU time awake cannot exceed the spin's wall time (+ one poll)
    before = awake.spent
    assert awake.poll(20) == {}                 # the spin is used up: this poll sleeps
    assert awake.spent == before


def test_a_spin_of_zero_never_spins(pair):
    _, _, poller = pair
    awake = AwakePoller(poller, spin_s=0.0)
    awake.after_turn(True)
    assert awake.poll(20) == {}
    assert awake.spent == 0.0


def test_the_budget_caps_the_cpu_spent_awake(pair):
    _, _, poller = pair
    share, burst = 0.1, 0.002
    awake = AwakePoller(poller, spin_s=0.010, share=share, burst_s=burst)
    start = time.monotonic()
    for _ in range(50):      # unbounded, 50 busy turns with nothing coming would spin 0.5 s of CPU
        awake.after_turn(True)
        awake.poll(10)
    elapsed = time.monotonic() - start
    assert awake.spent > 0.0
    assert awake.spent <= burst + share * elapsed + 0.002, (awake.spent, elapsed)
