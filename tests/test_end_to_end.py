"""The whole system through real processes: 200 mixed tasks, outputs, exit codes and return values.

The tests of a `cluster` share one per module (and those of `any_cluster` one per way, open and secured): each
kills nothing and reads only the tasks it submitted."""
from __future__ import annotations

import pytest

from zmqgrid.client import build_spec
from zmqgrid.errors import SubmitRefused

from .helpers import Harness, account, db_query, wait_until

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def cluster(shared_cluster):
    return shared_cluster


@pytest.fixture
def any_cluster(shared_any_cluster):
    return shared_any_cluster


def of_tasks(db, sql: str, ids: list[str]) -> list:
    """db_query of `sql` (which ends in WHERE or AND) on exactly these tasks."""
    return db_query(db, f"{sql} id IN ({','.join('?' * len(ids))})", tuple(ids))


def test_200_mixed_tasks_all_finish_with_right_outputs_exit_codes_and_values(any_cluster, tmp_path):
    cluster = any_cluster
    # Given a script file, and 200 tasks of the three kinds
    script = tmp_path / "square.py"
    script.write_text("import sys\nn = int(sys.argv[1])\nprint(f'square={n * n}')\nsys.exit(n % 3 == 0 and 0 or 0)\n")
    specs, expect = [], {}
    for i in range(200):
        if i % 3 == 0:
            spec = build_spec(shell=f"echo shell-{i}; exit {i % 5 == 0 and 4 or 0}", retries=0)
            expect[spec["id"]] = ("failed" if i % 5 == 0 else "done", f"shell-{i}", 4 if i % 5 == 0 else 0, None)
        elif i % 3 == 1:
            spec = build_spec(script=str(script), args=[str(i)])
            expect[spec["id"]] = ("done", f"square={i * i}", 0, None)
        else:
            spec = build_spec(python="tests.tasks:add", args=[i, 0.5])
            expect[spec["id"]] = ("done", "", None, i + 0.5)
        specs.append(spec)
    client = cluster.client()

    # When they are submitted in one batch and waited for
    ids = client.submit(specs, notify=True)
    results = client.wait(ids, timeout_s=90)

    # Then every task ended as expected, and the ledger agrees
    assert len(ids) == 200 and set(results) == set(ids)
    for task_id, (state, out, exit_code, value) in expect.items():
        r = results[task_id]
        assert r["state"] == state, (task_id, r)
        assert r["exit_code"] == exit_code, (task_id, r)
        assert r["value"] == value, (task_id, r)
        if out:
            assert out in client.logs(task_id)["stdout"], task_id
    failed = sum(1 for e in expect.values() if e[0] == "failed")
    counts = account(cluster.db, ids)
    assert (counts["done"], counts["failed"], counts["missing"], counts["twice"]) == (200 - failed, failed, 0, 0)
    devices = {row[0] for row in of_tasks(cluster.db, "SELECT DISTINCT device_id FROM tasks WHERE", ids)}
    assert devices == {"w1", "w2"}, "both workers took work"


def test_python_exception_travels_back_with_type_message_and_traceback(any_cluster):
    cluster = any_cluster
    client = cluster.client()
    result = client.run(build_spec(python="tests.tasks:raise_value_error", args=["boom"], retries=0), timeout_s=30)
    assert result["state"] == "failed"
    assert result["error"]["type"] == "ValueError" and result["error"]["message"] == "boom"
    shown = client.task(result["id"])
    assert "raise ValueError" in shown["error"]["traceback"]
    assert [a["state"] for a in shown["attempts"]] == ["failed"]


def test_a_worker_replaces_its_python_child_after_max_tasks_per_child(tmp_path):
    h = Harness(tmp_path, env={"ZMQGRID_MAX_TASKS_PER_CHILD": "2"})
    try:
        h.start_master()
        h.start_worker("w1", concurrency=1)
        client = h.client()
        h.wait_online(client, "w1")
        pids = [client.run(build_spec(python="tests.tasks:getpid"), timeout_s=30)["value"] for _ in range(4)]
        assert pids[0] == pids[1] != pids[2] == pids[3]
    finally:
        h.stop()


def test_failed_task_is_retried_up_to_its_retry_limit(cluster):
    client = cluster.client()
    result = client.run(build_spec(shell="exit 7", retries=2), timeout_s=30)
    assert result["state"] == "failed" and result["exit_code"] == 7 and result["attempt"] == 3
    assert [a["state"] for a in client.task(result["id"])["attempts"]] == ["failed", "failed", "failed"]


def test_shell_task_env_and_cwd_are_applied(cluster, tmp_path):
    client = cluster.client()
    result = client.run(build_spec(shell="echo $GREETING; pwd", env={"GREETING": "hej"}, cwd=str(tmp_path)), 30)
    assert result["state"] == "done"
    out = client.logs(result["id"])["stdout"]
    assert out.splitlines() == ["hej", str(tmp_path)]


def test_timeout_is_recorded_as_timed_out_with_output_so_far(cluster):
    client = cluster.client()
    result = client.run(build_spec(shell="echo started; sleep 30", timeout=0.5, retries=0), timeout_s=30)
    assert result["state"] == "timed_out"
    assert "started" in client.logs(result["id"])["stdout"]


def test_cancel_of_a_running_task_kills_it_and_records_cancelled(any_cluster):
    cluster = any_cluster
    client = cluster.client()
    task_id = client.submit(build_spec(shell="sleep 60"), notify=True)[0]
    from .helpers import wait_until
    wait_until(lambda: client.task(task_id)["state"] == "running", 20, "the task to run")
    assert client.cancel([task_id]) == {task_id: "cancelling"}
    assert client.wait([task_id], timeout_s=20)[task_id]["state"] == "cancelled"
    assert client.cancel([task_id]) == {task_id: "already cancelled"}


def test_resubmitting_the_same_task_id_does_not_run_it_twice(cluster):
    client = cluster.client()
    spec = build_spec(python="tests.tasks:add", args=[1, 2])
    first = client.submit(dict(spec), notify=True)
    client.wait(first, 30)
    assert client.submit(dict(spec)) == first
    assert db_query(cluster.db, "SELECT count(*), max(attempt) FROM tasks WHERE id = ?", (spec["id"],)) == [(1, 1)]


def test_submits_sent_back_to_back_are_deduplicated_and_seen_by_the_next_message(cluster):
    from zmqgrid.model import compact_spec
    from zmqgrid.protocol import Control, Reply, Submit
    client = cluster.client()
    done = build_spec(python="tests.tasks:add", args=[1, 1])
    client.wait(client.submit(dict(done), notify=True), 30)   # finished: in the ledger only, not in memory

    # When, without waiting, three Submits (a new long task, the finished one again, the new one again) and a
    # cancel of the new one go out: the master reads them in one turn or several, and applies a turn's Submits
    # together, before any other kind of message
    slow = build_spec(python="tests.tasks:sleep", args=[60])
    client._send(Submit(1, [compact_spec(slow)], False))
    client._send(Submit(2, [compact_spec(done)], False))
    client._send(Submit(3, [compact_spec(slow)], False))
    client._send(Control(4, "cancel", {"ids": [slow["id"]]}))
    replies = {}
    while len(replies) < 4:
        msg = client._receive(10)
        assert msg is not None, f"only {sorted(replies)} of 4 requests answered"
        if isinstance(msg, Reply):
            replies[msg.req_id] = msg.data

    # Then each Submit is acknowledged with its id, the cancel finds the task submitted just before it, and each
    # task is in the ledger once: the finished one untouched, the new one cancelled
    assert [replies[i]["ids"] for i in (1, 2, 3)] == [[slow["id"]], [done["id"]], [slow["id"]]]
    assert replies[4][slow["id"]] in ("cancelled", "cancelling"), replies[4]
    assert client.wait([slow["id"]], 30)[slow["id"]]["state"] == "cancelled"
    rows = db_query(cluster.db, "SELECT id, state, attempt FROM tasks WHERE id IN (?, ?)", (done["id"], slow["id"]))
    assert len(rows) == 2
    states = {task_id: (state, attempt) for task_id, state, attempt in rows}
    assert states[done["id"]] == ("done", 1) and states[slow["id"]][0] == "cancelled"


def test_map_runs_one_call_per_argument_tuple_with_the_shared_options(cluster):
    client = cluster.client()

    # When 300 calls go through map with options every call shares, in batches of 100
    ids = client.map("tests.tasks:add", [(i, 1) for i in range(300)], notify=True, batch_size=100, timeout=30,
                     retries=1, priority=2)

    # Then each ran with its own arguments, in the order given, and the shared options are on every task
    results = client.wait(ids, 60)
    assert [results[i]["value"] for i in ids] == [i + 1 for i in range(300)]
    assert len(set(ids)) == 300 and ids == sorted(ids)   # ids sort by creation
    rows = db_query(cluster.db, "SELECT timeout_s, retries, priority, state, count(*) FROM tasks WHERE id IN "
                                f"({','.join('?' * len(ids))}) GROUP BY 1, 2, 3, 4", tuple(ids))
    assert rows == [(30.0, 1, 2, "done", 300)]
    assert client.task(ids[7])["spec"]["args"] == [7, 1]


def test_submitting_the_same_batch_of_calls_twice_runs_each_once(cluster):
    client = cluster.client()
    specs = [build_spec(python="tests.tasks:add", args=[i, 2]) for i in range(50)]
    first = client.submit([dict(s) for s in specs], notify=True)   # travels as one shared part + 50 calls
    client.wait(first, 30)
    assert client.submit([dict(s) for s in specs]) == first
    assert of_tasks(cluster.db, "SELECT count(*), max(attempt) FROM tasks WHERE", first) == [(50, 1)]


@pytest.mark.parametrize("call, reason", [
    (lambda c: c.map("tests.tasks:add", [1, 2]), "must be a list or tuple"),
    (lambda c: c.map("tests.tasks:add", [(1, 2)] * 1500 + [3]), "must be a list or tuple"),   # after a whole batch
    (lambda c: c.map("tests.tasks:add", [(1, 2)], args=[1]), "takes its arguments from"),
    (lambda c: c.map("no_colon", [(1, 2)]), "must look like"),
    (lambda c: c.map("tests.tasks:add", [(1, 2)], timeout=-1), "must be > 0"),
])
def test_a_bad_map_is_refused_before_anything_is_sent(cluster, call, reason):
    from zmqgrid.errors import UsageError
    client = cluster.client()
    before = db_query(cluster.db, "SELECT count(*) FROM tasks")
    with pytest.raises(UsageError, match=reason):
        call(client)
    client.status()   # answered after anything this client sent before it
    assert db_query(cluster.db, "SELECT count(*) FROM tasks") == before


def test_a_refused_batch_is_raised_once_every_batch_in_flight_has_answered_with_the_ids_committed(cluster):
    client = cluster.client()

    # When 20 one-task Submits go out 8 at a time and the 6th holds a task the master refuses
    specs: list = [build_spec(python="tests.tasks:add", args=[i, 1]) for i in range(20)]
    specs[5] = 42
    with pytest.raises(SubmitRefused) as refusal:
        client.submit(specs, batch_size=1, window=8)

    # Then the refusal says what was wrong and `submitted` holds the committed ids in submit order (the five before
    # the refused one at least; how many after depends on how many were in flight)
    assert "must be an object" in str(refusal.value)
    submitted = refusal.value.submitted
    good = [s["id"] for s in specs if isinstance(s, dict)]
    assert 5 <= len(submitted) and submitted == good[:len(submitted)]
    assert f"({len(submitted)} tasks of the other batches were committed)" in str(refusal.value)
    # And they are exactly the tasks of the call in the ledger: none was still on its way (a request on the same
    # connection is answered after every Submit before it)
    client.status()
    rows = db_query(cluster.db, f"SELECT id FROM tasks WHERE id IN ({','.join('?' * len(good))})", tuple(good))
    assert {r[0] for r in rows} == set(submitted)
    assert {r["state"] for r in client.wait(submitted, 30).values()} == {"done"}


def test_one_task_submits_in_flight_are_acknowledged_together_and_every_acknowledged_task_runs(cluster):
    from zmqgrid.model import compact_spec
    from zmqgrid.protocol import Reply, Submit, SubmitAcks
    client = cluster.client()
    specs = [build_spec(python="tests.tasks:add", args=[i, 1]) for i in range(200)]
    # When 200 one-task Submits with batch_acks go out without waiting
    for n, spec in enumerate(specs, 1):
        client._send(Submit(n, [compact_spec(spec)], True, {}, True))
    lines = []
    while len(lines) < len(specs):
        msg = client._receive(10)
        assert msg is not None, f"only {len(lines)} of {len(specs)} Submits answered"
        assert not isinstance(msg, Reply), "a Submit with batch_acks was answered on its own"
        if isinstance(msg, SubmitAcks):
            lines += msg.pairs()
    # Then each is acknowledged once, with its own id, by SubmitAcks lines
    assert sorted(lines) == [(n, [spec["id"]]) for n, spec in enumerate(specs, 1)]
    # And every acknowledged task is in the ledger and runs to done
    ids = [spec["id"] for spec in specs]
    results = client.wait(ids, timeout_s=60)
    assert {r["state"] for r in results.values()} == {"done"}
    assert of_tasks(cluster.db, "SELECT count(*) FROM tasks WHERE state = 'done' AND", ids) == [(len(specs),)]


def test_submit_with_many_small_batches_in_flight_returns_every_id_in_order(cluster):
    client = cluster.client()
    specs = [build_spec(python="tests.tasks:add", args=[i, 2]) for i in range(300)]
    # When 300 tasks go one per Submit with 64 in flight (the client asks for batched answers)
    ids = client.submit(specs, notify=True, batch_size=1, window=64)
    # Then the ids come back in submit order, every task is in the ledger, and all finish
    assert ids == [spec["id"] for spec in specs]
    results = client.wait(ids, timeout_s=60)
    assert [results[i]["value"] for i in ids] == [i + 2 for i in range(300)]
    assert of_tasks(cluster.db, "SELECT count(*) FROM tasks WHERE state = 'done' AND", ids) == [(300,)]


def test_workers_are_fed_while_a_client_floods_the_master_with_one_task_submits(cluster):
    from zmqgrid.model import compact_spec
    from zmqgrid.protocol import Finished, SubmitAcks, Submit
    client = cluster.client()
    # Given workers whose python children have run the function once (imported, its speed known)
    warm = client.submit([build_spec(python="tests.tasks:add", args=[0, 0]) for _ in range(8)], notify=True)
    client.wait(warm, timeout_s=30)
    specs = [build_spec(python="tests.tasks:add", args=[i, 3]) for i in range(5000)]
    # When 5,000 one-task Submits go out at once
    for n, spec in enumerate(specs, 1):
        client._send(Submit(n, [compact_spec(spec)], True, {}, True))
    acked, finished_before_last_ack = 0, 0
    while acked < len(specs):
        msg = client._receive(30)
        assert msg is not None, f"only {acked} of {len(specs)} Submits answered"
        if isinstance(msg, SubmitAcks):
            acked += len(msg.pairs())
        elif isinstance(msg, Finished):
            finished_before_last_ack += len(msg.tasks)
    # Then tasks were dispatched and finished while the master was still reading Submits (a turn reads a bounded
    # number of messages, then dispatches), and every acknowledged task runs to done
    assert finished_before_last_ack > 0, "no task finished before the last Submit was acknowledged"
    results = client.wait([spec["id"] for spec in specs], timeout_s=90)
    assert [results[s["id"]]["value"] for s in specs] == [i + 3 for i in range(5000)]
    assert of_tasks(cluster.db, "SELECT count(*) FROM tasks WHERE state = 'done' AND",
                    warm + [s["id"] for s in specs]) == [(5008,)]


def test_submit_reads_a_generator_a_batch_at_a_time_while_the_first_batches_are_committed(cluster):
    client = cluster.client()
    first: list[str] = []

    def tasks():
        for i in range(250):
            if i == 200:   # the third batch is being built: the first one has gone out and is being committed
                wait_until(lambda: first and db_query(cluster.db, "SELECT count(*) FROM tasks WHERE id IN "
                                                      f"({','.join('?' * len(first))})", tuple(first)) == [(100,)],
                           20, "the first batch in the ledger before the generator is done")
            spec = build_spec(python="tests.tasks:add", args=[i, 4])
            if i < 100:
                first.append(spec["id"])
            yield spec
    # When a generator of 250 tasks is submitted 100 per Submit
    ids = client.submit(tasks(), notify=True, batch_size=100)
    # Then every task is acknowledged in order and runs
    assert len(ids) == 250 and ids[:100] == first
    results = client.wait(ids, timeout_s=60)
    assert [results[i]["value"] for i in ids] == [i + 4 for i in range(250)]


def test_a_generator_that_raises_part_way_leaves_the_batches_sent_before_it_submitted(cluster):
    client = cluster.client()
    specs = [build_spec(python="tests.tasks:add", args=[i, 5]) for i in range(120)]

    def tasks():
        yield from specs
        raise ValueError("the caller's source of tasks broke")
    # When the generator raises while the third batch of 50 is built
    with pytest.raises(ValueError, match="source of tasks broke"):
        client.submit(tasks(), notify=True, batch_size=50)
    # Then the first batch (sent before the second was read) is in the ledger and runs; the ones never sent are not
    sent = [s["id"] for s in specs[:50]]
    assert {r["state"] for r in client.wait(sent, timeout_s=60).values()} == {"done"}
    client.status()   # answered after anything this client sent before it
    rest = [s["id"] for s in specs[50:]]
    assert db_query(cluster.db, f"SELECT count(*) FROM tasks WHERE id IN ({','.join('?' * len(rest))})",
                    tuple(rest)) == [(0,)]
