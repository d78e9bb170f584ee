"""A turn reads a bounded number of ROUTER messages, so a flood of Submits leaves room to dispatch between turns."""
from __future__ import annotations

import time

import pytest
import zmq

from zmqgrid.client import build_spec
from zmqgrid.config import Config
from zmqgrid.master.master import ROUTER_DRAIN_PER_TURN, Master
from zmqgrid.model import compact_spec
from zmqgrid.protocol import Submit

from ..helpers import free_port_block

pytestmark = pytest.mark.timeout(30)


def test_a_turn_reads_at_most_the_router_cap_and_the_rest_waits_for_the_next_turn(tmp_path):
    port = free_port_block()
    master = Master(Config(mode="master", port=port, pub_port=port + 1, heartbeat_port=port + 2,
                           db_path=str(tmp_path / "ledger.db"), log_file=None))
    ctx = zmq.Context()
    dealer = ctx.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    try:
        dealer.connect(f"tcp://127.0.0.1:{port}")
        total = 3 * ROUTER_DRAIN_PER_TURN + 10
        for n in range(1, total + 1):
            dealer.send_multipart(Submit(n, [compact_spec(build_spec(shell="true"))], False).encode())
        # When the master's loop reads its ROUTER turn by turn (without serving: each drain is one turn's)
        per_turn = []
        deadline = time.monotonic() + 20
        while sum(per_turn) < total:
            assert time.monotonic() < deadline, f"only {sum(per_turn)} of {total} Submits read: {per_turn}"
            if master.router.poll(1000):
                master._drain_router(time.monotonic(), time.time())
                per_turn.append(len(master.handlers.submits))
                master.handlers.apply_submits(time.time())
                master.store.commit()
        # Then no turn read more than the cap, and every Submit was read and its task queued
        assert max(per_turn) <= ROUTER_DRAIN_PER_TURN and len(per_turn) >= 4, per_turn
        assert len(master.board.tasks) == total
    finally:
        dealer.close(0)
        ctx.term()
        master.close()
