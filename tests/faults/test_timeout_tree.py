"""A timeout kills a shell task's whole tree: children and grandchildren, none survive (checked with psutil)."""
from __future__ import annotations

import os

import psutil
import pytest

from zmqgrid.client import build_spec

from ..helpers import wait_until

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def cluster(shared_cluster):
    """One cluster for the module: its tests kill nothing of it and read only their own tasks."""
    return shared_cluster


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE   # an unreaped corpse is dead
    except psutil.NoSuchProcess:
        return False


def test_a_timed_out_shell_task_leaves_no_child_or_grandchild_alive(cluster, tmp_path):
    # Given a shell task that starts a child, a grandchild in a subshell, and a nohup'd sleeper
    pids = tmp_path / "pids"
    command = (f"sleep 300 & echo $! >> {pids}; "
               f"sh -c 'sleep 300 & echo $! >> {pids}; sh -c \"sleep 300\" & echo $! >> {pids}; wait' & "
               f"echo $! >> {pids}; nohup sleep 300 >/dev/null 2>&1 & echo $! >> {pids}; echo started; wait")
    client = cluster.client()

    # When it exceeds its timeout
    task_id = client.submit(build_spec(shell=command, timeout=1.5, retries=0), notify=True)[0]
    wait_until(lambda: pids.exists() and len(pids.read_text().split()) >= 5, 20, "all descendants to start")
    started = [int(p) for p in pids.read_text().split()]
    assert all(_alive(p) for p in started)
    result = client.wait([task_id], timeout_s=30)[task_id]

    # Then it is recorded as timed out with its output so far, and every process of its tree is gone
    assert result["state"] == "timed_out" and result["error"]["type"] == "Timeout"
    assert "started" in client.logs(task_id)["stdout"]
    wait_until(lambda: not any(_alive(p) for p in started), 15, f"no survivor among {started}")
    assert client.task(task_id)["attempts"][0]["state"] == "timed_out"


def test_a_double_forked_setsid_grandchild_dies_at_the_tasks_timeout(cluster, tmp_path):
    # Given a shell task whose grandchild left both its session (setsid) and its parent (the subshell that
    # started it exits at once, so it is reparented away from the task's tree), with its output closed
    pids = tmp_path / "pids"
    command = (f"(setsid sh -c 'echo $$ >> {pids}; exec sleep 300' </dev/null >/dev/null 2>&1 &); "
               "echo started; sleep 300")
    client = cluster.client()
    task_id = client.submit(build_spec(shell=command, timeout=2, retries=0), notify=True)[0]
    wait_until(lambda: pids.exists() and pids.read_text().strip(), 20, "the grandchild to start")
    escaped = [psutil.Process(int(p)) for p in pids.read_text().split()]
    try:
        assert all(_alive(p.pid) for p in escaped)
        assert all(os.getsid(p.pid) == p.pid for p in escaped)   # its own session, not the task's

        # When the task exceeds its timeout
        result = client.wait([task_id], timeout_s=30)[task_id]

        # Then it is timed out and the grandchild is gone too (its pid checked with its create time)
        assert result["state"] == "timed_out"
        wait_until(lambda: not [p for p in escaped if p.is_running() and _alive(p.pid)], 15,
                   f"the setsid grandchild {[p.pid for p in escaped]} to die")
    finally:
        for proc in escaped:   # only what this test started, and only if it is still that process
            if proc.is_running():
                proc.kill()
