"""A master's board and handlers built in the test's own process on a real SQLite ledger, without sockets: for
tests that feed decoded messages to the handlers and read what the turn would send."""
from __future__ import annotations

import time

from zmqgrid.master.board import Board
from zmqgrid.master.handlers import Handlers
from zmqgrid.master.recovery import recover
from zmqgrid.master.strategies import least_tasks
from zmqgrid.master.turn import Turn
from zmqgrid.store.task_store import TaskStore


def handlers_on(path, settings: dict | None = None) -> tuple[TaskStore, Board, Handlers]:
    """A recovered board on the ledger at `path` and its handlers, given the master's `settings` (what a Register's
    reply tells a worker: ports, heartbeat interval, device timeout; none needed by client messages)."""
    store = TaskStore(path)
    board = Board(store, Turn(), incarnation="test", strategy=least_tasks, default_retries=0, default_timeout_s=None,
                  device_timeout_s=5.0)
    recover(board, time.monotonic(), time.time())
    return store, board, Handlers(board, settings or {})
