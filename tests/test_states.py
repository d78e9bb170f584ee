"""Task and device states (model.TaskState, model.DeviceState) read as their text wherever text is made of them, and
equal the text the wire and the ledger hold."""
from __future__ import annotations

import json
import sqlite3

import msgpack
import pytest

from zmqgrid.model import (ACTIVE_STATES, ATTEMPT_OUTCOMES, DEVICE_STATES, FINAL_STATES, TASK_STATES,
                           UNFINISHED_STATES, DeviceState, TaskState)
from zmqgrid.store.task_store import TaskStore

STATES = [*TaskState, *DeviceState]


@pytest.mark.parametrize("state", STATES, ids=str)
def test_a_state_formats_as_its_text(state):
    text = state.value
    assert (str(state), f"{state}", "%s" % state, "{}".format(state), f"{state:>12}") == \
           (text, text, text, text, f"{text:>12}")
    assert type(str(state)) is str


@pytest.mark.parametrize("state", STATES, ids=str)
def test_a_state_is_its_text_to_the_wire_the_ledger_and_json(state):
    text = state.value
    assert state == text and hash(state) == hash(text) and state in {text} and text in {state}
    assert msgpack.unpackb(msgpack.packb(state)) == text
    assert json.loads(json.dumps({state: state})) == {text: text}
    with sqlite3.connect(":memory:") as db:
        assert db.execute("SELECT ?", (state,)).fetchone() == (text,)


def test_the_sets_of_states_hold_plain_text():
    for states in (FINAL_STATES, ACTIVE_STATES, UNFINISHED_STATES, TASK_STATES, DEVICE_STATES, ATTEMPT_OUTCOMES):
        assert all(type(s) is str for s in states)
    assert set(UNFINISHED_STATES) | FINAL_STATES == set(TASK_STATES)
    assert ATTEMPT_OUTCOMES == FINAL_STATES - {"quarantined"}


def test_the_ledger_binds_a_state_as_its_text(tmp_path):
    store = TaskStore(tmp_path / "ledger.db")   # the store registers an adapter for each kind of state
    try:
        conn = store.db.conn
        conn.execute("CREATE TABLE probe (a, b)")
        conn.execute("INSERT INTO probe VALUES (?, ?)", (TaskState.TIMED_OUT, DeviceState.DRAINING))
        assert conn.execute("SELECT a, typeof(a), b, typeof(b) FROM probe").fetchone() == \
               ("timed_out", "text", "draining", "text")
        assert sqlite3.adapters[(TaskState, sqlite3.PrepareProtocol)](TaskState.DONE) == "done"
    finally:
        store.close()
