"""An alert event is written by the commit that writes the change that caused it, or not at all: real messages
through the master's handlers into a real SQLite ledger, with a real lock making one commit fail."""
from __future__ import annotations

import os
import sqlite3
import time

import pytest

from zmqgrid.alerts.book import Alerts
from zmqgrid.client import build_spec
from zmqgrid.errors import StoreError
from zmqgrid.model import compact_spec
from zmqgrid.protocol import Register, Results, Submit, decode

from ..helpers import db_query
from ..master.in_process import handlers_on

pytestmark = pytest.mark.timeout(30)
SETTINGS = {"pub_port": 1, "heartbeat_port": 2, "heartbeat_interval_s": 1.0, "device_timeout_s": 5.0}


def test_an_event_commits_with_the_tasks_end_and_a_failed_commit_records_neither(tmp_path):
    # Given a master's board with a rule on failed tasks, and a worker holding two tasks
    store, board, handlers = handlers_on(tmp_path / "ledger.db", SETTINGS)
    alerts = board.alerts = board.fleet.alerts = Alerts(store)
    alerts.load()
    now = time.time()
    alerts.control({"op": "add", "name": "r", "on": "failed", "webhook": "http://127.0.0.1:9/"}, now)

    def receive(identity: bytes, message) -> None:
        handlers.on_router(identity, decode(message.encode()), time.monotonic(), time.time())

    receive(b"w1", Register(device_id="w1", name="w1", hostname="host", os="Linux", python_version="3.11",
                            python_executable="/usr/bin/python3", tags=[], concurrency=2, credit=2, running=[],
                            outbox=[], pid=os.getpid(), version="0", weight=1.0))
    specs = [build_spec(shell="exit 1", retries=0, name=f"t{i}") for i in range(2)]
    receive(b"client", Submit(1, [compact_spec(s) for s in specs], False))
    handlers.apply_submits(now)
    board.dispatch(time.monotonic(), now)
    store.commit()
    first, second = (s["id"] for s in specs)

    def fail(task_id: str) -> None:
        receive(b"w1", Results([{"id": task_id, "attempt": 1, "state": "failed", "exit_code": 1}], 1, []))

    # When the first fails and its turn commits
    fail(first)
    store.commit()
    # Then its end and its event are in the ledger together
    assert db_query(store.path, "SELECT state FROM tasks WHERE id = ?", (first,)) == [("failed",)]
    assert db_query(store.path, "SELECT seq, rule, event FROM alert_events") == [(1, "r", "failed")]

    # When the second fails in a turn whose commit cannot get the ledger (another writer holds it)
    fail(second)
    store.db.execute("PRAGMA busy_timeout=50")
    other = sqlite3.connect(store.path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StoreError):
            store.commit()
    finally:
        other.execute("ROLLBACK")
        other.close()

    # Then neither its end nor its event was written, and the master's numbering goes back to what the ledger holds
    assert db_query(store.path, "SELECT state FROM tasks WHERE id = ?", (second,)) == [("assigned",)]
    assert db_query(store.path, "SELECT seq FROM alert_events") == [(1,)]
    assert alerts.seq == 2
    alerts.reload()
    assert alerts.seq == 1 and list(alerts.rules) == ["r"]
    store.close()
