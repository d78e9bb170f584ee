"""Standalone mode: the README's first command does real work, and SIGTERM/SIGINT leave no process behind."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import psutil
import pytest

from zmqgrid.client import Client

from .helpers import REPO, free_port_block, wait_until

pytestmark = pytest.mark.timeout(90)


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZMQGRID_")}
    env["PYTHONPATH"] = str(REPO)
    return env


def test_demo_runs_the_sample_batch_to_the_end_and_exits_zero(tmp_path):
    port = free_port_block()
    proc = subprocess.run([sys.executable, str(REPO / "main.py"), "distribute", "--mode", "standalone", "--demo",
                           "--port", str(port), "--db", str(tmp_path / "demo.db"),
                           "--log-file", str(tmp_path / "demo.log")],
                          cwd=REPO, env=_env(), capture_output=True, text=True, timeout=80)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "15/15" in proc.stdout
    assert "13 done, 2 not done" in proc.stdout
    assert "site=alpha" in proc.stdout and "hello from" in proc.stdout


def test_demo_started_from_another_directory_runs_its_workers_on_the_same_code(tmp_path):
    env = {k: v for k, v in _env().items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, str(REPO / "main.py"), "distribute", "--mode", "standalone", "--demo",
                           "--port", str(free_port_block()), "--db", str(tmp_path / "demo.db"),
                           "--log-file", str(tmp_path / "demo.log")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=80)
    assert proc.returncode == 0 and "13 done, 2 not done" in proc.stdout, proc.stdout + proc.stderr


def test_demo_whose_workers_all_die_says_so_and_fails_instead_of_waiting(tmp_path):
    # Given the demo starting
    proc = subprocess.Popen([sys.executable, str(REPO / "main.py"), "distribute", "--mode", "standalone", "--demo",
                             "--port", str(free_port_block()), "--db", str(tmp_path / "demo.db"),
                             "--log-file", str(tmp_path / "demo.log")],
                            cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # When both of its worker processes are SIGKILLed as soon as they exist (before they can register)
        def workers() -> list[psutil.Process]:
            return psutil.Process(proc.pid).children()
        wait_until(lambda: len(workers()) == 2, 30, "the two worker processes")
        for worker in workers():
            worker.kill()
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    # Then it stops at once with a one-line error, not after some timeout, and fails
    assert proc.returncode == 1, out + err
    assert "error: every worker process exited with 15 sample tasks unfinished" in err
    assert "Traceback" not in err


def test_standalone_hands_python_pool_to_its_workers_and_the_demo_ends_the_same_inline(tmp_path):
    env = dict(_env(), ZMQGRID_PYTHON_POOL="inline")
    proc = subprocess.run([sys.executable, str(REPO / "main.py"), "distribute", "--mode", "standalone", "--demo",
                           "--port", str(free_port_block()), "--db", str(tmp_path / "demo.db"),
                           "--log-file", str(tmp_path / "demo.log")],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=80)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "13 done, 2 not done" in proc.stdout
    for worker in ("local-1", "local-2"):
        assert "python_pool=inline" in (tmp_path / f"demo-{worker}.log").read_text(), worker


def test_standalone_with_curve_makes_its_keys_and_runs_every_worker_secured(tmp_path):
    port, keys = free_port_block(), tmp_path / "keys"
    argv = [sys.executable, str(REPO / "main.py"), "distribute", "--mode", "standalone", "--demo", "--curve",
            "--keys-dir", str(keys), "--port", str(port), "--db", str(tmp_path / "demo.db"),
            "--log-file", str(tmp_path / "demo.log")]
    proc = subprocess.run(argv, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=80)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "13 done, 2 not done" in proc.stdout
    # both local workers ran tasks: each got a key of its own, accepted at start
    assert "local-1" in proc.stdout and "local-2" in proc.stdout
    assert "curve=on" in (tmp_path / "demo.log").read_text()
    for secret in ("master.key_secret", "admin.key_secret", "standalone/local-1.key_secret",
                   "standalone/local-2.key_secret"):
        assert (keys / secret).stat().st_mode & 0o077 == 0, secret
    again = subprocess.run(argv, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=80)
    assert again.returncode == 0 and "13 done, 2 not done" in again.stdout   # the same keys, reused


@pytest.mark.parametrize("user_path", ["", "/srv/crawler-lib"])
def test_standalone_tasks_see_the_users_own_pythonpath_not_the_one_its_workers_need(tmp_path, user_path):
    # Given a standalone cluster started from its checkout with the user's PYTHONPATH (or none)
    env = {k: v for k, v in _env().items() if k != "PYTHONPATH"}
    if user_path:
        env["PYTHONPATH"] = user_path
    port = free_port_block()
    proc = subprocess.Popen([sys.executable, str(REPO / "main.py"), "distribute", "--mode", "standalone",
                             "--port", str(port), "--db", str(tmp_path / "s.db"), "--log-file", str(tmp_path / "s.log")],
                            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with Client(f"tcp://127.0.0.1:{port}", timeout_s=30) as client:
            # When a shell task and a python task read PYTHONPATH where they run
            from zmqgrid.client import build_spec
            shell = client.run(build_spec(shell='echo "path=[$PYTHONPATH]"'), timeout_s=60)
            python = client.run(build_spec(python="os:getenv", args=["PYTHONPATH"]), timeout_s=60)
            output = client.logs(shell["id"])
    finally:
        proc.terminate()
        proc.wait(30)
    # Then both see the user's value, without the package root the workers themselves were started with
    assert (shell["state"], python["state"]) == ("done", "done"), (shell, python)
    assert f"path=[{user_path}]" in str(output), output
    assert python["value"] == (user_path or None), python


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_standalone_stops_cleanly_on_a_signal_and_leaves_no_process_behind(tmp_path, sig):
    # Given a standalone cluster with two workers that runs a long task
    port = free_port_block()
    proc = subprocess.Popen([sys.executable, "-m", "zmqgrid", "distribute", "--mode", "standalone", "--port", str(port),
                             "--db", str(tmp_path / "s.db"), "--log-file", str(tmp_path / "s.log")],
                            cwd=tmp_path, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with Client(f"tcp://127.0.0.1:{port}", timeout_s=0.5) as client:
            def online() -> int:
                try:
                    return client.status()["devices"]["online"]
                except Exception:
                    return 0
            wait_until(lambda: online() == 2, 30, "two workers online")
        with Client(f"tcp://127.0.0.1:{port}", timeout_s=5) as client:
            from zmqgrid.client import build_spec
            task_id = client.submit(build_spec(shell="sleep 120"))[0]
            wait_until(lambda: client.task(task_id)["state"] == "running", 20, "the long task to run")
        family = psutil.Process(proc.pid).children(recursive=True)
        assert len(family) >= 3, "two workers and the task's shell"

        # When it gets the signal
        proc.send_signal(sig)

        # Then it exits by itself, and every process it started is gone
        assert proc.wait(30) == 0
        gone, alive = psutil.wait_procs(family, timeout=15)
        assert not alive, f"left behind: {alive}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


def test_the_demo_keeps_its_daemons_info_lines_in_the_log_files_off_the_terminal(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "main.py"), "distribute", "--mode", "standalone", "--demo",
                           "--port", str(free_port_block()), "--db", str(tmp_path / "demo.db"),
                           "--log-file", str(tmp_path / "demo.log")],
                          cwd=REPO, env=_env(), capture_output=True, text=True, timeout=80)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    terminal = proc.stdout + proc.stderr
    assert " INFO " not in terminal, terminal
    assert "13 done, 2 not done" in proc.stdout
    assert " INFO zmqgrid.master" in (tmp_path / "demo.log").read_text()
    for worker in ("local-1", "local-2"):
        assert " INFO zmqgrid.worker" in (tmp_path / f"demo-{worker}.log").read_text(), worker
