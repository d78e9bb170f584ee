"""Interpreters per worker (docs/architecture.md, "Worker: interpreters per worker") on a real master and real
workers: a worker's `python_envs` entry is a real virtualenv made in the test; a task that chooses it runs there
(python call, script and shell) and only on a worker that has it; `devices list` shows the version the interpreter
answered; a bad entry is one config line. And a project's python calls run in a child of its environment's
interpreter (Projects, "Python calls")."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from zmqgrid.client import build_spec
from zmqgrid.errors import EXIT_USAGE

from .helpers import run_cli, wait_until
from .projects.test_envs import make_wheel
from .projects.test_push import project
from .pyenv_helpers import make_venv, version_of, worker_probe

pytestmark = pytest.mark.timeout(180)

SHOW = "import sys, zgprobe\nprint(sys.executable, sys.prefix, zgprobe.WHOSE)\n"


def run_all(client, specs: list[dict], timeout_s: float = 90) -> list[dict]:
    ids = client.submit(specs, notify=True)
    done = client.wait(ids, timeout_s)
    return [done[i] for i in ids]


def test_a_task_with_a_python_env_runs_with_that_interpreter_only_on_a_worker_that_has_it(harness, tmp_path):
    # Given w1 with a virtualenv as its python env "scrapy", and w2 without it; both have another zgprobe on their
    # own path
    venv = make_venv(tmp_path / "scrapy-venv")
    prefix = str(venv.parent.parent)
    own = {"PYTHONPATH": f"{harness.env['PYTHONPATH']}:{worker_probe(tmp_path / 'own')}"}
    harness.start_master()
    harness.start_worker("w1", env={**own, "ZMQGRID_PYTHON_ENVS": f"scrapy={venv}"})
    harness.start_worker("w2", env=own)
    client = harness.client()
    harness.wait_online(client, "w1", "w2")
    script = tmp_path / "show.py"
    script.write_text(SHOW)

    # When a python call, a script and a shell task choose it (two of each kind: both workers have room)
    tasks = run_all(client, [
        *[build_spec(python="zgprobe:where", python_env="scrapy") for _ in range(2)],
        *[build_spec(script=str(script), python_env="scrapy") for _ in range(2)],
        *[build_spec(shell='echo "$(which python) $VIRTUAL_ENV"', python_env="scrapy") for _ in range(2)],
        build_spec(python="zgprobe:where")])

    # Then each ran on w1, with the venv's interpreter and its packages, not the worker's
    assert [t["state"] for t in tasks] == ["done"] * 7, [t.get("error") for t in tasks]
    assert {t["device_id"] for t in tasks[:6]} == {"w1"}
    for call in tasks[:2]:
        assert call["value"]["whose"] == "venv" and call["value"]["prefix"] == prefix, call["value"]
        assert call["value"]["executable"] == str(venv), call["value"]
    for shown in tasks[2:4]:
        assert client.logs(shown["id"])["stdout"] == f"{venv} {prefix} venv\n"
    for shell in tasks[4:6]:
        assert client.logs(shell["id"])["stdout"] == f"{venv} {prefix}\n"
    assert tasks[6]["value"]["whose"] == "worker"   # without --python-env: the worker's own interpreter and path

    # And devices list shows the version the venv's interpreter answered
    listed = run_cli("devices", "list", "--master", harness.url, cwd=tmp_path)
    row = next(line for line in listed.stdout.splitlines() if line.startswith("w1 "))
    assert f"scrapy {version_of(venv)}" in row, listed.stdout
    rows = {d["device_id"]: d for d in client.devices()}
    assert rows["w1"]["python_envs"] == [{"name": "scrapy", "version": version_of(venv), "executable": str(venv)}]
    assert rows["w2"]["python_envs"] == []

    # When a task chooses an env no worker has, it stays queued, saying why
    [waiting] = client.submit([build_spec(shell="true", python_env="py39")])
    wait_until(lambda: "python env py39" in (client.task(waiting).get("waiting") or ""), 10, "the waiting reason")
    assert client.task(waiting)["waiting"] == ("it runs with python env py39 and no online worker has it (worker "
                                               "config python_envs)")
    assert client.task(waiting)["state"] == "queued"
    shown = run_cli("tasks", "show", waiting, "--master", harness.url, cwd=tmp_path).stdout
    assert any(line.startswith("python env") and line.endswith("py39") for line in shown.splitlines()), shown


def test_a_projects_python_call_runs_in_a_child_of_its_environments_interpreter(harness, tmp_path):
    # Given a project whose requirements.txt names a wheel it ships, and a worker with another zgdemo on its path
    folder = project(tmp_path / "envspider", {
        "requirements.txt": "--no-index\n./wheels/zgdemo-2.0-py3-none-any.whl\n",
        "envspider/__init__.py": "",
        "envspider/use.py": "import sys, zgdemo\n\ndef where():\n    return [zgdemo.VALUE, sys.prefix]\n"})
    make_wheel(folder / "wheels", "zgdemo", "2.0", "VALUE = 'from the wheel'\n")
    own = tmp_path / "own"
    (own / "zgdemo").mkdir(parents=True)
    (own / "zgdemo" / "__init__.py").write_text("VALUE = 'from the worker'\n")
    harness.start_master()
    client = harness.client()
    client.push_project(folder)
    harness.start_worker("w1", concurrency=1, env={"PYTHONPATH": f"{harness.env['PYTHONPATH']}:{own}"})
    harness.wait_online(client, "w1")

    # When a python call of the project runs, and then a call without it
    call, plain = run_all(client, [build_spec(python="envspider.use:where", project="envspider"),
                                   build_spec(python="sys:getdefaultencoding")], timeout_s=150)

    # Then the call ran with the environment's interpreter (sys.prefix is the env) and its package version
    assert call["state"] == "done", call.get("error")
    value, prefix = call["value"]
    assert value == "from the wheel"
    assert Path(prefix).is_relative_to(harness.dir / "state" / "envs"), prefix
    assert plain["state"] == "done"


def test_a_bad_python_envs_entry_is_one_line_and_the_worker_does_not_start(tmp_path):
    for entries, said in (({"py39": "/no/such/python"}, "is not an executable file"),
                          ({"py 39": "/usr/bin/env"}, "python_envs name \"py 39\" is not allowed"),
                          ({"py39": "python3"}, "expected the absolute path of a Python interpreter")):
        config = tmp_path / "worker.json"
        config.write_text(json.dumps({"python_envs": entries}))
        done = run_cli("distribute", "--mode", "worker", "--config", str(config), cwd=tmp_path)
        assert done.returncode == EXIT_USAGE, done.stderr
        assert said in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
