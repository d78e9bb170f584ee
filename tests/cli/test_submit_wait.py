"""`submit --wait` as a person uses it, through the real command line against a real master and worker: a task's
output as it comes, a batch's outcomes, --json that carries at least what the text says, why a task waits,
--wait-timeout, Ctrl-C, and failures that are not retried (issue 26, items 2, 3, 4 and 6)."""
from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time

import pytest

from ..helpers import REPO, db_query

pytestmark = pytest.mark.timeout(90)




@pytest.fixture
def started(grid, tmp_path):
    """Start the CLI as a process of its own (to read its output while it runs, or to press Ctrl-C)."""
    procs: list[subprocess.Popen] = []

    def start(*args: str) -> subprocess.Popen:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ZMQGRID_")}
        env["PYTHONPATH"] = str(REPO)
        if os.environ.get("TEST_WITH_CURVE") == "1":
            env.update(ZMQGRID_CURVE="true", ZMQGRID_KEYS_DIR=str(grid.keys))
        procs.append(subprocess.Popen([sys.executable, "-m", "zmqgrid", *args, "--master", grid.url], cwd=tmp_path,
                                      env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                      stdin=subprocess.DEVNULL, bufsize=1, preexec_fn=as_a_foreground_job))
        return procs[-1]
    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def as_a_foreground_job() -> None:
    """In the child before exec: Ctrl-C and Ctrl-\\ as a terminal's foreground job gets them. A child inherits
    ignored signals, and now and then the suite's process has SIGINT and SIGQUIT ignored while it starts one (a
    system()-like call of a library in another thread: /proc/PID/status showed both in SigIgn); Python then keeps
    ignoring SIGINT, as it must for a job started in the background."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGQUIT, signal.SIG_DFL)


def read_line(pipe, timeout_s: float = 30) -> str:
    """The next line the process writes on `pipe`, or a failure after `timeout_s` (no hopeful sleep). Read a byte
    at a time from the descriptor: a buffered readline could take two lines at once and leave the second where
    select does not see it."""
    deadline = time.monotonic() + timeout_s
    line = b""
    while not line.endswith(b"\n"):
        ready, _, _ = select.select([pipe.fileno()], [], [], max(0.0, deadline - time.monotonic()))
        assert ready, f"no line within {timeout_s}s (so far: {line!r})"
        byte = os.read(pipe.fileno(), 1)
        assert byte, f"the process closed the pipe (so far: {line!r})"
        line += byte
    return line.decode()


def submitted_id(stderr: str) -> str:
    first = stderr.splitlines()[0]
    assert first.startswith("submitted "), stderr
    return first.split()[1]


def no_traceback(result: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in result.stdout + result.stderr, result.stderr


# ------------------------------------------------------------------ item 2: the output as it comes

def test_wait_prints_a_tasks_output_while_it_runs_then_one_status_line_on_stderr(grid, started):
    # Given a task that prints on both streams and then runs on
    proc = started("submit", "--shell", "echo first; echo oops >&2; sleep 60", "--retries", "0", "--wait")
    task_id = read_line(proc.stderr).split()[1]
    client = grid.client()

    # Then its stdout line arrives on stdout and its stderr line on stderr while it still runs
    assert read_line(proc.stdout) == "first\n"
    assert read_line(proc.stderr) == "oops\n"
    assert client.task(task_id)["state"] == "running"

    # When it ends (cancelled), the wait ends with one status line on stderr and exit 1
    client.cancel([task_id])
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    [status] = err.splitlines()
    assert out == "" and status.startswith(f"cancelled: task {task_id} on w1 (attempt 1"), err
    assert status.endswith("cancelled by user"), status


def test_wait_of_a_shell_task_keeps_its_streams_apart_and_exits_with_its_outcome(cli):
    ok = cli("submit", "--shell", "echo out; echo err >&2", "--wait")
    assert ok.returncode == 0, ok.stderr
    task_id = submitted_id(ok.stderr)
    assert ok.stdout == "out\n"
    assert ok.stderr.splitlines() == [f"submitted {task_id}", "err", f"done: task {task_id} on w1 (attempt 1, exit 0)"]

    failed = cli("submit", "--shell", "echo partial; exit 3", "--retries", "0", "--wait")
    assert failed.returncode == 1 and failed.stdout == "partial\n"
    assert failed.stderr.splitlines()[-1] == (f"failed: task {submitted_id(failed.stderr)} on w1 (attempt 1, exit 3): "
                                              "ExitCode: exited with code 3")


def test_wait_of_a_retried_task_shows_each_attempts_output_after_a_line_naming_the_attempt(cli, tmp_path):
    # A shell task that fails on its first attempt and succeeds on its second (a marker file remembers the first)
    marker = tmp_path / "tried"
    result = cli("submit", "--shell", f"if [ -e {marker} ]; then echo second; else touch {marker}; echo first; exit 3; fi",
                 "--retries", "1", "--retry-backoff", "0", "--wait")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "first\nsecond\n"
    task_id = submitted_id(result.stderr)
    assert result.stderr.splitlines() == [f"submitted {task_id}", "--- attempt 2 on w1 ---",
                                          f"done: task {task_id} on w1 (attempt 2, exit 0)"]


def test_wait_of_a_python_task_prints_its_return_value_as_json_on_stdout(cli):
    result = cli("submit", "--python", "tests.tasks:echo", "--args", '[1, "x"]', "--wait")
    assert result.returncode == 0, result.stderr
    printed, value = result.stdout.splitlines()
    assert printed == "echo to stdout: (1, 'x')" and json.loads(value) == {"args": [1, "x"], "kwargs": {}}
    assert "echo to stderr: {}" in result.stderr
    assert result.stderr.splitlines()[-1].startswith("done: task ")


def test_quiet_keeps_the_one_line_per_task_at_the_end_and_goes_with_wait_only(cli):
    # (the line itself: test_cli.py, test_submit_shell_with_wait_and_quiet_exits_0_and_prints_the_task_done)
    result = cli("submit", "--shell", "echo hi", "--wait", "--quiet")
    assert result.returncode == 0 and result.stdout.split()[1:] == ["done", "on", "w1", "exit=0"], result.stdout
    assert result.stderr == ""
    lonely = cli("submit", "--shell", "true", "--quiet")
    assert lonely.returncode == 3 and lonely.stderr.startswith("error: --quiet goes with --wait"), lonely.stderr


def test_a_batch_prints_each_tasks_outcome_as_it_ends_with_the_last_output_line_of_a_failure(cli, tmp_path):
    lines = [{"shell": "echo fine", "name": "fine-task"},
             {"shell": "echo first; echo the real reason >&2; exit 2", "retries": 0, "name": "broken-task"},
             {"python": "tests.tasks:add", "args": [2, 3], "name": "adder"}]
    (tmp_path / "tasks.jsonl").write_text("\n".join(json.dumps(line) for line in lines) + "\n")

    result = cli("submit", "--file", "tasks.jsonl", "--wait")

    assert result.returncode == 1, result.stderr
    by_name = {line.split()[2]: line for line in result.stdout.splitlines()}
    assert set(by_name) == {"fine-task", "broken-task", "adder"}, result.stdout
    assert by_name["fine-task"].split()[0] == "done" and "on w1" in by_name["fine-task"]
    assert by_name["adder"].split()[0] == "done" and by_name["adder"].endswith("= 5")
    broken = by_name["broken-task"]
    assert broken.split()[0] == "failed" and "ExitCode: exited with code 2" in broken
    assert broken.endswith("last output: the real reason"), broken
    ids = [line.split()[1] for line in result.stderr.splitlines() if line.startswith("submitted ")]
    assert {line.split()[1] for line in result.stdout.splitlines()} == set(ids) and len(ids) == 3
    assert result.stderr.splitlines()[-1] == "2 of 3 tasks done"


# ------------------------------------------------------------------ item 3: --json carries at least the text

def test_json_of_a_waited_task_holds_its_output_beside_its_outcome(cli):
    result = cli("submit", "--shell", "echo out; echo err >&2; exit 4", "--retries", "0", "--wait", "--json")
    assert result.returncode == 1, result.stderr
    [task] = json.loads(result.stdout)
    assert (task["state"], task["exit_code"], task["device_id"]) == ("failed", 4, "w1")
    assert (task["stdout"], task["stderr"]) == ("out\n", "err\n")
    assert task["error"]["type"] == "ExitCode" and task["name"] == "echo out; echo err >&2; exit 4"


def test_json_of_a_waited_batch_holds_every_tasks_output(cli, tmp_path):
    (tmp_path / "tasks.jsonl").write_text('{"shell": "echo a"}\n{"shell": "echo b >&2; exit 1", "retries": 0}\n')
    result = cli("submit", "--file", "tasks.jsonl", "--wait", "--json")
    assert result.returncode == 1, result.stderr
    first, second = json.loads(result.stdout)
    assert (first["state"], first["stdout"], first["name"]) == ("done", "a\n", "echo a")
    assert (second["state"], second["stderr"]) == ("failed", "b\n")


def test_json_of_a_fan_out_holds_each_workers_output_and_duration(cli):
    text = cli("submit", "--all", "--shell", "echo from-every-worker", "--wait")
    assert text.returncode == 0 and "from-every-worker" in text.stdout and "1/1 workers succeeded" in text.stdout
    result = cli("submit", "--all", "--shell", "echo from-every-worker", "--wait", "--json")
    assert result.returncode == 0, result.stderr
    [row] = json.loads(result.stdout)
    assert (row["device_id"], row["state"], row["exit_code"]) == ("w1", "done", 0)
    assert row["stdout"] == "from-every-worker\n" and row["took_s"] is not None and row["took_s"] >= 0


def test_a_fan_out_runs_one_attempt_per_worker_unless_retries_are_asked_for(cli):
    # like an ad-hoc command across a fleet (salt cmd.run): a failure is reported, not run again behind the user
    result = cli("submit", "--all", "--shell", "echo tried; exit 2", "--wait", "--json")
    assert result.returncode == 1, result.stderr
    [row] = json.loads(result.stdout)
    assert (row["state"], row["exit_code"], row["attempt"], row["stdout"]) == ("failed", 2, 1, "tried\n"), row
    retried = cli("submit", "--all", "--shell", "exit 2", "--retries", "1", "--retry-backoff", "0.05", "--wait",
                  "--json")
    [row] = json.loads(retried.stdout)
    assert (row["state"], row["attempt"]) == ("failed", 2), row


# ------------------------------------------------------------------ item 4: a task nobody can take

def test_wait_timeout_names_the_task_why_it_waits_and_exits_apart_from_a_failure(grid, cli):
    result = cli("submit", "--shell", "true", "--tag", "gpu", "--wait-timeout", "1")
    no_traceback(result)
    assert result.returncode == 124, result.stderr
    task_id = submitted_id(result.stderr)
    submitted, waiting, error = result.stderr.splitlines()
    assert waiting == f"task {task_id} waiting: no online worker has tag gpu"
    assert error.startswith(f"error: task {task_id} not finished within --wait-timeout 1s: still queued "
                            "(no online worker has tag gpu); it stays on the master"), error
    assert f"python main.py tasks logs {task_id} --follow" in error
    assert f"python main.py tasks cancel {task_id}" in error
    client = grid.client()
    assert client.task(task_id)["state"] == "queued"
    client.cancel([task_id])


def test_a_batch_that_waits_says_each_reason_once_and_how_many_are_left(grid, cli, tmp_path):
    (tmp_path / "tasks.jsonl").write_text('{"shell": "true", "tag": ["gpu"]}\n' * 3)
    result = cli("submit", "--file", "tasks.jsonl", "--wait-timeout", "3")
    assert result.returncode == 124, result.stderr
    ids = [line.split()[1] for line in result.stderr.splitlines() if line.startswith("submitted ")]
    waiting = [line for line in result.stderr.splitlines() if " waiting: " in line]
    assert len(ids) == 3 and len(waiting) == 1 and waiting[0].endswith("waiting: no online worker has tag gpu")
    assert result.stderr.splitlines()[-1].startswith("error: 3 of 3 tasks not finished within --wait-timeout 3s")
    grid.client().cancel(ids)


@pytest.mark.parametrize("sig, code, word", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")],
                         ids=["ctrl-c", "sigterm"])
def test_ctrl_c_or_sigterm_says_the_task_stays_queued_and_how_to_follow_or_cancel_it(grid, started, sig, code, word):
    proc = started("submit", "--shell", "true", "--tag", "gpu", "--wait")
    task_id = read_line(proc.stderr).split()[1]
    assert read_line(proc.stderr) == f"task {task_id} waiting: no online worker has tag gpu\n"

    proc.send_signal(sig)
    out, err = proc.communicate(timeout=30)

    assert proc.returncode == code, err
    assert "Traceback" not in err and out == ""
    assert err.splitlines() == [f"{word}; task {task_id} stays on the master, queued (no online worker has tag "
                                f"gpu): follow it with: python main.py tasks logs {task_id} --follow; cancel it "
                                f"with: python main.py tasks cancel {task_id}"]
    client = grid.client()
    assert client.task(task_id)["state"] == "queued"
    client.cancel([task_id])


# ------------------------------------------------------------------ item 6: failures that are not retried

def test_a_python_task_whose_module_is_missing_fails_once_with_the_reason(grid, cli):
    result = cli("submit", "--python", "nosuch.module:func", "--retries", "3", "--wait")
    no_traceback(result)
    assert result.returncode == 1, result.stderr
    task_id = submitted_id(result.stderr)
    assert result.stderr.splitlines()[-1] == (f"failed: task {task_id} on w1 (attempt 1): ModuleNotFoundError: No "
                                              "module named 'nosuch'; not retried: ModuleNotFoundError recurs on "
                                              "every attempt")
    assert db_query(grid.db, "SELECT attempt, state FROM tasks WHERE id = ?", (task_id,)) == [(1, "failed")]
    assert db_query(grid.db, "SELECT count(*) FROM attempts WHERE task_id = ?", (task_id,)) == [(1,)]


def test_retry_on_and_no_retry_on_choose_which_failures_are_retried(grid, cli):
    def attempts(*options: str) -> tuple[int, str]:
        result = cli("submit", *options, "--retries", "2", "--retry-backoff", "0", "--wait", "--json")
        assert result.returncode == 1, result.stderr
        [task] = json.loads(result.stdout)
        return task["attempt"], task["reason"]

    # A missing module is retried when the user says it may appear (a module being rolled out)
    assert attempts("--python", "nosuch.module:func", "--retry-on", "ModuleNotFoundError") == (3, "attempt 3 failed")
    raising = ("--python", "tests.tasks:raise_value_error")
    assert attempts(*raising, "--no-retry-on", "ValueError") == (1, "attempt 1 failed, not retried: "
                                                                    "ValueError is in no_retry_on")
    assert attempts(*raising, "--retry-on", "KeyError", "--retry-on", "OSError") == (
        1, "attempt 1 failed, not retried: ValueError is not in retry_on")
    assert attempts(*raising, "--no-retry-on", "KeyError") == (3, "attempt 3 failed")
    refused = cli("submit", *raising, "--retry-on", "builtins.ValueError")
    assert refused.returncode == 3 and "class name alone" in refused.stderr, refused.stderr
