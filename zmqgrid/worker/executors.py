"""Runs one shell or script task attempt as a process in its own session (python tasks: see pyslots.py)."""
from __future__ import annotations

import logging
import os
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from ..model import TaskError, TaskState
from .cgroups import CgroupTree, RunCgroup, launch_argv, launch_shell, missing_program
from .failures import UNSTARTABLE
from .proctree import DescendantWatch, TaskProcesses, describe_exit
from .priority import lower_priority
from .procrecord import ProcessRecord
from .procwatch import PolledWatch, Stream, ThreadedWatch, thread_lowered
from .procwatch import watch as watch_process
from .projects import copy_of
from .pyenvs import PythonEnv
from .pypool import CappedBuffer
from .results import AttemptResult, cancel_error, timeout_error
from .runners import Runners
from .script_files import project_script, shipped_script

logger = logging.getLogger(__name__)

OutputCallback = Callable[[str, str], None]
"""Called with ("stdout" | "stderr", text) as output arrives, from the thread running the attempt."""

_POSIX = os.name == "posix"
_EXIT_WAIT_S = 2.0  # how long to wait for a process that was just SIGKILLed, or for its pipes to close


class Run:
    """One attempt of one task. `wait()` runs it to the end in the calling thread; `kill()` stops it."""

    def __init__(self, executor: Executor, task: dict, on_output: OutputCallback | None) -> None:
        self.task_id: str = task["id"]
        self.attempt: int = int(task.get("attempt") or 1)
        self._executor = executor
        self._task = task
        self._on_output = on_output
        timeout = task.get("timeout")
        self._timeout_s: float | None = executor.default_timeout_s if timeout is None else float(timeout)
        self._lock = threading.Lock()
        self._wait_lock = threading.Lock()
        self._kill_reason: str | None = None
        self._wake = threading.Event()
        self._in_wait = False
        self._done = threading.Event()
        self._result: AttemptResult | None = None
        self._out = CappedBuffer("stdout", executor.max_output_bytes)
        self._err = CappedBuffer("stderr", executor.max_output_bytes)
        self._started_at = time.time()
        self._t0 = time.monotonic()

    def kill(self, reason: str = "cancelled") -> None:
        """Stop the attempt (state "cancelled"); safe from any thread, at any time, more than once."""
        with self._lock:
            if self._kill_reason is not None or self._done.is_set():
                return
            self._kill_reason = reason
            self._wake.set()
            self._on_kill()

    def wait(self) -> AttemptResult:
        """Run the attempt to its end and return its result; later calls return the same result."""
        with self._wait_lock:
            if self._result is None:
                self._in_wait = True
                self._started_at, self._t0 = time.time(), time.monotonic()
                try:
                    if self._kill_reason is not None:
                        self._result = self._cancelled()
                    else:
                        self._result = self._execute()
                except Exception as e:
                    logger.exception("executor failed task=%s attempt=%d", self.task_id, self.attempt)
                    self._result = self._make(TaskState.FAILED,
                                              error=TaskError("ExecutorError", f"{type(e).__name__}: {e}"))
                finally:
                    with self._lock:
                        self._done.set()
                        self._cleanup()
                    self._executor._forget(self)
            return self._result

    # -- for subclasses ---------------------------------------------------------------------

    def _execute(self) -> AttemptResult:
        kind = self._task.get("kind")
        return self._make(TaskState.FAILED,
                          error=TaskError("StartError", f"unknown task kind {kind!r}", permanent=True))

    def _on_kill(self) -> None:
        """Called under the lock when kill() is first called."""

    def _cleanup(self) -> None:
        """Called under the lock once the attempt ended."""

    def _deadline(self) -> float | None:
        return None if self._timeout_s is None else self._t0 + self._timeout_s

    def _emit(self, stream: str, text: str) -> None:
        if self._on_output is None or not text:
            return
        try:
            self._on_output(stream, text)
        except Exception:
            logger.exception("output callback failed task=%s", self.task_id)

    def _make(self, state: TaskState, *, exit_code: int | None = None, error: TaskError | None = None) -> AttemptResult:
        return AttemptResult(self.task_id, self.attempt, state, exit_code=exit_code, error=error,
                             stdout=self._out.text(), stderr=self._err.text(), started_at=self._started_at,
                             duration_s=time.monotonic() - self._t0)

    def _cancelled(self, exit_code: int | None = None) -> AttemptResult:
        return self._make(TaskState.CANCELLED, exit_code=exit_code,
                          error=cancel_error(self._kill_reason or "cancelled"))

    def _timed_out(self, exit_code: int | None = None) -> AttemptResult:
        return self._make(TaskState.TIMED_OUT, exit_code=exit_code, error=timeout_error(self._timeout_s))


class _ProcessRun(Run):
    """A shell command or argv, run as the leader of its own session/process group, in its own cgroup if it can.

    The attempt ends when the process exits and its pipes close. Background children that keep
    the pipes open longer than the kill grace period after the leader exited are killed with the
    rest of the group, so no task can hold a worker slot forever. Its pipes, its exit, its deadline and a kill
    are all watched from the thread that called `wait()` (procwatch.py).
    """

    _watch: PolledWatch | ThreadedWatch | None = None   # set once the process started; kill() wakes it

    def _argv(self) -> tuple[str | list[str], bool]:
        command = self._task["command"]
        return (command, True) if isinstance(command, str) else (list(command), False)

    def _env(self) -> dict[str, str] | None:
        env, copy = self._task.get("env"), copy_of(self._task)
        if copy is not None and copy.env is not None:   # the project's environment, activated
            return copy.environ({**os.environ, **(env or {})})
        if (pyenv := self._executor.python_env(self._task)) is not None:   # the worker's interpreter it chose
            return pyenv.environ(os.environ, env)
        return {**os.environ, **env} if env else None

    def _execute(self) -> AttemptResult:
        argv, shell = self._argv()
        return self._run_process(argv, shell, self._env())

    def _run_process(self, argv: str | list[str], shell: bool, env: dict[str, str] | None) -> AttemptResult:
        cgroups, record = self._executor.cgroups, self._executor.record
        group = cgroups.new_run() if cgroups is not None else None
        # Recorded before the start: should the worker die, whatever the attempt forks is in it from the first.
        entry = record.add_cgroup(str(group.path)) if group is not None and record is not None else None
        try:
            return self._run_in(group, argv, shell, env)
        finally:
            if record is not None:
                record.remove(entry)
            if group is not None and cgroups is not None:
                cgroups.release(group)

    def _run_in(self, group: RunCgroup | None, argv: str | list[str], shell: bool, env: dict[str, str] | None) -> AttemptResult:
        options: dict[str, Any] = {"start_new_session": True} if _POSIX else {
            "creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}  # type: ignore[attr-defined]
        if group is not None and isinstance(argv, str):
            argv, shell = launch_shell(group.procs_file, argv), False
        elif group is not None:
            missing = missing_program(list(argv), env, self._task.get("cwd"))
            if missing is not None:
                return self._make(TaskState.FAILED, error=TaskError("StartError", missing, permanent=True))
            argv = launch_argv(group.procs_file, list(argv))
        try:
            proc = subprocess.Popen(argv, shell=shell, cwd=self._task.get("cwd"), env=env,
                                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, **options)
        except UNSTARTABLE as e:   # a missing program, interpreter, shell or cwd: it recurs on every attempt
            return self._make(TaskState.FAILED, error=TaskError("StartError", str(e), permanent=True))
        except (OSError, ValueError, subprocess.SubprocessError) as e:
            return self._make(TaskState.FAILED, error=TaskError("StartError", str(e)))
        record = self._executor.record
        # Without a cgroup the session is what a reaper can find, and its leader's pid is known only now.
        entry = record.add_session(proc.pid) if group is None and record is not None else None
        try:
            return self._supervise(proc, group)
        finally:
            if record is not None:
                record.remove(entry)

    def _supervise(self, proc: subprocess.Popen, group: RunCgroup | None) -> AttemptResult:
        grace_s = self._executor.kill_grace_s
        procs = TaskProcesses(proc.pid, group)
        lower_priority(proc.pid, self._executor.nice)
        assert proc.stdout is not None and proc.stderr is not None
        emit = self._emit if self._on_output is not None else None
        self._watch = watch = watch_process(proc, [Stream(proc.stdout, self._out, emit),
                                                   Stream(proc.stderr, self._err, emit)],
                                            flood_bytes_per_s=self._executor.flood_bytes_per_s,
                                            nice=self._executor.nice)
        if group is None:   # no cgroup: what it forks is found by looking, see proctree.DescendantWatch
            self._executor.descendants.add(procs)
        try:
            end = watch.wait_end(self._deadline(), lambda: self._kill_reason is not None)
            state = {"killed": TaskState.CANCELLED, "deadline": TaskState.TIMED_OUT}.get(end)
            if state is not None:
                procs.kill(grace_s)
            elif not watch.drain(grace_s):
                logger.info("task=%s exited but its children hold the output open; killing them", self.task_id)
                procs.kill(grace_s)
        finally:
            self._executor.descendants.discard(procs)
        # Reaped only now: until here the zombie leader keeps its pid (= group id) from being reused.
        code = proc.wait()
        if not watch.drain(_EXIT_WAIT_S):
            logger.warning("task=%s: a process outside its group still holds its output pipe", self.task_id)
        watch.close()
        if state == TaskState.CANCELLED:
            return self._cancelled(code)
        if state == TaskState.TIMED_OUT:
            return self._timed_out(code)
        if code == 0:
            return self._make(TaskState.DONE, exit_code=0)
        return self._make(TaskState.FAILED, exit_code=code, error=TaskError("ExitCode", describe_exit(code)))

    def _on_kill(self) -> None:
        if self._watch is not None:
            self._watch.wake()


class _ScriptRun(_ProcessRun):
    """The client's script text written to a fresh temp dir and run by the worker's python; or, in a project, the
    project's file named by `filename`, run by the interpreter of its copy's environment (worker.projects)."""

    def _execute(self) -> AttemptResult:
        copy, task, pyenv = copy_of(self._task), self._task, self._executor.python_env(self._task)
        python = copy.python if copy is not None else pyenv.executable if pyenv is not None else \
            self._executor.python_executable
        if copy is not None and task.get("source") is None:
            path = project_script(copy.root, task.get("filename"))
            if path is None:
                why = f"{task.get('filename')!r} is not a file of project {task.get('project')}"
                return self._make(TaskState.FAILED, error=TaskError("StartError", why, permanent=True))
            return self._run_process([python, path, *task.get("args", [])], False, self._script_env())
        try:
            with shipped_script(self.task_id, task["source"], task.get("filename")) as path:
                return self._run_process([python, path, *task.get("args", [])], False, self._script_env())
        except OSError as e:   # the temp folder or the file: the process never started
            return self._make(TaskState.FAILED, error=TaskError("StartError", str(e)))

    def _script_env(self) -> dict[str, str]:
        # Unbuffered, so the output printed before a timeout or cancel is not lost with the process.
        base = {"PYTHONUNBUFFERED": "1", "PYTHONIOENCODING": "utf-8", **os.environ}
        copy, pyenv = copy_of(self._task), self._executor.python_env(self._task)
        if pyenv is not None:
            return pyenv.environ(base, self._task.get("env"))
        env = {**base, **(self._task.get("env") or {})}
        return copy.environ(env) if copy is not None else env


# `python` tasks are not run here: the worker drives them in its pool children itself (pyslots.py).
_RUNS: dict[str, type[Run]] = {"shell": _ProcessRun, "script": _ScriptRun}


class Executor:
    """Starts task attempts and owns every process they need; `close()` kills them all."""

    def __init__(self, *, python_executable: str, concurrency: int, max_output_bytes: int = 1 << 20,
                 default_timeout_s: float | None = None, kill_grace_s: float = 3.0, nice: int = 0,
                 flood_mb_per_s: float = 0, use_cgroups: bool = True, record: ProcessRecord | None = None,
                 python_envs: Mapping[str, PythonEnv] | None = None) -> None:
        self.python_executable = python_executable
        self.python_envs = python_envs or {}   # config python_envs as their interpreters answered (pyenvs)
        self.nice = nice
        self.flood_bytes_per_s = flood_mb_per_s * 2**20   # 0: output past the cap is read as fast as it comes
        self.concurrency = concurrency
        self.max_output_bytes = max_output_bytes
        self.default_timeout_s = default_timeout_s
        self.kill_grace_s = kill_grace_s
        self._lock = threading.Lock()
        self._runs: set[Run] = set()
        self._closed = False
        # Linux with a writable cgroup v2: each shell/script attempt in a cgroup of its own (see cgroups.py)
        self.cgroups = CgroupTree.create() if use_cgroups else None
        self.descendants = DescendantWatch()   # elsewhere: what each attempt forks is found by looking
        self.record = record   # where each attempt's processes are noted for a reaper (orphans.py)
        self.runners = Runners(thread_lowered)   # threads that wait for runs, kept for the next

    def python_env(self, task: dict) -> PythonEnv | None:
        """The worker's interpreter the task chose (`python_env`), if any."""
        name = task.get("python_env")
        return self.python_envs.get(name) if name else None

    def start(self, task: dict, on_output: OutputCallback | None = None) -> Run:
        """Prepare one attempt of `task` (a validated spec plus "attempt"); `Run.wait()` runs it."""
        run = _RUNS.get(task.get("kind", ""), Run)(self, task, on_output)
        with self._lock:
            closed = self._closed
            if not closed:
                self._runs.add(run)
        if closed:
            run.kill("the executor was closed")
        return run

    def close(self) -> None:
        """Cancel every attempt and wait for their processes to die."""
        with self._lock:
            self._closed = True
            runs = list(self._runs)
        for run in runs:
            run.kill("the worker is shutting down")
        deadline = time.monotonic() + self.kill_grace_s + 2 * _EXIT_WAIT_S
        for run in runs:
            if run._in_wait and not run._done.wait(max(0.0, deadline - time.monotonic())):
                logger.warning("task=%s attempt=%d did not stop in time", run.task_id, run.attempt)
        self.runners.close()
        if self.cgroups is not None:
            self.cgroups.close()

    def _forget(self, run: Run) -> None:
        with self._lock:
            self._runs.discard(run)

