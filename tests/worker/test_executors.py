"""Executor tests on real processes: shell and script tasks, timeouts, kills (python tasks: test_pyslots.py)."""
from __future__ import annotations

import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil
import pytest

from zmqgrid.model import validate_task_spec
from zmqgrid.worker import metrics
from zmqgrid.worker.cgroups import RunCgroup
from zmqgrid.worker.executors import Executor, Run

from ..helpers import wait_until

pytestmark = pytest.mark.timeout(30)

POSIX_SH = pytest.mark.skipif(os.name != "posix", reason="the command uses /bin/sh syntax")
PY = sys.executable


def is_alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def assert_all_die(pids: list[int], timeout_s: float = 10.0) -> None:
    wait_until(lambda: not [p for p in pids if is_alive(p)], timeout_s, f"processes {pids} to die", interval_s=0.02)


def is_resource_tracker(proc: psutil.Process) -> bool:
    # multiprocessing's process-wide helper: it lives as long as the test process, by design.
    try:
        return "multiprocessing.resource_tracker" in " ".join(proc.cmdline())
    except psutil.NoSuchProcess:
        return False


def read_pids(path: Path) -> list[int]:
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def task(kind: str, attempt: int = 1, **fields: Any) -> dict:
    """A task as the worker loop receives it: validated by the real spec validator, plus the attempt."""
    return {**validate_task_spec({"kind": kind, **fields}), "attempt": attempt}


@pytest.fixture
def background():
    """Runs Run.wait() in a thread, as the worker loop does."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        yield lambda run: pool.submit(run.wait)


@pytest.fixture
def make_executor(background):
    # Depends on `background` so executors close (ending every wait) before its threads are joined.
    made: list[Executor] = []

    def make(**overrides: Any) -> Executor:
        options = {"python_executable": PY, "concurrency": 2, "kill_grace_s": 1.0, **overrides}
        executor = Executor(**options)
        made.append(executor)
        return executor

    yield make
    for executor in made:
        executor.close()


# ---- shell -------------------------------------------------------------------------------------

@POSIX_SH
def test_shell_string_runs_through_the_shell_and_captures_both_streams(make_executor):
    result = make_executor().start(task("shell", command="echo hello && echo oops >&2", id="t1")).wait()
    assert (result.id, result.attempt, result.state) == ("t1", 1, "done")
    assert (result.exit_code, result.error, result.value) == (0, None, None)
    assert (result.stdout, result.stderr) == ("hello\n", "oops\n")
    assert result.started_at <= result.finished_at and 0 <= result.duration_s < 10


def test_shell_argv_is_passed_without_a_shell(make_executor):
    argv = [PY, "-c", "import sys; print(sys.argv[1:])", "a b", "$HOME", "*"]
    result = make_executor().start(task("shell", command=argv)).wait()
    assert result.state == "done"
    assert result.stdout.strip() == "['a b', '$HOME', '*']"


def test_nonzero_exit_is_failed_with_the_exit_code(make_executor):
    result = make_executor().start(task("shell", command=[PY, "-c", "import sys; sys.exit(7)"], attempt=3)).wait()
    assert (result.state, result.exit_code, result.attempt) == ("failed", 7, 3)
    assert result.error.type == "ExitCode"
    assert result.error.message == "exited with code 7"


def test_env_is_merged_over_the_worker_environment_and_cwd_is_used(make_executor, tmp_path):
    code = "import os; print(os.environ['ZMQGRID_X'], 'PATH' in os.environ, os.getcwd())"
    result = make_executor().start(task("shell", command=[PY, "-c", code], env={"ZMQGRID_X": "42"},
                                        cwd=str(tmp_path))).wait()
    value, has_path, cwd = result.stdout.split()
    assert (result.state, value, has_path) == ("done", "42", "True")
    assert os.path.samefile(cwd, tmp_path)


def test_missing_executable_is_a_start_error(make_executor):
    result = make_executor().start(task("shell", command=["zmqgrid-no-such-program-xyz", "arg"])).wait()
    assert (result.state, result.exit_code) == ("failed", None)
    assert result.error.type == "StartError"
    assert "zmqgrid-no-such-program-xyz" in result.error.message


def test_bad_cwd_is_a_start_error(make_executor, tmp_path):
    missing = tmp_path / "does-not-exist"
    result = make_executor().start(task("shell", command=[PY, "-c", "pass"], cwd=str(missing))).wait()
    assert result.state == "failed"
    assert result.error.type == "StartError"
    assert "does-not-exist" in result.error.message


def test_output_beyond_the_cap_keeps_head_and_tail_with_one_marker(make_executor):
    cap = 64 * 1024  # three times the cap is more than a pipe buffer: the reader must keep draining
    code = f"import sys; sys.stdout.write('a' * {3 * cap // 2} + 'b' * {3 * cap // 2})"
    result = make_executor(max_output_bytes=cap).start(task("shell", command=[PY, "-c", code])).wait()
    out = result.stdout
    marker = f"\n[... zmqgrid: {2 * cap} bytes of stdout cut ...]\n"
    assert result.state == "done"
    assert out == "a" * (cap // 2) + marker + "b" * (cap // 2)


@POSIX_SH
def test_task_processes_run_nicer_than_the_worker(make_executor):
    code = "import os; print(os.nice(0))"
    result = make_executor(nice=5).start(task("shell", command=[PY, "-c", code])).wait()
    assert int(result.stdout) == min(19, os.nice(0) + 5)


def test_live_output_stops_at_the_cap_while_the_task_goes_on(make_executor):
    cap = 64 * 1024
    code = "import sys\nfor _ in range(200): sys.stdout.write('x' * 8191 + chr(10))"   # 1.6 MB, 25 caps
    streamed: list[str] = []
    run = make_executor(max_output_bytes=cap).start(task("shell", command=[PY, "-c", code]),
                                                    on_output=lambda stream, text: streamed.append(text))
    result = run.wait()
    assert result.state == "done" and "bytes of stdout cut" in result.stdout
    assert cap <= sum(map(len, streamed)) <= cap + 65536    # the chunk that crosses the cap, then nothing


def test_output_past_the_cap_is_read_no_faster_than_the_flood_rate(make_executor):
    cap = 64 * 1024
    code = "import sys\nfor _ in range(384): sys.stdout.write('x' * 8191 + chr(10))"   # 3 MiB, 2.9 past the cap
    started = time.monotonic()
    result = make_executor(max_output_bytes=cap, flood_mb_per_s=10).start(task("shell", command=[PY, "-c", code])).wait()
    # A lower bound, set by the reader's own pauses: a slow machine only adds to it.
    assert time.monotonic() - started >= (3 * 2**20 - 2 * cap) / (10 * 2**20)
    marker = f"\n[... zmqgrid: {3 * 2**20 - cap} bytes of stdout cut ...]\n"
    assert result.state == "done"
    line = "x" * 8191 + "\n"
    assert result.stdout == line * 4 + marker + line * 4   # head and tail, half the cap each


@POSIX_SH
def test_shell_timeout_kills_children_and_grandchildren(make_executor, tmp_path):
    pid_file = tmp_path / "pids"
    command = (f"echo $$ >> {pid_file}; sleep 60 & echo $! >> {pid_file}; "
               f"(sleep 60 & echo $! >> {pid_file}; sleep 60) & echo $! >> {pid_file}; "
               "echo started; wait")
    result = make_executor().start(task("shell", command=command, timeout=1)).wait()
    assert result.state == "timed_out"
    assert result.error.to_wire() == {"type": "Timeout", "message": "exceeded timeout of 1 s", "traceback": ""}
    assert result.exit_code == -15
    assert result.stdout == "started\n"  # output so far is kept
    assert result.duration_s < 20
    pids = read_pids(pid_file)
    assert len(pids) == 4, pids
    assert_all_die(pids)


@POSIX_SH
def test_timeout_escalates_to_sigkill_when_sigterm_is_ignored(make_executor, tmp_path):
    pid_file = tmp_path / "pids"
    command = f"trap '' TERM; sleep 60 & echo $! > {pid_file}; sleep 60 & wait"
    result = make_executor(kill_grace_s=0.5).start(task("shell", command=command, timeout=1)).wait()
    assert (result.state, result.exit_code) == ("timed_out", -9)
    assert_all_die(read_pids(pid_file))


def run_escaping_grandchild(executor: Executor, background, pid_file: Path, parent_lives_s: float) -> tuple:
    """A shell task whose grandchild calls setsid and whose parent (a subshell) exits after `parent_lives_s`,
    so it ends outside both the task's session and its tree; (its result, the grandchild as psutil.Process)."""
    command = (f"(setsid sh -c 'echo $$ >> {pid_file}; exec sleep 300' </dev/null >/dev/null 2>&1 & "
               f"sleep {parent_lives_s}); echo started; sleep 300")
    future = background(executor.start(task("shell", command=command, timeout=parent_lives_s + 2)))
    pids = wait_until(lambda: read_pids(pid_file), 10, "the grandchild to start")
    escaped = [psutil.Process(pid) for pid in pids]
    try:
        result = future.result(timeout=30)
        # by pid and create time: a pid reused by another process since does not count as alive
        wait_until(lambda: not [p for p in escaped if p.is_running() and is_alive(p.pid)], 10,
                   f"the setsid grandchild {pids} to die", interval_s=0.02)
        return result, escaped
    finally:
        for proc in escaped:   # what this test started, if it outlived the task
            if proc.is_running():
                proc.kill()


@POSIX_SH
def test_a_fast_double_forked_setsid_grandchild_dies_with_its_task_in_the_tasks_cgroup(make_executor, background,
                                                                                      tmp_path):
    executor = make_executor()
    if executor.cgroups is None:
        pytest.skip("no writable cgroup v2 on this machine: see the test without one below")
    result, _ = run_escaping_grandchild(executor, background, tmp_path / "pids", parent_lives_s=0)
    assert result.state == "timed_out"
    assert not [pid for run in executor.cgroups.path.glob("run-*") for pid in RunCgroup(run).pids()]


@POSIX_SH
def test_an_emptied_run_cgroup_is_given_to_the_next_attempt_and_removed_at_close(make_executor, tmp_path):
    executor = make_executor()
    if executor.cgroups is None:
        pytest.skip("no writable cgroup v2 on this machine")
    tree = executor.cgroups.path
    code = 'cat /proc/self/cgroup >>%s' % (tmp_path / "cgroups")
    assert [executor.start(task("shell", command=code)).wait().state for _ in range(3)] == ["done"] * 3
    joined = {line for line in (tmp_path / "cgroups").read_text().splitlines() if line.startswith("0::")}
    assert len(joined) == 1   # one run cgroup, thrice
    assert [run.name for run in tree.glob("run-*")] == ["run-2"] and not RunCgroup(tree / "run-2").pids()
    executor.close()
    assert not tree.exists()


@POSIX_SH
def test_without_a_cgroup_a_grandchild_seen_before_it_left_the_tree_dies_with_its_task(make_executor, background,
                                                                                     tmp_path):
    # Its parent lives 1.5 s, several times the interval at which descendants are looked for
    executor = make_executor(use_cgroups=False)
    result, _ = run_escaping_grandchild(executor, background, tmp_path / "pids", parent_lives_s=1.5)
    assert result.state == "timed_out"


def test_a_missing_program_is_a_start_error_through_the_cgroup_launcher_too(make_executor):
    for executor in (make_executor(), make_executor(use_cgroups=False)):
        result = executor.start(task("shell", command=["zmqgrid-no-such-program-xyz"])).wait()
        assert (result.state, result.error.type) == ("failed", "StartError")


def test_default_timeout_applies_when_the_task_has_none(make_executor):
    run = make_executor(default_timeout_s=0.5).start(task("shell", command=[PY, "-c", "import time; time.sleep(60)"]))
    result = run.wait()
    assert result.state == "timed_out"
    assert result.error.message == "exceeded timeout of 0.5 s"


@POSIX_SH
def test_kill_of_a_running_shell_task_is_cancelled_and_kills_its_tree(make_executor, background, tmp_path):
    pid_file = tmp_path / "pids"
    run = make_executor().start(task("shell", command=f"sleep 60 & echo $! > {pid_file}; sleep 60 & wait"))
    future = background(run)
    pids = wait_until(lambda: read_pids(pid_file), 10, "the task to write its pid file")
    run.kill("user asked")
    run.kill("a second time")  # idempotent: the first reason stays
    result = future.result(timeout=20)
    assert result.state == "cancelled"
    assert result.error.type == "Cancelled"
    assert "user asked" in result.error.message
    assert_all_die(pids)


def test_a_run_killed_before_wait_is_cancelled_without_starting(make_executor, tmp_path):
    marker = tmp_path / "ran"
    run = make_executor().start(task("shell", command=[PY, "-c", f"open({str(marker)!r}, 'w')"]))
    run.kill("changed my mind")
    result = run.wait()
    assert result.state == "cancelled" and "changed my mind" in result.error.message
    assert not marker.exists()
    assert run.wait() is result


# ---- script ------------------------------------------------------------------------------------

@pytest.mark.skipif(os.name != "posix", reason="symlinking the interpreter needs POSIX")
def test_script_runs_with_the_given_python_and_its_args(make_executor, tmp_path):
    python = tmp_path / "mypython"
    python.symlink_to(PY)
    source = "import os, sys\nprint(sys.argv)\nprint(sys.executable)\nprint(os.environ['PYTHONUNBUFFERED'])\n"
    run = make_executor(python_executable=str(python)).start(
        task("script", source=source, filename="jobs/crawl.py", args=["--site", "a b"]))
    result = run.wait()
    assert result.state == "done", result
    argv_line, exe_line, unbuffered = result.stdout.splitlines()
    argv = eval(argv_line)  # noqa: S307 - our own script printed a list of str
    assert argv[1:] == ["--site", "a b"]
    assert os.path.basename(argv[0]) == "crawl.py"
    assert exe_line == str(python)
    assert unbuffered == "1"
    assert not os.path.exists(os.path.dirname(argv[0]))  # the temp dir is gone


def test_failing_script_reports_its_traceback_on_stderr(make_executor):
    result = make_executor().start(task("script", source="raise SystemExit('no luck')\n")).wait()
    assert (result.state, result.exit_code) == ("failed", 1)
    assert "no luck" in result.stderr


# ---- lifecycle ---------------------------------------------------------------------------------

def test_close_cancels_running_tasks_and_leaves_no_process_or_thread(make_executor, background, tmp_path):
    threads_before = set(threading.enumerate())
    executor = make_executor(concurrency=2)
    pid_file = tmp_path / "pid"
    shell_run = executor.start(task("shell", command=[PY, "-c", "import os, time; open(%r, 'w').write("
                                                      "str(os.getpid())); time.sleep(60)" % str(pid_file)]))
    shell_future = background(shell_run)
    [shell_pid] = wait_until(lambda: read_pids(pid_file), 10, "the shell task to start")
    children = [c for c in psutil.Process().children(recursive=True) if not is_resource_tracker(c)]
    assert shell_pid in {c.pid for c in children}

    executor.close()

    assert shell_future.result(timeout=20).state == "cancelled"
    assert_all_die([c.pid for c in children])
    assert executor.start(task("shell", command="true")).wait().state == "cancelled"
    wait_until(lambda: not [t for t in threading.enumerate() if t not in threads_before
                            and not t.name.startswith("ThreadPoolExecutor")] or None,
               10, "the executor's threads to end")


@pytest.mark.skipif(not hasattr(os, "pidfd_open") or os.name != "posix", reason="pipes and exit polled where a pidfd is")
def test_a_running_shell_task_is_watched_by_its_own_thread_alone(make_executor, background, tmp_path):
    # Pipes, exit, deadline and kill in one poll: a short task pays no thread starts beyond the one that waits for it.
    threads_before = set(threading.enumerate())
    pid_file = tmp_path / "pid"
    code = "import os, sys, time; open(%r, 'w').write(str(os.getpid())); print('out'); print('err', file=sys.stderr); " \
           "time.sleep(60)" % str(pid_file)
    run = make_executor().start(task("shell", command=[PY, "-c", code], timeout=30))
    future = background(run)
    wait_until(lambda: read_pids(pid_file), 10, "the task to start")
    extra = [t.name for t in threading.enumerate() if t not in threads_before
             and not t.name.startswith(("ThreadPoolExecutor", "zmqgrid-descendants"))]
    assert extra == []
    run.kill("enough")
    result = future.result(timeout=20)
    assert (result.state, result.stdout, result.stderr) == ("cancelled", "out\n", "err\n")


def test_metrics_are_plain_numbers():
    info = metrics.system_info(PY)
    assert info["python_executable"] == PY and info["cpu_count"] >= 1 and info["memory_total_mb"] > 0
    assert info["os"] and info["hostname"] and info["python_version"]
    metrics.sample_metrics()  # primes cpu_percent
    sample = metrics.sample_metrics()
    assert set(sample) == {"cpu_percent", "memory_percent", "disk_percent", "load_1m", "load_5m",
                           "load_15m", "memory_available_mb"}
    assert all(isinstance(v, float) for v in sample.values())


def test_run_exposes_task_id_and_attempt(make_executor):
    run: Run = make_executor().start(task("shell", command="true", id="abc", attempt=4))
    assert (run.task_id, run.attempt) == ("abc", 4)
    assert run.wait().state == "done"

