"""A worker's typed results: `AttemptResult.to_wire()` is the result dict of the wire schema (protocol.RESULT), with
only what is set, and each way an attempt can end without running has one constructor."""
from __future__ import annotations

import pytest

from zmqgrid import protocol as p
from zmqgrid.model import TaskError
from zmqgrid.worker.outbox import Outbox
from zmqgrid.worker.results import AttemptResult, cancel_error, exception_error, timeout_error

pytestmark = pytest.mark.timeout(30)


def test_a_result_on_the_wire_carries_what_is_set_in_the_schema_order_and_nothing_nil_or_empty():
    full = AttemptResult("t1", 2, "failed", exit_code=3, value={"a": [1]}, stdout="out", stderr="err",
                         error=TaskError("ExitCode", "exited with code 3"), started_at=1000.5, finished_at=1001.0,
                         duration_s=0.5)
    wire = full.to_wire()
    assert wire == {"id": "t1", "attempt": 2, "state": "failed", "exit_code": 3, "value": {"a": [1]},
                    "error": {"type": "ExitCode", "message": "exited with code 3", "traceback": ""},
                    "stdout": "out", "stderr": "err", "started_at": 1000.5}
    assert list(wire) == ["id", "attempt", "state", "exit_code", "value", "error", "stdout", "stderr", "started_at"]
    p.RESULT.check(wire)
    # The worker's own timing stays here; nil and empty output are left out
    assert AttemptResult("t1", 1, "done", started_at=5.0, duration_s=0.1).to_wire() == {
        "id": "t1", "attempt": 1, "state": "done", "started_at": 5.0}


def test_a_zero_exit_code_and_falsy_values_are_kept_on_the_wire():
    wire = AttemptResult("t1", 1, "done", exit_code=0, value=0).to_wire()
    assert (wire["exit_code"], wire["value"]) == (0, 0)
    assert AttemptResult("t1", 1, "done", value="").to_wire()["value"] == ""
    assert AttemptResult("t1", 1, "done", value=False).to_wire()["value"] is False


def test_an_error_says_permanent_on_the_wire_only_when_it_is():
    assert TaskError("E", "m").to_wire() == {"type": "E", "message": "m", "traceback": ""}
    assert TaskError("E", "m", "tb", permanent=True).to_wire() == {"type": "E", "message": "m", "traceback": "tb",
                                                                   "permanent": True}
    for error in (TaskError("E", "m"), TaskError("E", "m", "tb", permanent=True)):
        assert TaskError.from_wire(error.to_wire()) == error


def test_each_way_an_attempt_ends_without_running_has_its_result():
    cancelled = AttemptResult.cancelled_before_start("t1", 1, "the master gave this task to another worker")
    assert cancelled.to_wire() == {"id": "t1", "attempt": 1, "state": "cancelled", "error": {
        "type": "Cancelled", "message": "the master gave this task to another worker", "traceback": ""}}
    refused = AttemptResult.refused("t2", 3, "this worker does not run shell tasks")
    assert refused.to_wire()["error"] == {"type": "Forbidden", "message": "this worker does not run shell tasks",
                                          "traceback": "", "permanent": True}
    crashed = AttemptResult.crashed("t3", 1, RuntimeError("executor bug"))
    assert (crashed.state, crashed.to_wire()["error"]) == (
        "failed", {"type": "RuntimeError", "message": "executor bug", "traceback": ""})
    for result in (cancelled, refused, crashed):
        assert (result.started_at, result.duration_s, result.stdout, result.exit_code) == (None, 0.0, "", None)
        p.RESULT.check(result.to_wire())


def test_the_errors_a_worker_gives_read_as_before():
    assert timeout_error(1.5).to_wire() == {"type": "Timeout", "message": "exceeded timeout of 1.5 s", "traceback": ""}
    assert cancel_error("user asked").message == "cancelled: user asked"
    try:
        raise ValueError("bad value")
    except ValueError as e:
        error = exception_error(e)
    assert (error.type, error.message) == ("ValueError", "bad value") and "ValueError: bad value" in error.traceback


def test_the_outbox_sends_what_to_wire_gives():
    outbox = Outbox(p.DEFAULT_MAX_MESSAGE_BYTES)
    results = [AttemptResult("t1", 1, "done", value=[1, 2], started_at=10.0, duration_s=0.2),
               AttemptResult("t2", 1, "done", started_at=11.0),
               AttemptResult("t3", 1, "failed", error=TaskError("ImportError", "m", permanent=True))]
    for result in results:
        outbox.add(result)
    (message,) = outbox.messages(now=100.0, credit=3)
    assert message.results == [r.to_wire() for r in results]
    assert (message.credit, outbox.keys()) == (3, [["t1", 1], ["t2", 1], ["t3", 1]])
