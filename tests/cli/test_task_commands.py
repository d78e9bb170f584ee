"""`tasks show|logs|cancel|requeue` as an operator meets them, run as real processes against a real master and worker:
a task named by a prefix of its id, one error for an unknown or ambiguous one."""
from __future__ import annotations

import secrets
import subprocess

import pytest

from zmqgrid.client import build_spec

from ..helpers import Harness, run_cli
from .test_cli import assert_user_error

pytestmark = pytest.mark.timeout(90)

TASK_COMMANDS = ["show", "logs", "cancel", "requeue"]
NOBODY = "nobody-has-this"   # a tag no worker has: such a task stays queued


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    """A master and one worker (w1) online, shared by this module's tests."""
    harness = Harness(tmp_path_factory.mktemp("tasks-cli"))
    try:
        harness.start_master()
        harness.start_worker("w1", concurrency=2)
        harness.wait_online(harness.client(), "w1")
        yield harness
    finally:
        harness.stop()


@pytest.fixture
def cli(grid, tmp_path):
    def run(*args: str, timeout_s: float = 60) -> subprocess.CompletedProcess:
        return run_cli(*args, "--master", grid.url, cwd=tmp_path, timeout_s=timeout_s)
    return run


@pytest.fixture(scope="module")
def same_stem(grid):
    """Seven queued tasks whose ids share the stem STEM- (ids a client chose), so STEM- is ambiguous."""
    stem = "amb" + secrets.token_hex(4)
    ids = [f"{stem}-{i}" for i in range(7)]
    grid.client().submit([build_spec(shell="true", tag=NOBODY, id=i) for i in ids])
    return stem, ids


# ------------------------------------------------------------------ item 1: ids and prefixes

def test_every_task_command_takes_a_unique_prefix_of_an_id(grid, cli):
    # Given a queued task, named by the first 14 digits of its id (those of one batch share 12 or more)
    client = grid.client()
    task_id = client.submit(build_spec(shell="echo hi", tag=NOBODY))[0]
    prefix = task_id[:14]

    # Then every command that takes an id finds it by the prefix
    shown = cli("tasks", "show", prefix)
    assert shown.returncode == 0 and f"id:         {task_id}" in shown.stdout, shown.stderr
    assert cli("tasks", "logs", prefix).returncode == 0
    cancelled = cli("tasks", "cancel", prefix)
    assert (cancelled.returncode, cancelled.stdout) == (0, f"{task_id} cancelled\n"), cancelled.stderr
    requeued = cli("tasks", "requeue", prefix)
    assert (requeued.returncode, requeued.stdout) == (0, f"{task_id} queued\n"), requeued.stderr
    assert client.task(task_id)["state"] == "queued"
    client.cancel([task_id])


@pytest.mark.parametrize("command", TASK_COMMANDS)
def test_an_unknown_id_is_the_same_error_line_and_exit_code_in_every_command(cli, command):
    line = assert_user_error(cli("tasks", command, "no-such-task"), 3)
    assert line == "error: no task 'no-such-task'; list tasks with: python main.py tasks list"


@pytest.mark.parametrize("command", TASK_COMMANDS)
def test_a_prefix_of_several_tasks_is_the_same_error_naming_five_of_them_in_every_command(grid, cli, same_stem,
                                                                                          command):
    stem, ids = same_stem
    line = assert_user_error(cli("tasks", command, f"{stem}-"), 3)
    assert line == (f"error: task id prefix '{stem}-' matches several tasks: {', '.join(ids[:5])}, ...; "
                    "type more of the id")
    # and nothing was cancelled or re-queued by it
    assert {grid.client().task(i)["state"] for i in ids} == {"queued"}


def test_cancel_of_a_known_and_an_unknown_id_cancels_the_known_one_and_fails_for_the_other(grid, cli):
    task_id = grid.client().submit(build_spec(shell="true", tag=NOBODY))[0]
    result = cli("tasks", "cancel", task_id[:14], "no-such-task")
    assert result.stdout == f"{task_id} cancelled\n"
    assert assert_user_error(result, 3) == "error: no task 'no-such-task'; list tasks with: python main.py tasks list"

