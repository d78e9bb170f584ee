"""The real command line, run as a subprocess against a real master and worker: output, JSON and exit codes.

A user mistake must print exactly one line `error: ...` on stderr, no traceback, and exit with its code:
3 bad input or config, 2 master unreachable.
"""
from __future__ import annotations

import json
import re
import subprocess

import pytest

from zmqgrid.client import build_spec

from ..helpers import Harness, db_query, free_port_block, run_cli

pytestmark = pytest.mark.timeout(60)


def assert_user_error(result: subprocess.CompletedProcess, exit_code: int) -> str:
    """Exactly one stderr line starting `error: `, no traceback anywhere, and the expected exit code."""
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert result.returncode == exit_code, (result.returncode, result.stderr)
    return lines[0]




def finished_task(grid: Harness, **spec) -> str:
    client = grid.client()
    result = client.run(build_spec(**spec), timeout_s=30)
    assert result["state"] == "done", result
    return result["id"]


# ------------------------------------------------------------------ submit

def test_submit_shell_with_wait_and_quiet_exits_0_and_prints_the_task_done(cli):
    result = cli("submit", "--shell", "echo hi", "--wait", "--quiet")
    assert result.returncode == 0, result.stderr
    [line] = result.stdout.splitlines()
    task_id, state, _, device, exit_code = line.split()
    assert (state, device, exit_code) == ("done", "w1", "exit=0") and len(task_id) == 24
    assert result.stderr == ""


def test_submit_of_a_failing_shell_command_with_wait_exits_1(cli):
    result = cli("submit", "--shell", "exit 3", "--retries", "0", "--wait")
    assert result.returncode == 1, result.stderr
    assert result.stderr.splitlines()[-1].endswith(" on w1 (attempt 1, exit 3): ExitCode: exited with code 3")


def test_submit_run_timeout_is_the_tasks_timeout_and_a_timed_out_task_exits_1(cli):
    # --run-timeout on submit is the task's own limit (the master-answer wait is --master-timeout)
    result = cli("submit", "--shell", "sleep 30", "--run-timeout", "0.5", "--retries", "0", "--wait", "--json")
    assert result.returncode == 1, result.stderr
    [task] = json.loads(result.stdout)
    assert task["state"] == "timed_out"
    assert "warning" not in result.stderr


def test_submit_timeout_is_the_deprecated_spelling_of_run_timeout_with_a_warning(cli):
    old = cli("submit", "--shell", "sleep 30", "--timeout", "0.5", "--retries", "0", "--wait", "--json")
    assert old.returncode == 1, old.stderr
    assert json.loads(old.stdout)[0]["state"] == "timed_out"
    [warning] = [line for line in old.stderr.splitlines() if "warning" in line]
    assert warning == ("warning: --timeout is deprecated for the task's run time; use --run-timeout "
                       "(--master-timeout is the wait for the master)")

    both = cli("submit", "--shell", "true", "--timeout", "1", "--run-timeout", "1")
    assert both.returncode == 3 and both.stderr.startswith("error: --timeout and --run-timeout both"), both.stderr
    assert "--run-timeout S" in cli("submit", "--help").stdout
    assert "--run-timeout S" in cli("schedules", "add", "--help").stdout


def test_submit_python_with_wait_and_json_prints_the_return_value(cli):
    result = cli("submit", "--python", "tests.tasks:add", "--args", "[1, 2]", "--wait", "--json")
    assert result.returncode == 0, result.stderr
    [task] = json.loads(result.stdout)
    assert task["state"] == "done" and task["value"] == 3 and task["device_id"] == "w1"


def test_submit_file_runs_shell_script_and_python_lines_with_script_paths_relative_to_the_file(grid, tmp_path):
    # Given a batch file in batch/, whose script line names jobs/greet.py relative to batch/
    batch = tmp_path / "batch"
    (batch / "jobs").mkdir(parents=True)
    (batch / "jobs" / "greet.py").write_text("import sys\nprint('hello', sys.argv[1])\n")
    lines = [{"shell": "echo from-shell"}, {"script": "jobs/greet.py", "args": ["batch"]},
             {"python": "tests.tasks:add", "args": [2, 3]}]
    (batch / "tasks.jsonl").write_text("# three kinds\n" + "\n".join(json.dumps(line) for line in lines) + "\n")

    # When it is submitted from the directory above
    result = run_cli("submit", "--file", "batch/tasks.jsonl", "--master", grid.url, cwd=tmp_path)

    # Then one id per task is printed, and all three finish with their outputs
    assert result.returncode == 0, result.stderr
    ids = result.stdout.split()
    assert len(ids) == 3
    client = grid.client()
    done = client.wait(ids, timeout_s=30)
    assert [done[i]["state"] for i in ids] == ["done", "done", "done"]
    assert client.logs(ids[0])["stdout"] == "from-shell\n"
    assert client.logs(ids[1])["stdout"] == "hello batch\n"
    assert done[ids[2]]["value"] == 5


# ------------------------------------------------------------------ tasks and devices

def test_tasks_list_json_has_id_kind_state_device_and_attempt(grid, cli):
    task_id = finished_task(grid, shell="true")
    result = cli("tasks", "list", "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert isinstance(rows, list) and rows
    for row in rows:
        assert {"id", "kind", "state", "device_id", "attempt"} <= set(row), row
    mine = {r["id"]: r for r in rows}[task_id]
    assert (mine["kind"], mine["state"], mine["device_id"], mine["attempt"]) == ("shell", "done", "w1", 1)


def test_tasks_list_filters_by_state_and_prints_a_table(grid, cli):
    task_id = finished_task(grid, shell="true")
    result = cli("tasks", "list", "--state", "done")
    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.splitlines()
    assert header.split()[:4] == ["ID", "KIND", "TASK", "STATE"]
    assert any(row.startswith(task_id) for row in rows)


def test_tasks_show_prints_the_task_by_id_or_unique_prefix(grid, cli):
    task_id = finished_task(grid, python="tests.tasks:add", args=[20, 22])
    shown = cli("tasks", "show", task_id)
    assert shown.returncode == 0, shown.stderr
    assert f"id:         {task_id}" in shown.stdout and "state:      done" in shown.stdout
    assert "value:      42" in shown.stdout and "attempts:" in shown.stdout
    as_json = json.loads(cli("tasks", "show", task_id[:14], "--json").stdout)
    assert as_json["id"] == task_id and as_json["value"] == 42 and len(as_json["attempts"]) == 1


def test_tasks_logs_prints_stdout_and_stderr_on_their_own_streams(grid, cli):
    task_id = finished_task(grid, shell="echo to-out; echo to-err >&2")
    result = cli("tasks", "logs", task_id)
    assert result.returncode == 0
    assert result.stdout == "to-out\n" and result.stderr == "to-err\n"


def test_tasks_cancel_cancels_a_queued_task(grid, cli):
    # Given a task no worker can take (it requires a tag nobody has), so it stays queued
    client = grid.client()
    task_id = client.submit(build_spec(shell="true", tag="nobody-has-this"))[0]

    # When it is cancelled from the command line
    result = cli("tasks", "cancel", task_id)

    # Then it is cancelled at once
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{task_id} cancelled\n"
    assert client.task(task_id)["state"] == "cancelled"


def test_devices_list_json_has_device_id_and_state(cli):
    result = cli("devices", "list", "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [(r["device_id"], r["state"]) for r in rows] == [("w1", "online")]


# ------------------------------------------------------------------ user mistakes

@pytest.mark.parametrize("args", [
    ["tasks", "show", "no-such-task"],
    ["tasks", "logs", "no-such-task"],
    ["tasks", "cancel", "no-such-task"],
], ids=["show", "logs", "cancel"])
def test_an_unknown_task_id_is_one_error_line_and_exit_3(cli, args):
    line = assert_user_error(cli(*args), 3)
    assert "no-such-task" in line


BAD_FLAGS = [
    (["submit", "--shell", "true", "--priority", "abc"], "--priority"),
    (["submit", "--shell", "true", "--retries", "500"], "--retries"),
    (["submit", "--shell", "true", "--timeout", "-1"], "--timeout"),
    (["tasks", "list", "--state", "nope"], "--state"),
    (["tasks", "list", "--limit", "0"], "--limit"),
    (["submit", "--python", "tests.tasks:add", "--args", "not json"], "--args"),
    (["submit", "--python", "tests.tasks:add", "--kwargs", "[1]"], "--kwargs"),
    (["submit", "--python", "tests.tasks:add", "--args", "[" * 5000 + "]" * 5000], "--args"),
    (["submit", "--python", "not-a-callable"], "function"),
    (["submit"], "exactly one of shell, script, python"),
    (["submit", "--script", "missing.py"], "missing.py"),
    (["submit", "--file", "missing.jsonl"], "missing.jsonl"),
    (["tasks", "bogus"], "bogus"),
]


@pytest.mark.parametrize("args, names", BAD_FLAGS, ids=[" ".join(args)[:60] for args, _ in BAD_FLAGS])
def test_a_bad_flag_value_or_missing_file_is_one_error_line_and_exit_3(cli, args, names):
    line = assert_user_error(cli(*args), 3)
    assert names in line


def test_a_bad_line_in_a_task_file_names_the_file_and_line(cli, tmp_path):
    (tmp_path / "tasks.jsonl").write_text('{"shell": "echo ok"}\n{"shell": "echo", "colour": "red"}\n')
    line = assert_user_error(cli("submit", "--file", "tasks.jsonl"), 3)
    assert "tasks.jsonl line 2:" in line and "colour" in line


def test_a_task_file_with_one_line_over_a_limit_is_refused_whole_before_anything_is_sent(grid, cli, tmp_path):
    lines = [{"shell": f"echo {i}"} for i in range(5)]
    lines[3]["tag"] = ["linux", "t" * 65]
    (tmp_path / "tasks.jsonl").write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    before = db_query(grid.db, "SELECT count(*) FROM tasks")[0][0]
    line = assert_user_error(cli("submit", "--file", "tasks.jsonl"), 3)
    assert "tasks.jsonl line 4:" in line and "64 characters" in line, line
    assert db_query(grid.db, "SELECT count(*) FROM tasks")[0][0] == before


def test_a_task_file_the_master_refuses_part_of_reports_what_was_committed_and_resumes_without_duplicates(tmp_path):
    # Given a master that lets one client hold at most 1,500 unfinished tasks, and no worker to run them
    harness = Harness(tmp_path, env={"ZMQGRID_MAX_QUEUED_PER_CLIENT": "1500"})
    try:
        harness.start_master()
        (tmp_path / "tasks.jsonl").write_text("".join(json.dumps({"shell": f"echo {i}"}) + "\n"
                                                      for i in range(2500)))
        # When 2,500 lines are submitted: the second batch of 1,000 passes the cap, the third fits again
        first = run_cli("submit", "--file", "tasks.jsonl", "--master", harness.url, cwd=tmp_path)
        # Then the committed ids are printed, the first line not submitted and how to resume are named
        line = assert_user_error(first, 3)
        assert "max_queued_per_client" in line and "1500 of 2500 lines of tasks.jsonl were submitted" in line, line
        assert "line 1001 is the first not submitted" in line, line
        committed = first.stdout.split()
        assert len(committed) == 1500 == db_query(harness.db, "SELECT count(*) FROM tasks")[0][0]
        resume = re.search(r"--resume (\S+)", line).group(1)
        # When the cap is raised and the same file is submitted again with --resume
        harness.kill(harness.master)
        harness.clients.clear()
        harness.env["ZMQGRID_MAX_QUEUED_PER_CLIENT"] = "10000"
        harness.start_master()
        again = run_cli("submit", "--file", "tasks.jsonl", "--resume", resume, "--master", harness.url, cwd=tmp_path)
        # Then every line is in the ledger exactly once, and every id is printed in the file's order
        assert again.returncode == 0, again.stderr
        ids = again.stdout.split()
        assert len(ids) == len(set(ids)) == 2500 and set(committed) <= set(ids)
        assert db_query(harness.db, "SELECT count(*) FROM tasks")[0][0] == 2500
        commands = {r[0]: r[1] for r in db_query(harness.db, "SELECT id, name FROM tasks")}
        assert [commands[i] for i in ids] == [f"echo {i}" for i in range(2500)]
    finally:
        harness.stop()


@pytest.mark.parametrize("args, names", [
    (["distribute", "--mode", "master", "--port", "99999"], "99999"),
    (["distribute", "--mode", "master", "--config", "bad.json"], "bad.json"),
    (["distribute", "--mode", "worker", "--config", "missing.json"], "missing.json"),
    (["distribute", "--mode", "worker", "--master", "not a url"], "--master"),
    (["distribute"], "--mode or --status"),
], ids=["port out of range", "bad value in config file", "missing config file", "bad master url", "no mode"])
def test_a_bad_config_or_usage_of_distribute_is_one_error_line_and_exit_3(tmp_path, args, names):
    # A master or worker that wrongly started would run until the subprocess timeout and fail the test
    (tmp_path / "bad.json").write_text(json.dumps({"port": 8000, "heartbeat_interval": "fast"}))
    line = assert_user_error(run_cli(*args, cwd=tmp_path, timeout_s=20), 3)
    assert names in line


@pytest.mark.parametrize("args", [
    ["tasks", "list", "--timeout", "0.3"],
    ["tasks", "show", "abc", "--timeout", "0.3"],
    ["devices", "list", "--json", "--master-timeout", "0.3"],
    ["submit", "--shell", "true", "--master-timeout", "0.3"],
], ids=["tasks list", "tasks show", "devices list", "submit"])
def test_an_unreachable_master_is_one_error_line_and_exit_2(tmp_path, args):
    nobody = f"tcp://127.0.0.1:{free_port_block(1)}"
    line = assert_user_error(run_cli(*args, "--master", nobody, cwd=tmp_path), 2)
    assert nobody in line
