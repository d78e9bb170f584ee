"""Workers with python_pool = "inline": python calls run in the worker process itself; real processes."""
from __future__ import annotations

import pytest

from zmqgrid.client import build_spec

from .helpers import Harness, assert_none_lost, db_query, wait_until

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def inline(tmp_path):
    h = Harness(tmp_path)
    h.start_master()
    h.start_worker("w1", "--python-pool", "inline")
    h.wait_online(h.client(), "w1")
    yield h
    h.stop()


def test_an_inline_worker_runs_calls_in_its_own_process_with_output_errors_and_timeouts(inline):
    client = inline.client()
    # In the worker process itself: no pool child
    assert client.run(build_spec(python="tests.tasks:getpid"), timeout_s=30)["value"] == inline.workers["w1"].pid
    echoed = client.run(build_spec(python="tests.tasks:echo", args=["hi"]), timeout_s=30)
    assert echoed["state"] == "done" and "echo to stdout: ('hi',)" in client.logs(echoed["id"])["stdout"]
    failed = client.run(build_spec(python="tests.tasks:raise_value_error", args=["boom"], retries=0), timeout_s=30)
    assert failed["state"] == "failed" and failed["error"]["message"] == "boom"
    timed_out = client.run(build_spec(python="tests.tasks:sleep", args=[60], timeout=0.5, retries=0), timeout_s=30)
    assert timed_out["state"] == "timed_out"
    # And the worker goes on: a batch of calls mixed with shell tasks all finish, each once
    specs = [build_spec(python="tests.tasks:add", args=[i, 1]) if i % 5 else build_spec(shell=f"echo {i}")
             for i in range(100)]
    ids = client.submit(specs, notify=True)
    results = client.wait(ids, timeout_s=60)
    assert {r["state"] for r in results.values()} == {"done"}
    assert [results[s["id"]]["value"] for s in specs if s["kind"] == "python"] == [i + 1 for i in range(100) if i % 5]
    assert assert_none_lost(inline.db, ids)["done"] == 100
    assert db_query(inline.db, "SELECT count(*) FROM attempts WHERE task_id IN (%s)" % ",".join("?" * 100),
                    tuple(ids)) == [(100,)]


def test_a_long_inline_call_keeps_its_lease_through_many_heartbeats(inline):
    # Heartbeats every 0.2 s and device_timeout 1.5 s (the suite's settings): 3 s is many of both
    client = inline.client()
    task_id = client.submit(build_spec(python="zmqgrid.samples:nap", args=[3.0]), notify=True)[0]
    wait_until(lambda: client.task(task_id)["state"] == "running", 20, "the call to run")
    result = client.wait([task_id], timeout_s=30)[task_id]
    assert result["state"] == "done" and result["attempt"] == 1
    assert [a["state"] for a in client.task(task_id)["attempts"]] == ["done"]
    assert inline.online(client) == {"w1"}
