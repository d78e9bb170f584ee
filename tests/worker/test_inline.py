"""Inline python calls (python_pool = "inline"), run in this test's own main thread as a worker runs them."""
from __future__ import annotations

import signal
import sys

import pytest

from zmqgrid.worker import inline
from zmqgrid.worker.inline import InlineCalls

# pytest-timeout's default method is SIGALRM too, which the inline timer replaces: these tests use a thread.
pytestmark = pytest.mark.timeout(60, method="thread")


def task(function: str, *args, timeout: float | None = None, n: int = 1) -> dict:
    return {"id": f"t{n}", "attempt": 1, "kind": "python", "function": function, "args": list(args),
            "timeout": timeout}


def test_a_call_returns_its_value_and_what_it_printed_and_restores_the_streams():
    calls = InlineCalls(max_output_bytes=1 << 20, default_timeout_s=None)
    streams = sys.stdout, sys.stderr
    result = calls.call(task("tests.tasks:echo", 1, "two"))
    assert (sys.stdout, sys.stderr) == streams
    assert result.state == "done" and result.value == {"args": [1, "two"], "kwargs": {}}
    assert result.stdout == "echo to stdout: (1, 'two')\n" and result.stderr == "echo to stderr: {}\n"
    assert (result.id, result.attempt, result.error) == ("t1", 1, None)
    assert result.finished_at >= result.started_at and result.duration_s >= 0


@pytest.mark.parametrize("function, error_type, message", [
    ("tests.tasks:raise_value_error", "ValueError", "bad value"),
    ("tests.tasks:system_exit", "SystemExit", "5"),
    ("tests.tasks:return_unserialisable", "TypeError", "not msgpack-serialisable"),
    ("tests.tasks:return_broken_dict", "TypeError", "items() is broken"),   # msgpack runs the value's own code
    ("tests.tasks:raise_unprintable", "_Unprintable", "str() failed"),
    ("tests.no_such_module:f", "ModuleNotFoundError", "tests.no_such_module"),
])
def test_a_failing_call_ends_failed_with_its_error_and_the_caller_goes_on(function, error_type, message):
    calls = InlineCalls(max_output_bytes=1 << 20, default_timeout_s=None)
    result = calls.call(task(function))
    assert result.state == "failed" and result.value is None
    assert result.error.type == error_type and message in result.error.message
    if error_type == "ValueError":
        assert "raise ValueError" in result.error.traceback
    assert calls.call(task("tests.tasks:add", 1, 2)).value == 3


def test_the_timer_interrupts_a_call_at_its_timeout():
    calls = InlineCalls(max_output_bytes=1 << 20, default_timeout_s=None)
    assert calls.enforces_timeouts
    result = calls.call(task("tests.tasks:sleep", 30, "before the timeout", timeout=0.3))
    assert result.state == "timed_out" and result.error.type == "Timeout"
    assert result.stdout == "before the timeout\n"
    assert result.duration_s < 20, "interrupted, not slept through"
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0), "disarmed after a timeout"
    assert calls.call(task("zmqgrid.samples:nap", 0.1, timeout=5)).state == "done"
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0), "disarmed after a call that returned in time"


def test_a_call_that_swallows_the_timeout_is_interrupted_again():
    calls = InlineCalls(max_output_bytes=1 << 20, default_timeout_s=None)
    result = calls.call(task("tests.tasks:swallow_once", 30, timeout=0.3))
    assert result.state == "timed_out" and result.duration_s < 20, "the timer fired again"
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_a_returned_value_is_a_copy_that_later_calls_cannot_change():
    calls = InlineCalls(max_output_bytes=1 << 20, default_timeout_s=None)
    first = calls.call(task("tests.tasks:grow")).value
    second = calls.call(task("tests.tasks:grow")).value
    assert first == [0] and second == [0, 1]


def test_the_default_timeout_applies_and_a_call_that_swallows_the_timer_still_times_out():
    calls = InlineCalls(max_output_bytes=1 << 20, default_timeout_s=0.3)
    result = calls.call(task("tests.tasks:swallow_timeout", 30))
    assert result.state == "timed_out" and result.value is None


def test_output_beyond_the_cap_is_cut_with_a_marker():
    calls = InlineCalls(max_output_bytes=10_000, default_timeout_s=None)
    result = calls.call(task("tests.tasks:print_bytes", 100_000))
    assert result.state == "done" and result.value == 100_000
    assert "bytes of stdout cut" in result.stdout and len(result.stdout) < 11_000


def test_a_run_stops_after_the_turn_budget_and_hands_back_the_rest_in_order(monkeypatch):
    calls = InlineCalls(max_output_bytes=1 << 20, default_timeout_s=None)
    tasks = [task("zmqgrid.samples:nap", inline.TURN_BUDGET_S * 1.2, n=n) for n in range(4)]
    results, rest = calls.run(tasks)
    assert [r.id for r in results] == ["t0"] and rest == tasks[1:]
    monkeypatch.setattr(inline, "TURN_BUDGET_S", 600.0)   # within the budget: every call runs
    results, rest = calls.run([task("tests.tasks:add", n, 1, n=n) for n in range(3)])
    assert [r.value for r in results] == [1, 2, 3] and rest == []
