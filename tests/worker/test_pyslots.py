"""PySlots on real processes: python calls in long-lived spawn children, driven by a poll loop as the worker does."""
from __future__ import annotations

import os
import time
from collections import deque
from typing import Any, Callable

import pytest
import zmq

from zmqgrid.worker.pyslots import PySlots
from zmqgrid.worker.results import AttemptResult

from .test_executors import assert_all_die, read_pids, task

pytestmark = pytest.mark.timeout(30)


class Driver:
    """The worker's loop in miniature: a poller over the children's pipes, handle() and expire() each turn."""

    def __init__(self, size: int = 1, **options: Any) -> None:
        self.poller = zmq.Poller()
        options.setdefault("max_output_bytes", 1 << 20)
        options.setdefault("default_timeout_s", None)
        self.requeued: list[dict] = []
        self.slots = PySlots(size=size, kill_grace_s=1.0, watch=lambda fd: self.poller.register(fd, zmq.POLLIN),
                             unwatch=self.poller.unregister, requeue=self.requeued.extend, **options)
        self.results: dict[str, AttemptResult] = {}

    def turn(self) -> None:
        for fd, _ in self.poller.poll(50):
            if fd in self.slots.watched:
                self.keep(self.slots.handle(fd))
        self.keep(self.slots.expire(time.monotonic()))

    def keep(self, results: list[AttemptResult]) -> None:
        self.results.update((r.id, r) for r in results)

    def until(self, predicate: Callable[[], Any], timeout_s: float = 20) -> Any:
        deadline = time.monotonic() + timeout_s
        while not (value := predicate()):
            assert time.monotonic() < deadline, "timed out driving the children"
            self.turn()
        return value

    def run(self, spec: dict, on_output: Callable[[str, str], None] | None = None) -> AttemptResult:
        assert self.slots.start(spec, on_output) is None
        return self.until(lambda: self.results.pop(spec["id"], None))


@pytest.fixture
def driver():
    made: list[Driver] = []

    def make(**options: Any) -> Driver:
        made.append(Driver(**options))
        return made[-1]
    yield make
    for d in made:
        d.slots.close()


def test_python_returns_a_value_and_captures_print(driver):
    d = driver()
    assert d.run(task("python", function="tests.tasks:add", args=[2, 3])).value == 5
    result = d.run(task("python", function="tests.tasks:echo", args=[1, "x"], kwargs={"k": [1]}))
    assert (result.state, result.exit_code, result.error) == ("done", None, None)
    assert result.value == {"args": [1, "x"], "kwargs": {"k": [1]}}
    assert result.stdout == "echo to stdout: (1, 'x')\n"
    assert result.stderr == "echo to stderr: {'k': [1]}\n"


def test_python_exception_gives_type_message_and_traceback(driver):
    result = driver().run(task("python", function="tests.tasks:raise_value_error", args=["nope"]))
    assert result.state == "failed"
    error = result.error
    assert (error.type, error.message) == ("ValueError", "nope")
    assert "raise_value_error" in error.traceback and "ValueError: nope" in error.traceback


def test_python_unserialisable_return_is_a_type_error(driver):
    result = driver().run(task("python", function="tests.tasks:return_unserialisable"))
    assert (result.state, result.value) == ("failed", None)
    assert result.error.type == "TypeError"
    assert "not msgpack-serialisable" in result.error.message


def test_bad_import_fails_and_the_child_survives(driver):
    d = driver()
    pid = d.run(task("python", function="tests.tasks:getpid")).value
    missing_module = d.run(task("python", function="tests.no_such_module:f"))
    missing_function = d.run(task("python", function="tests.tasks:no_such_function"))
    exits = d.run(task("python", function="tests.tasks:system_exit", args=[5]))
    assert missing_module.state == "failed"
    assert missing_module.error.type in ("ImportError", "ModuleNotFoundError")
    assert "tests.no_such_module" in missing_module.error.message
    assert missing_function.error.type == "AttributeError"
    assert "no_such_function" in missing_function.error.message
    assert (exits.state, exits.error.type) == ("failed", "SystemExit")
    assert d.run(task("python", function="tests.tasks:getpid")).value == pid


def test_an_exception_whose_str_raises_fails_its_call_and_the_child_survives(driver):
    d = driver()
    pid = d.run(task("python", function="tests.tasks:getpid")).value
    result = d.run(task("python", function="tests.tasks:raise_unprintable"))
    assert (result.state, result.error.type) == ("failed", "_Unprintable")
    assert "str() failed" in result.error.message and "raise_unprintable" in result.error.traceback
    assert d.run(task("python", function="tests.tasks:getpid")).value == pid


def test_python_output_is_capped_too(driver):
    result = driver(max_output_bytes=10_000).run(task("python", function="tests.tasks:print_bytes", args=[30_000]))
    assert result.state == "done"
    assert "[... zmqgrid: 20000 bytes of stdout cut ...]" in result.stdout
    assert len(result.stdout) < 10_100


def test_python_live_output_stops_at_the_cap(driver):
    streamed: list[str] = []
    result = driver(max_output_bytes=10_000).run(task("python", function="tests.tasks:print_bytes", args=[300_000]),
                                                 lambda stream, text: streamed.append(text))
    assert result.state == "done" and "bytes of stdout cut" in result.stdout
    assert 10_000 <= sum(map(len, streamed)) <= 10_000 + 65536


@pytest.mark.skipif(os.name != "posix", reason="niceness")
def test_python_children_run_nicer_than_the_worker(driver):
    assert driver(nice=4).run(task("python", function="tests.tasks:niceness")).value == min(19, os.nice(0) + 4)


def test_a_child_is_reused_across_calls(driver):
    d = driver()
    first = d.run(task("python", function="tests.tasks:getpid")).value
    second = d.run(task("python", function="tests.tasks:getpid")).value
    assert first == second != os.getpid()
    assert d.slots.pids() == [first]


def test_a_child_is_recycled_after_max_tasks(driver):
    d = driver(max_tasks_per_child=2)
    pids = [d.run(task("python", function="tests.tasks:getpid")).value for _ in range(3)]
    assert pids[0] == pids[1] != pids[2]
    assert_all_die([pids[0]])


def test_a_recycled_child_is_replaced_at_once_and_the_successor_serves_next(driver):
    d = driver(max_tasks_per_child=1)
    pid = d.run(task("python", function="tests.tasks:getpid")).value
    successor = d.slots.pids()
    assert len(successor) == 1 and successor[0] != pid      # booting already, before any call asks for it
    assert_all_die([pid])
    assert d.run(task("python", function="tests.tasks:getpid")).value == successor[0]


def test_zero_limits_never_recycle(driver):
    d = driver(max_tasks_per_child=0, max_child_memory_mb=0)
    pid = d.run(task("python", function="tests.tasks:getpid")).value
    assert d.run(task("python", function="tests.tasks:allocate", args=[200])).value == 200
    assert d.run(task("python", function="tests.tasks:getpid")).value == pid


def test_a_child_is_recycled_when_its_memory_grows(driver):
    d = driver(max_child_memory_mb=150)
    pid = d.run(task("python", function="tests.tasks:getpid")).value
    assert d.run(task("python", function="tests.tasks:allocate", args=[200])).value == 200
    assert d.run(task("python", function="tests.tasks:getpid")).value != pid
    assert_all_die([pid])


@pytest.mark.parametrize("function, exit_code", [
    ("tests.tasks:exit_hard", 3),
    pytest.param("tests.tasks:kill_self", -9, marks=pytest.mark.skipif(os.name != "posix", reason="SIGKILL")),
])
def test_a_child_that_dies_mid_call_is_reported_and_replaced(driver, function, exit_code):
    d = driver()
    pid = d.run(task("python", function="tests.tasks:getpid")).value
    result = d.run(task("python", function=function))
    assert (result.state, result.exit_code) == ("failed", exit_code)
    assert result.error.type == "WorkerChildDied"
    assert str(pid) in result.error.message
    assert d.run(task("python", function="tests.tasks:add", args=[1, 1])).value == 2


def test_a_timeout_kills_the_child_tree_and_the_next_call_gets_a_new_child(driver, tmp_path):
    d = driver()
    pid_file = tmp_path / "pids"
    result = d.run(task("python", function="tests.tasks:spawn_grandchild", args=[str(pid_file)], timeout=3))
    assert result.state == "timed_out"
    assert result.error.message == "exceeded timeout of 3 s"
    pids = read_pids(pid_file)
    assert len(pids) == 2, pids  # the child and the grandchild it started
    assert_all_die(pids)
    assert d.run(task("python", function="tests.tasks:getpid")).value not in pids


def test_a_timeout_keeps_output_printed_so_far(driver):
    result = driver().run(task("python", function="tests.tasks:sleep", args=[60, "before"], timeout=1.5))
    assert result.state == "timed_out"
    assert result.stdout == "before\n"
    assert result.duration_s < 20


def test_kill_of_a_running_call_is_cancelled_and_its_output_streamed(driver):
    d = driver()
    chunks: list[tuple[str, str]] = []
    spec = task("python", function="tests.tasks:sleep", args=[60, "started"])
    assert d.slots.start(spec, lambda stream, text: chunks.append((stream, text))) is None
    d.until(lambda: ("stdout", "started\n") in chunks)
    [pid] = d.slots.pids()
    [result] = d.slots.kill((spec["id"], spec["attempt"]), "user asked")
    assert result.state == "cancelled" and "user asked" in result.error.message
    assert result.stdout == "started\n"
    assert_all_die([pid])
    assert d.run(task("python", function="tests.tasks:noop")).state == "done"


def test_the_pool_starts_no_child_before_its_first_call_then_all_of_them(driver):
    d = driver(size=3)
    assert d.slots.pids() == [] and not d.slots.watched
    assert d.run(task("python", function="tests.tasks:noop")).state == "done"
    pids = d.slots.pids()
    assert len(pids) == 3
    assert d.run(task("python", function="tests.tasks:noop")).state == "done"
    assert d.slots.pids() == pids


def test_close_cancels_calls_and_leaves_no_child(driver):
    d = driver(size=2)
    spec = task("python", function="tests.tasks:sleep", args=[60])
    assert d.slots.start(spec) is None
    pids = d.slots.pids()
    assert len(pids) == 2
    d.slots.close()
    assert_all_die(pids)
    assert not d.slots.watched


# ---- batches: calls of functions seen to be fast go to one child in one message

def batch(d: Driver, specs: list[dict]) -> list[AttemptResult]:
    """Start `specs` as one batch and drive until each has a result or was given back for a re-run."""
    assert d.slots.start_batch([(s, None) for s in specs]) == []
    return d.until(lambda: len(d.results) + len(d.requeued) >= len(specs) and [d.results.get(s["id"]) for s in specs])


def test_fast_functions_are_batched_and_slow_or_unknown_ones_are_not(driver):
    d = driver(size=2)
    waiting = deque([task("python", function="tests.tasks:getpid") for _ in range(6)])
    assert d.slots.batch_size(waiting, 2) == 1    # never seen: one at a time
    # Its first call imports the module (slow); the measured duration decays to a tiny call's over a few calls.
    for _ in range(60):
        d.run(task("python", function="tests.tasks:getpid"))
        if d.slots.batch_size(waiting, 2) == 6:   # tiny (under 0.5 ms): all to one child, not spread
            break
    assert d.slots.batch_size(waiting, 2) == 6
    results = batch(d, list(waiting))
    assert [r.state for r in results] == ["done"] * 6
    assert len({r.value for r in results}) == 1   # one child ran the six, in one round trip


@pytest.mark.parametrize("seconds, free, expected", [(0.002, 2, 2), (0.002, 1, 4), (0.05, 1, 1), (0.0001, 2, 4)])
def test_how_many_calls_a_child_takes_follows_their_observed_duration(driver, seconds, free, expected):
    d = driver(size=2)
    d.slots.durations["tests.tasks:sleep"] = seconds   # as measured by earlier calls (see the test above)
    waiting = deque([task("python", function="tests.tasks:sleep", args=[seconds]) for _ in range(4)])
    assert d.slots.batch_size(waiting, free) == expected
    waiting.append(task("shell", command="true"))       # never batched with python calls
    waiting.rotate(1)
    assert d.slots.batch_size(waiting, free) == 1


def test_the_reply_to_a_lone_tiny_call_is_awaited_awake_for_a_bounded_time(driver):
    from zmqgrid.worker.pyslots import SPIN_S
    d = driver(size=2)
    d.slots.durations["tests.tasks:sleep"] = 0.0001   # as measured by earlier calls
    assert not d.slots.reply_due()                    # nothing out
    # A lone tiny call: the loop polls awake, but only for SPIN_S after it went out
    assert d.slots.start(task("python", function="tests.tasks:sleep", args=[0.2])) is None
    assert d.slots.reply_due()
    time.sleep(SPIN_S)   # the clock must move past the bound itself: the test is of that bound
    assert not d.slots.reply_due()
    d.until(lambda: d.results)
    d.results.clear()
    # Two calls out, or a call of a slow function: the loop sleeps in its poll as usual
    d.slots.durations["tests.tasks:sleep"] = 0.0001
    assert d.slots.start_batch([(task("python", function="tests.tasks:sleep", args=[0.2]), None) for _ in range(2)]) == []
    assert not d.slots.reply_due()
    d.until(lambda: d.results)
    d.slots.durations["tests.tasks:sleep"] = 0.05
    assert d.slots.start(task("python", function="tests.tasks:sleep", args=[0.2])) is None
    assert not d.slots.reply_due()


def test_each_call_of_a_batch_keeps_its_own_output_and_value(driver):
    d = driver()
    results = batch(d, [task("python", function="tests.tasks:echo", args=[i]) for i in range(3)])
    assert [r.value["args"] for r in results] == [[0], [1], [2]]
    assert [r.stdout for r in results] == [f"echo to stdout: ({i},)\n" for i in range(3)]


def test_a_timeout_in_a_batch_ends_that_call_keeps_the_earlier_and_gives_back_the_later(driver):
    d = driver()
    first, slow, later = (task("python", function="tests.tasks:noop"),
                          task("python", function="tests.tasks:sleep", args=[60], timeout=1.0),
                          task("python", function="tests.tasks:noop"))
    pid = d.run(task("python", function="tests.tasks:getpid")).value
    assert batch(d, [first, slow, later])[:2] and d.until(lambda: slow["id"] in d.results)
    assert d.results[first["id"]].state == "done"
    assert d.results[slow["id"]].state == "timed_out"
    assert later["id"] not in d.results and [t["id"] for t in d.requeued] == [later["id"]]
    assert_all_die([pid])


def test_a_child_dying_mid_batch_fails_that_call_only(driver):
    d = driver()
    first, killer, later = (task("python", function="tests.tasks:noop"), task("python", function="tests.tasks:exit_hard"),
                            task("python", function="tests.tasks:noop"))
    batch(d, [first, killer, later])
    d.until(lambda: killer["id"] in d.results)
    assert (d.results[killer["id"]].state, d.results[killer["id"]].exit_code) == ("failed", 3)
    # The earlier call's result died with the child unless it had been sent: then it runs again (at least once).
    ended = [t["id"] for t in d.requeued] + [i for i in d.results if i != killer["id"]]
    assert sorted(ended) == sorted([first["id"], later["id"]])
    assert later["id"] in [t["id"] for t in d.requeued]


def test_cancel_of_an_unstarted_call_skips_it_and_spares_the_child(driver):
    d = driver()
    pid = d.run(task("python", function="tests.tasks:getpid")).value
    chunks: list[tuple[str, str]] = []
    holder = task("python", function="tests.tasks:sleep", args=[1.0, "holding"])
    skipped, after = task("python", function="tests.tasks:noop"), task("python", function="tests.tasks:getpid")
    assert d.slots.start_batch([(holder, lambda s, t: chunks.append((s, t))), (skipped, None), (after, None)]) == []
    d.until(lambda: ("stdout", "holding\n") in chunks)
    assert d.slots.kill((skipped["id"], skipped["attempt"]), "user asked") == []   # its child reports it
    d.until(lambda: after["id"] in d.results)
    assert d.results[holder["id"]].state == "done"
    assert d.results[skipped["id"]].state == "cancelled"
    assert "user asked" in d.results[skipped["id"]].error.message
    assert d.results[after["id"]].value == pid and not d.requeued
