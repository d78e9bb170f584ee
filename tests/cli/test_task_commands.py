"""`tasks show|logs|cancel|requeue` as an operator meets them, run as real processes against a real master and worker:
a task named by a prefix of its id, one error for an unknown or ambiguous one, the spec as a person reads it,
`logs --follow` through every attempt; and the command groups run without a command."""
from __future__ import annotations

import secrets

import pytest

from zmqgrid.client import build_spec

from ..helpers import run_cli
from .test_cli import assert_user_error

pytestmark = pytest.mark.timeout(90)

TASK_COMMANDS = ["show", "logs", "cancel", "requeue"]
NOBODY = "nobody-has-this"   # a tag no worker has: such a task stays queued
GRID_CONCURRENCY = 2   # the `grid` fixture's worker (tests/cli/conftest.py)


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


# ------------------------------------------------------------------ item 7: tasks show

def test_tasks_show_shows_what_a_task_runs_as_a_person_reads_it_and_no_env_value(grid, cli, tmp_path):
    client = grid.client()
    shell_id = client.submit(build_spec(
        shell="curl -s https://example.com | wc -c", cwd="/srv/crawl", env={"API_TOKEN": "s3cret-value", "LANG": "C"},
        tag=[NOBODY, "gpu"], timeout=90, retries=2, limit_key="example.com", limit_concurrency=2,
        limit_per_minute=30, priority=5))[0]
    call_id = client.submit(build_spec(python="tests.tasks:add", args=[20], kwargs={"b": 22}, tag=NOBODY))[0]
    script = tmp_path / "crawl.py"
    script.write_text("print('crawled')\n")
    script_id = client.submit(build_spec(script=str(script), args=["--site", "a b"], tag=NOBODY))[0]
    try:
        shell = cli("tasks", "show", shell_id)
        assert shell.returncode == 0, shell.stderr
        lines = shell.stdout.splitlines()
        for expected in ("kind:       shell", "command:    curl -s https://example.com | wc -c",
                         "cwd:        /srv/crawl", "env:        API_TOKEN, LANG (values not shown)",
                         f"tags:       {NOBODY}, gpu", "priority:   5", "timeout:    90.0s", "retries:    2",
                         "limit:      example.com: at most 2 at once and 30 a minute", "attempt:    0 of 3"):
            assert expected in lines, (expected, shell.stdout)
        assert "s3cret-value" not in shell.stdout
        assert "[" not in shell.stdout.split("attempts:")[0], "no Python list in the spec's lines"

        call = cli("tasks", "show", call_id).stdout.splitlines()
        assert "kind:       python" in call and "call:       tests.tasks:add(20, b=22)" in call, call
        script_lines = cli("tasks", "show", script_id).stdout.splitlines()
        assert "kind:       script" in script_lines and "script:     crawl.py --site 'a b'" in script_lines
    finally:
        client.cancel([shell_id, call_id, script_id])


# ------------------------------------------------------------------ item 9: logs --follow

def test_logs_follow_prints_every_attempt_under_its_own_line_and_exits_with_the_tasks_outcome(grid, cli):
    # Given a task that prints, then fails with exit 4, on each of its 3 attempts
    task_id = grid.client().submit(build_spec(shell="echo run; echo oops >&2; sleep 0.3; exit 4", retries=2,
                                              retry_backoff=0.1))[0]

    # When its logs are followed from the start
    result = cli("tasks", "logs", task_id[:14], "--follow")

    # Then each attempt's output comes under its own line, the task's end says how it ended, and the exit code is
    # that of `submit --wait` for a failed task
    assert result.returncode == 1, result.stderr
    assert result.stdout == "run\n" * 3
    assert result.stderr.splitlines() == [
        "--- attempt 1 on w1 ---", "oops", "--- attempt 2 on w1 ---", "oops", "--- attempt 3 on w1 ---", "oops",
        f"--- task {task_id} failed after 3 attempts (ExitCode: exited with code 4) ---"]


def test_logs_follow_of_a_task_that_ends_done_exits_0(grid, cli):
    task_id = grid.client().submit(build_spec(python="tests.tasks:chatty", args=[3, 0.1]))[0]
    result = cli("tasks", "logs", task_id, "--follow")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "line 0\nline 1\nline 2\n"
    assert result.stderr.splitlines() == ["--- attempt 1 on w1 ---", f"--- task {task_id} done after 1 attempt ---"]


def test_logs_of_an_attempt_the_task_never_had_is_one_error_line(grid, cli):
    # an empty output and exit 0 would read as "attempt 3 printed nothing"
    task_id = grid.client().submit(build_spec(shell="echo once"))[0]
    assert grid.client().wait([task_id], timeout_s=30)[task_id]["state"] == "done"
    assert cli("tasks", "logs", task_id[:14], "--attempt", "1").stdout == "once\n"
    line = assert_user_error(cli("tasks", "logs", task_id[:14], "--attempt", "3"), 3)
    assert f"task {task_id} has no attempt 3: it had 1" in line and f"tasks show {task_id}" in line, line

# ------------------------------------------------------------------ item 10: groups without a command, click's words

@pytest.mark.parametrize("group", [[], ["tasks"], ["devices"], ["schedules"], ["keys"], ["db"]],
                         ids=["main.py", "tasks", "devices", "schedules", "keys", "db"])
def test_a_group_run_without_a_command_prints_its_help_and_exits_0(group, tmp_path):
    result = run_cli(*group, cwd=tmp_path)
    assert (result.returncode, result.stderr) == (0, ""), result.stderr
    assert result.stdout.startswith("Usage: ") and "Commands:" in result.stdout


def test_a_value_click_refuses_is_one_line_without_a_stray_full_stop_before_the_hint(tmp_path):
    line = assert_user_error(run_cli("tasks", "list", "--state", "nope", cwd=tmp_path), 3)
    assert ".;" not in line
    assert line.endswith("'cancelled', 'quarantined'; see: python main.py tasks list --help"), line
