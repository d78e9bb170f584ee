"""A SIGKILLed worker's running tasks die with it, whole trees, whether it comes back or not, so a re-queued task
never runs twice at once: a shell task with children and grandchildren, a script and a python pool child that each
start such a tree. Each task's next attempt checks that no process of its first one still runs."""
from __future__ import annotations

import signal
from pathlib import Path

import psutil
import pytest

from zmqgrid.client import build_spec

from ..helpers import Harness, assert_none_lost, db_query, wait_until
from ..tasks import TREE_PIDS, tree_once_command

pytestmark = pytest.mark.timeout(120)

SCRIPT = "import sys\nfrom tests.tasks import tree_once\nprint(tree_once(sys.argv[1]))\n"
KINDS = {"shell": TREE_PIDS, "script": TREE_PIDS + 1, "python": TREE_PIDS + 1}   # pids each first attempt writes


@pytest.fixture(params=["true", "false"], ids=["cgroups", "no-cgroups"])
def task_cgroups(request) -> str:
    """With cgroups where the worker may make them (this host, as root), and without, as on macOS or a non-root Linux."""
    return request.param


def _submit(harness: Harness, tmp_path: Path) -> dict[str, tuple[str, Path]]:
    client = harness.client()
    script = tmp_path / "tree.py"
    script.write_text(SCRIPT)
    tasks = {}
    for kind in KINDS:
        workdir = tmp_path / kind
        workdir.mkdir()
        if kind == "shell":
            spec = build_spec(shell=tree_once_command(str(workdir)))
        elif kind == "script":
            spec = build_spec(script=str(script), args=[str(workdir)])
        else:
            spec = build_spec(python="tests.tasks:tree_once", args=[str(workdir)])
        tasks[kind] = (client.submit(spec, notify=True)[0], workdir)
    return tasks


def _trees(tasks: dict[str, tuple[str, Path]]) -> dict[str, list[psutil.Process]]:
    """Every process of each first attempt, once all have written their pids (kept with their create times)."""
    def complete(workdir: Path, count: int) -> list[psutil.Process] | None:
        pids = workdir / "pids"
        found = pids.read_text().split() if pids.exists() else []
        return [psutil.Process(int(p)) for p in found] if len(found) >= count else None
    return {kind: wait_until(lambda: complete(workdir, KINDS[kind]), 30, f"the {kind} task's tree to start")
            for kind, (_, workdir) in tasks.items()}


def _running(trees: dict[str, list[psutil.Process]]) -> dict[str, list[int]]:
    alive = {}
    for kind, procs in trees.items():
        pids = []
        for proc in procs:
            try:
                if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                    pids.append(proc.pid)
            except psutil.NoSuchProcess:
                continue
        if pids:
            alive[kind] = pids
    return alive


def _wait_none_running(trees: dict[str, list[psutil.Process]], timeout_s: float = 15) -> None:
    try:
        wait_until(lambda: not _running(trees), timeout_s, "no process of the killed worker's tasks to run")
    except AssertionError:
        raise AssertionError(f"processes of the killed worker's tasks still run after {timeout_s} s: "
                             f"{_running(trees)}") from None


def _kill_leftovers(trees: dict[str, list[psutil.Process]]) -> None:
    for procs in trees.values():   # only what this test started, and only while it is still that process
        for proc in procs:
            try:
                if proc.is_running():
                    proc.kill()
            except psutil.NoSuchProcess:
                continue


def _reaper_of(worker_pid: int) -> psutil.Process:
    reapers = [p for p in psutil.Process(worker_pid).children()
               if "zmqgrid.worker.orphans" in " ".join(p.cmdline())]
    assert len(reapers) == 1, f"one reaper per worker, found {reapers}"
    return reapers[0]


def _assert_ran_again_once(harness: Harness, tasks: dict[str, tuple[str, Path]], device: str) -> None:
    client = harness.client()
    ids = [task_id for task_id, _ in tasks.values()]
    results = client.wait(ids, timeout_s=60)
    for kind, (task_id, _) in tasks.items():
        result = results[task_id]
        said = result["value"] if kind == "python" else client.logs(task_id)["stdout"]
        assert result["state"] == "done", (kind, result)
        assert result["device_id"] == device and result["attempt"] == 2, (kind, result)
        assert "no process of the first attempt runs" in said, (kind, said)
        attempts = db_query(harness.db, "SELECT attempt, state FROM attempts WHERE task_id = ? ORDER BY attempt",
                            (task_id,))
        assert attempts == [(1, "lost"), (2, "done")], (kind, attempts)
    assert_none_lost(harness.db, ids)


def _victim_running_trees(harness: Harness, tmp_path: Path, task_cgroups: str):
    """A master and a worker "victim" running a shell, a script and a python task, each with children and
    grandchildren: (the worker's process, the tasks, each task's tree of processes)."""
    harness.env["ZMQGRID_TASK_CGROUPS"] = task_cgroups
    harness.start_master()
    victim = harness.start_worker("victim", concurrency=3)
    harness.wait_online(harness.client(), "victim")
    tasks = _submit(harness, tmp_path)
    return victim, tasks, _trees(tasks)


def test_a_sigkilled_workers_task_trees_die_before_another_worker_runs_the_tasks_again(harness, tmp_path,
                                                                                       task_cgroups):
    # Given a worker running a shell, a script and a python task, each with children and grandchildren
    victim, tasks, trees = _victim_running_trees(harness, tmp_path, task_cgroups)
    try:
        harness.start_worker("survivor", concurrency=3)
        harness.wait_online(harness.client(), "survivor")
        assert set(_running(trees)) == set(KINDS)

        # When the worker is SIGKILLed and never comes back
        harness.kill(victim, signal.SIGKILL)

        # Then no process of any of its tasks runs, and the survivor runs each task again exactly once, its second
        # attempt finding none of the first's processes (they died before the master re-queued the task)
        _wait_none_running(trees)
        _assert_ran_again_once(harness, tasks, "survivor")
    finally:
        _kill_leftovers(trees)


def test_task_trees_left_by_a_worker_killed_with_its_reaper_die_at_the_next_start_of_that_device(harness, tmp_path,
                                                                                                 task_cgroups):
    # Given a worker running a shell, a script and a python task, each with children and grandchildren
    victim, tasks, trees = _victim_running_trees(harness, tmp_path, task_cgroups)
    try:
        # When the worker and its reaper are both SIGKILLed (as `kill -9` of both would)
        _reaper_of(victim.pid).kill()
        harness.kill(victim, signal.SIGKILL)
        # (the shell and script trees outlive both; the python task's may not: its pool child's watch thread kills the
        # child's own group when the worker goes, unless the kernel's PDEATHSIG kills the child first)
        assert {"shell", "script"} <= set(_running(trees)), _running(trees)

        # ... and the worker is started again with the same device id
        harness.start_worker("victim", concurrency=3)

        # Then the restarted worker kills them before it registers, and runs each task again exactly once
        _wait_none_running(trees)
        _assert_ran_again_once(harness, tasks, "victim")
        assert "killed" in (tmp_path / "victim.log").read_text()
    finally:
        _kill_leftovers(trees)


def test_a_pool_child_stuck_in_c_code_holding_the_gil_dies_with_its_worker(harness, tmp_path):
    # Given a python task whose pool child is in C code that holds the GIL (so none of its own threads can run)
    harness.start_master()
    victim = harness.start_worker("victim", concurrency=1)
    client = harness.client()
    harness.wait_online(client, "victim")
    pid_file = tmp_path / "pid"
    client.submit(build_spec(python="tests.tasks:hold_gil", args=[str(pid_file)], retries=0))
    child = wait_until(lambda: pid_file.exists() and pid_file.read_text() and psutil.Process(int(pid_file.read_text())),
                       30, "the pool child to begin the call")
    try:
        # When the worker is SIGKILLed with nothing else of zmqgrid left to act: no reaper
        _reaper_of(victim.pid).kill()
        harness.kill(victim, signal.SIGKILL)

        # Then the kernel kills the pool child (PR_SET_PDEATHSIG): it does not burn a core as an orphan
        _wait_none_running({"python": [child]})
    finally:
        _kill_leftovers({"python": [child]})
