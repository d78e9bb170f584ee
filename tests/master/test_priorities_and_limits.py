"""Priorities (with the aging rule), per-key limits, routing by tag and device, and bulk cancel, on real workers.

The priority tests use one worker with concurrency 1 and prefetch 0 (credit 1), so the master hands out one
task per dispatch and the ledger's start order is the dispatch order.
"""
from __future__ import annotations

import subprocess
import sys

import pytest

from zmqgrid.client import build_spec

from ..helpers import REPO, Harness, db_query, sample_until, wait_until

pytestmark = pytest.mark.timeout(90)

AGING_EVERY = 10   # README, "Priorities": every 10th dispatch takes the oldest queued task


def expected_order(queued: list[tuple[str, int]], first_dispatch: int) -> list[str]:
    """The documented rule applied to tasks all queued before `first_dispatch` (1 = the master's first).

    `queued` is (label, priority) in submit order. Dispatch n takes the oldest task when n is a multiple of
    10, else the highest priority, oldest first within it.
    """
    waiting, order = list(queued), []
    for n in range(first_dispatch, first_dispatch + len(queued)):
        if n % AGING_EVERY == 0:
            pick = waiting[0]
        else:
            top = max(priority for _, priority in waiting)
            pick = next(item for item in waiting if item[1] == top)
        waiting.remove(pick)
        order.append(pick[0])
    return order


def one_slot_worker(harness: Harness):
    """A master and one worker w1 with credit 1 (concurrency 1, prefetch 0); returns a client."""
    harness.env["ZMQGRID_PREFETCH"] = "0"
    harness.start_master()
    harness.start_worker("w1", concurrency=1)
    client = harness.client()
    harness.wait_online(client, "w1")
    assert {d["device_id"]: d["credit"] for d in client.devices()} == {"w1": 1}
    return client


def start_order(harness: Harness, labels: dict[str, str]) -> list[str]:
    rows = db_query(harness.db, f"SELECT id, started_at FROM tasks WHERE id IN ({','.join('?' * len(labels))}) "
                                "ORDER BY started_at", tuple(labels))
    assert len(rows) == len(labels) and all(at is not None for _, at in rows), rows
    assert len({at for _, at in rows}) == len(rows), f"one slot: no two tasks started at once: {rows}"
    return [labels[task_id] for task_id, _ in rows]


# ------------------------------------------------------------------ priorities


@pytest.mark.parametrize("lows, highs", [(5, 5), (3, 12)], ids=["5-low-5-high", "3-low-12-high"])
def test_higher_priority_runs_first_fifo_within_a_priority_and_every_tenth_dispatch_takes_the_oldest(
        harness, lows, highs):
    client = one_slot_worker(harness)
    # Dispatch 1 (the master's first): a blocker takes the only slot.
    blocker = client.submit(build_spec(python="tests.tasks:sleep", args=[2.0]), notify=True)[0]
    wait_until(lambda: client.task(blocker)["state"] == "running", 10, "the blocker to run")

    # Lows first, then highs: all queued behind the blocker.
    low_ids = client.submit([build_spec(python="tests.tasks:noop", priority=0) for _ in range(lows)])
    high_ids = client.submit([build_spec(python="tests.tasks:noop", priority=10) for _ in range(highs)])
    assert client.task(blocker)["state"] == "running", "precondition: everything was queued before dispatch 2"
    labels = {**{i: f"L{n}" for n, i in enumerate(low_ids, 1)}, **{i: f"H{n}" for n, i in enumerate(high_ids, 1)}}

    results = client.wait([blocker, *low_ids, *high_ids], timeout_s=40)
    assert {r["state"] for r in results.values()} == {"done"}, results

    queued = [(f"L{n}", 0) for n in range(1, lows + 1)] + [(f"H{n}", 10) for n in range(1, highs + 1)]
    expected = expected_order(queued, first_dispatch=2)
    assert start_order(harness, labels) == expected
    if (lows, highs) == (5, 5):
        # Dispatch 10 takes the oldest queued task, which is L4 by then: the rule does not show here.
        assert expected == ["H1", "H2", "H3", "H4", "H5", "L1", "L2", "L3", "L4", "L5"]
    else:
        # Dispatches 2-9 take H1-H8, dispatch 10 the oldest (L1), then the highs go on.
        assert expected == ["H1", "H2", "H3", "H4", "H5", "H6", "H7", "H8", "L1",
                            "H9", "H10", "H11", "H12", "L2", "L3"]


def test_a_low_priority_task_is_not_starved_by_a_stream_of_high_ones(harness):
    client = one_slot_worker(harness)
    # One submit, so all 31 are queued before the master's first dispatch.
    specs = [build_spec(python="tests.tasks:noop", priority=0)]
    specs += [build_spec(python="tests.tasks:noop", priority=10) for _ in range(30)]
    ids = client.submit(specs, notify=True)
    results = client.wait(ids, timeout_s=40)
    assert {r["state"] for r in results.values()} == {"done"}, results

    labels = {ids[0]: "L1", **{i: f"H{n}" for n, i in enumerate(ids[1:], 1)}}
    order = start_order(harness, labels)
    position = order.index("L1") + 1
    assert position <= AGING_EVERY, f"the low task ran {position}th of 31: {order}"
    assert order == expected_order([("L1", 0)] + [(f"H{n}", 10) for n in range(1, 31)], first_dispatch=1)


# ------------------------------------------------------------------ per-key limits


def test_a_concurrency_limit_keeps_at_most_k_tasks_of_the_key_running(harness):
    harness.start_master()
    harness.start_worker("w1", concurrency=3)
    harness.start_worker("w2", concurrency=3)
    client = harness.client()
    harness.wait_online(client, "w1", "w2")

    ids = client.submit([build_spec(python="tests.tasks:sleep", args=[0.3], limit_key="example.com",
                                    limit_concurrency=2) for _ in range(12)], notify=True)
    marks = ",".join("?" * len(ids))

    def handed() -> int:
        return db_query(harness.db, f"SELECT count(*) FROM tasks WHERE state IN ('assigned', 'running') "
                                    f"AND id IN ({marks})", tuple(ids))[0][0]

    def all_done() -> bool:
        return db_query(harness.db, f"SELECT count(*) FROM tasks WHERE state = 'done' AND id IN ({marks})",
                        tuple(ids))[0][0] == len(ids)

    # The last one waits longest; while it does, `tasks show` says for what.
    wait_until(lambda: client.task(ids[-1]).get("waiting") == "waiting for room under limit key example.com: "
                                                              "2/2 running", 5, "the waiting reason of a parked task")
    seen = sample_until(handed, all_done, 30)
    assert max(seen) == 2, f"peak {max(seen)} tasks of a key limited to 2 at once"
    assert {r["state"] for r in client.wait(ids, timeout_s=10).values()} == {"done"}


def test_a_per_minute_limit_starts_at_most_r_tasks_and_says_why_the_rest_wait(harness):
    harness.start_master()
    harness.start_worker("w1", concurrency=3)
    client = harness.client()
    harness.wait_online(client, "w1")

    ids = client.submit([build_spec(python="tests.tasks:noop", limit_key="b.example", limit_per_minute=3)
                         for _ in range(5)], notify=True)
    # The first three (FIFO) run; the other two wait for the window to slide, a minute from now.
    assert {r["state"] for r in client.wait(ids[:3], timeout_s=20).values()} == {"done"}
    for task_id in ids[3:]:
        task = client.task(task_id)
        assert task["state"] == "queued", task
        assert "b.example" in task["waiting"] and "last minute" in task["waiting"], task["waiting"]
    assert client.task(ids[4])["waiting"] == "waiting for room under limit key b.example: 3/3 started in the last minute"

    assert client.cancel(ids[3:]) == {ids[3]: "cancelled", ids[4]: "cancelled"}
    states = dict(db_query(harness.db, "SELECT id, state FROM tasks"))
    assert [states[i] for i in ids] == ["done"] * 3 + ["cancelled"] * 2


def test_cancelling_a_task_parked_under_a_limit_key_leaves_the_key_working(harness):
    harness.start_master()
    harness.start_worker("w1", concurrency=3)
    client = harness.client()
    harness.wait_online(client, "w1")

    limited = {"limit_key": "c.example", "limit_concurrency": 1}
    first = client.submit(build_spec(python="tests.tasks:sleep", args=[1.0], **limited), notify=True)[0]
    parked, later = client.submit([build_spec(python="tests.tasks:noop", **limited) for _ in range(2)], notify=True)
    assert client.task(parked)["waiting"] == "waiting for room under limit key c.example: 1/1 running"

    # When a parked task is cancelled, and then the running one ends and makes room under the key
    assert client.cancel([parked]) == {parked: "cancelled"}

    def state(task_id: str) -> str:
        return db_query(harness.db, "SELECT state FROM tasks WHERE id = ?", (task_id,))[0][0]
    wait_until(lambda: harness.master.poll() is not None or state(later) == "done", 15,
               "the next task of the key to be done (or the master to exit)")

    # Then the master is still serving, and the next parked task of the key ran
    assert harness.master.poll() is None, \
        f"master exited {harness.master.returncode}: {(harness.dir / 'master.out').read_text()[-400:]}"
    assert [state(first), state(parked), state(later)] == ["done", "cancelled", "done"]


# ------------------------------------------------------------------ routing


def test_a_task_for_a_tag_nobody_has_waits_says_why_and_runs_when_such_a_worker_joins(harness):
    harness.start_master()
    harness.start_worker("w1")
    client = harness.client()
    harness.wait_online(client, "w1")

    gpu = client.submit(build_spec(python="tests.tasks:noop", tags=["gpu"]), notify=True)[0]
    ghost = client.submit(build_spec(python="tests.tasks:noop", device="ghost"))[0]
    task = client.task(gpu)
    assert task["state"] == "queued" and task["waiting"] == "no online worker has tag gpu", task
    task = client.task(ghost)
    assert task["state"] == "queued" and task["waiting"] == "device ghost is not online", task

    harness.start_worker("g1", "--tag", "gpu")
    result = client.wait([gpu], timeout_s=20)[gpu]
    assert result["state"] == "done" and result["device_id"] == "g1", result
    task = client.task(ghost)
    assert task["state"] == "queued" and task["waiting"] == "device ghost is not online", task


def test_a_task_only_a_draining_worker_could_take_says_that_worker_is_draining(harness):
    # `devices drain w1` then a submit: "no worker is online" would send the operator looking for a dead worker
    harness.start_master()
    harness.start_worker("w1")
    client = harness.client()
    harness.wait_online(client, "w1")
    client.control_devices("drain", ["w1"])
    wait_until(lambda: client.devices()[0]["state"] == "draining", 10, "w1 draining")

    plain = client.submit(build_spec(python="tests.tasks:noop"))[0]
    pinned = client.submit(build_spec(python="tests.tasks:noop", device="w1"))[0]
    gpu = client.submit(build_spec(python="tests.tasks:noop", tags=["gpu"]))[0]
    assert client.task(plain)["waiting"] == "no worker is online; w1 could take it but is draining"
    assert client.task(pinned)["waiting"] == "device w1 is draining"
    assert client.task(gpu)["waiting"] == "no worker is online"   # w1 could not take it anyway

    client.control_devices("resume", ["w1"])
    results = client.wait([plain, pinned], timeout_s=20)
    assert {r["state"] for r in results.values()} == {"done"}, results


def test_tasks_show_on_the_command_line_says_why_a_task_waits(harness):
    harness.start_master()
    harness.start_worker("w1")
    client = harness.client()
    harness.wait_online(client, "w1")
    gpu = client.submit(build_spec(python="tests.tasks:noop", tags=["gpu"]))[0]

    shown = subprocess.run([sys.executable, str(REPO / "main.py"), "tasks", "show", gpu, "--master", harness.url],
                           env=harness.env, capture_output=True, text=True, timeout=30)
    assert shown.returncode == 0, shown.stderr
    assert "queued" in shown.stdout
    assert "no online worker has tag gpu" in shown.stdout, shown.stdout


# ------------------------------------------------------------------ bulk cancel


def test_bulk_cancel_by_state_and_tag_through_the_client_and_the_command_line(harness):
    harness.start_master()
    harness.start_worker("w1")
    client = harness.client()
    harness.wait_online(client, "w1")

    gpu = client.submit([build_spec(python="tests.tasks:noop", tags=["gpu"]) for _ in range(10)])
    ghost = client.submit([build_spec(python="tests.tasks:noop", device="ghost") for _ in range(3)])
    assert {client.task(i)["state"] for i in gpu + ghost} == {"queued"}

    # By state and tag: exactly the ten gpu tasks, not the others
    assert client.cancel(state="queued", tag="gpu") == dict.fromkeys(gpu, "cancelled")
    states = dict(db_query(harness.db, "SELECT id, state FROM tasks"))
    assert [states[i] for i in gpu] == ["cancelled"] * 10
    assert [states[i] for i in ghost] == ["queued"] * 3

    # By state, from the command line: the rest
    cli = subprocess.run([sys.executable, str(REPO / "main.py"), "tasks", "cancel", "--state", "queued",
                          "--master", harness.url], env=harness.env, capture_output=True, text=True, timeout=30)
    assert cli.returncode == 0, cli.stderr
    assert sorted(cli.stdout.splitlines()) == sorted(f"{i} cancelled" for i in ghost), cli.stdout
    states = dict(db_query(harness.db, "SELECT id, state FROM tasks"))
    assert [states[i] for i in gpu + ghost] == ["cancelled"] * 13
    assert client.cancel(state="queued") == {}
