"""A task's start and end in the ledger: the start its worker reported, never after the end (docs/architecture.md,
"Task state machine", Times). Real messages through the master's handlers into a real SQLite ledger."""
from __future__ import annotations

import os
import time

import pytest

from zmqgrid.client import build_spec
from zmqgrid.master.handlers import Handlers
from zmqgrid.model import compact_spec
from zmqgrid.protocol import Register, Results, Submit, decode

from ..helpers import db_query
from .in_process import handlers_on

pytestmark = pytest.mark.timeout(30)

SETTINGS = {"pub_port": 1, "heartbeat_port": 2, "heartbeat_interval_s": 1.0, "device_timeout_s": 5.0}


def receive(handlers: Handlers, identity: bytes, message, now: float) -> None:
    handlers.on_router(identity, decode(message.encode()), time.monotonic(), now)


def test_a_result_that_began_after_its_turns_clock_was_read_never_makes_a_negative_duration(tmp_path):
    # Given a worker w1 holding a task the master assigned it
    store, board, handlers = handlers_on(tmp_path / "ledger.db", SETTINGS)
    now = time.time()
    receive(handlers, b"w1", Register(device_id="w1", name="w1", hostname="host", os="Linux", python_version="3.11",
                                      python_executable="/usr/bin/python3", tags=[], concurrency=1, credit=1,
                                      running=[], outbox=[], pid=os.getpid(), version="0", weight=1.0), now)
    spec = build_spec(python="tests.tasks:add", args=[1, 2])
    task_id = spec["id"]
    receive(handlers, b"client", Submit(1, [compact_spec(spec)], False), now)
    handlers.apply_submits(now)
    board.dispatch(time.monotonic(), now)
    store.commit()

    # When its result comes in a turn whose clock was read just before the worker began the task (a turn reads the
    # clock once, then takes every message that has come; a worker's clock may also run ahead of the master's)
    turn = time.time()
    result = {"id": task_id, "attempt": 1, "state": "done", "exit_code": 0, "value": 3, "started_at": turn + 0.004}
    receive(handlers, b"w1", Results([result], 1, []), turn)
    store.commit()

    # Then neither the task nor its attempt ends before it starts
    (started, finished), = db_query(store.path, "SELECT started_at, finished_at FROM tasks WHERE id = ?", (task_id,))
    (a_started, a_finished), = db_query(store.path, "SELECT started_at, finished_at FROM attempts WHERE task_id = ?",
                                        (task_id,))
    assert started <= finished and a_started <= a_finished, (started, finished, a_started, a_finished)
    assert (started, finished) == (a_started, a_finished) == (turn, turn)
    store.close()
