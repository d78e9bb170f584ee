"""The rule that decides whether a failed attempt with retries left is retried (master/retrying.py), as a pure
function: the worker's `permanent` mark, and the task's retry_on / no_retry_on (docs/architecture.md, "Failures
that are not retried")."""
from __future__ import annotations

import signal

import pytest

from zmqgrid.client import build_spec
from zmqgrid.master.retrying import RetryRule, RetryRules, not_retried

from ..helpers import Harness, wait_until

pytestmark = pytest.mark.timeout(90)


def rule(retry_on=None, no_retry_on=None) -> RetryRule:
    return RetryRules().of({"retry_on": retry_on, "no_retry_on": no_retry_on})


PERMANENT = {"type": "ModuleNotFoundError", "message": "No module named 'x'", "permanent": True}
VALUE = {"type": "ValueError", "message": "bad"}


def case_id(value) -> str:
    """A test id that is the same in every process (a frozenset's order depends on the hash seed, and pytest-xdist
    workers must collect the same ids)."""
    if isinstance(value, RetryRule):
        return f"retry_on={sorted(value.retry_on or ())} no_retry_on={sorted(value.no_retry_on or ())}"
    return str(value)[:40]


@pytest.mark.parametrize("error, given, why", [
    (VALUE, None, None),                                              # no lists: every failure is retried
    (None, None, None),                                               # a failure without an error dict too
    ({"type": "Timeout"}, None, None),
    (PERMANENT, None, "ModuleNotFoundError recurs on every attempt"),
    ({**PERMANENT, "permanent": "yes"}, None, None),                   # only a true mark counts
    (PERMANENT, rule(retry_on=["ModuleNotFoundError"]), None),        # named in retry_on: the user knows better
    (PERMANENT, rule(no_retry_on=["ValueError"]), "ModuleNotFoundError recurs on every attempt"),
    (VALUE, rule(no_retry_on=["ValueError", "KeyError"]), "ValueError is in no_retry_on"),
    (VALUE, rule(no_retry_on=["KeyError"]), None),
    (VALUE, rule(retry_on=["ConnectionError"]), "ValueError is not in retry_on"),
    (VALUE, rule(retry_on=["ValueError"]), None),
    ({"type": "Timeout"}, rule(retry_on=["ConnectionError"]), "Timeout is not in retry_on"),
    ({"type": "Timeout"}, rule(retry_on=["ConnectionError", "Timeout"]), None),
    ({"type": "JSONDecodeError"}, rule(no_retry_on=["ValueError"]), None),   # by name: no base classes
], ids=case_id)
def test_a_failure_is_retried_unless_the_worker_marked_it_or_the_tasks_lists_say_otherwise(error, given, why):
    assert not_retried(error, given) == why


def test_a_task_without_lists_has_no_rule_and_equal_lists_share_one():
    rules = RetryRules()
    assert rules.of({}) is None and rules.of({"retry_on": None, "no_retry_on": []}) is None
    a = rules.of({"retry_on": ["OSError"], "no_retry_on": None})
    b = rules.of({"retry_on": ["OSError"]})
    assert a is b and a == RetryRule(frozenset({"OSError"}), None)
    assert rules.of({"no_retry_on": ["OSError"]}) == RetryRule(None, frozenset({"OSError"}))


def test_the_shared_rules_stay_bounded():
    rules = RetryRules(most=10)
    for n in range(25):
        assert rules.of({"retry_on": [f"E{n}"]}).retry_on == {f"E{n}"}
    assert len(rules.known) <= 10


# ------------------------------------------------------------------ on a real master and worker

@pytest.fixture
def harness(tmp_path):
    h = Harness(tmp_path)
    try:
        yield h
    finally:
        h.stop()


def test_from_python_a_call_that_cannot_bind_and_a_missing_program_fail_once_and_the_lists_apply(harness):
    harness.start_master()
    harness.start_worker("w1", concurrency=4)
    client = harness.client()
    harness.wait_online(client, "w1")

    wrong_arity = client.run(build_spec(python="tests.tasks:add", args=[1], retries=3), timeout_s=30)
    assert (wrong_arity["state"], wrong_arity["attempt"], wrong_arity["error"]["type"]) == ("failed", 1, "TypeError")
    assert wrong_arity["reason"] == "attempt 1 failed, not retried: TypeError recurs on every attempt"

    no_program = client.run(build_spec(shell=["zmqgrid-no-such-program-xyz"], retries=3), timeout_s=30)
    assert (no_program["attempt"], no_program["error"]["type"]) == (1, "StartError")

    # A batch of calls shares its options (Client.map): the list travels once and holds for every call
    ids = client.map("tests.tasks:raise_value_error", [("a",), ("b",)], notify=True, retries=3,
                     no_retry_on=["ValueError"])
    ended = client.wait(ids, timeout_s=30)
    assert [(ended[i]["attempt"], ended[i]["reason"]) for i in ids] == \
        [(1, "attempt 1 failed, not retried: ValueError is in no_retry_on")] * 2


def test_a_tasks_lists_hold_across_a_master_restart_and_a_requeue(harness):
    # Given a task with no_retry_on, queued (no worker has its tag) when the master is killed
    harness.start_master()
    client = harness.client()
    [task_id] = client.submit(build_spec(python="tests.tasks:raise_value_error", retries=3, tag="later",
                                         no_retry_on=["ValueError"], retry_backoff=0))
    harness.kill(harness.master, signal.SIGKILL)

    # When a new master recovers it from the ledger and a worker that takes it comes
    harness.start_master()
    harness.start_worker("w1", "--tag", "later")
    client = harness.client()
    first = client.wait([task_id], timeout_s=30)[task_id]

    # Then it failed once, as its list says, and a requeue gives it one more attempt, not its retries again
    assert (first["state"], first["attempt"]) == ("failed", 1), first
    assert client.requeue([task_id]) == {task_id: "queued"}
    wait_until(lambda: client.task(task_id)["state"] == "failed" and client.task(task_id)["attempt"] == 2, 30,
               "the requeued task to fail again")
    again = client.task(task_id)
    assert again["reason"] == "attempt 2 failed, not retried: ValueError is in no_retry_on", again
    assert [a["attempt"] for a in again["attempts"]] == [1, 2]
