"""deploy/: the systemd units pass `systemd-analyze verify`, a worker stopped as its unit stops it ends its tasks
itself, and the compose recipe (its key script, configs and commands) brings up a secured master and two workers
that run a task: real processes on 127.0.0.1, no container runtime and no systemd as PID 1 (the image itself is not
built by the tests; deploy/README.md says what was verified)."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
import yaml

from tests.helpers import REPO, db_query, free_port_block, wait_until
from tests.tasks import TREE, TREE_PIDS
from zmqgrid.client import Client, build_spec
from zmqgrid.config import load_config
from zmqgrid.security import client_curve

DEPLOY = REPO / "deploy"
UNITS = DEPLOY / "systemd"
ANALYZE = shutil.which("systemd-analyze")
EXEC = "/opt/zmqgrid/venv/bin/zmqgrid"   # where the units expect the virtualenv's console script


def unit(name: str) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in (UNITS / name).read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            settings.setdefault(key, []).append(value)
    return settings


def verify(tmp_path: Path, units: dict[str, str], *names: str) -> subprocess.CompletedProcess:
    """systemd-analyze verify in a root of its own: the system's unit directory (for the targets the units name),
    the units under test, and the one executable they run, so nothing outside tmp_path is needed or touched."""
    root = tmp_path / "root"
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    for name, text in units.items():
        (root / "etc/systemd/system" / name).write_text(text)
    exe = root / EXEC.lstrip("/")
    exe.parent.mkdir(parents=True)
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    return subprocess.run([ANALYZE, "verify", f"--root={root}", *names], capture_output=True, text=True, timeout=60)


@pytest.mark.skipif(ANALYZE is None or not Path("/usr/lib/systemd/system").is_dir(),
                    reason="systemd-analyze is not installed (apt-get install systemd)")
def test_the_systemd_units_pass_systemd_analyze_verify_without_a_warning(tmp_path):
    units = {p.name: p.read_text() for p in UNITS.glob("*.service")}
    assert set(units) == {"zmqgrid-master.service", "zmqgrid-worker@.service"}
    r = verify(tmp_path, units, "zmqgrid-master.service", "zmqgrid-worker@w1.service")
    assert r.returncode == 0 and not r.stdout.strip() and not r.stderr.strip(), r.stdout + r.stderr
    # and the check can fail: a misspelt setting is reported (systemd only warns, exit 0, so the output counts)
    broken = {name: text.replace("KillMode=mixed", "KillMode=mixd") for name, text in units.items()}
    r = verify(tmp_path / "broken", broken, "zmqgrid-worker@w1.service")
    assert "kill mode" in r.stderr, r.stderr


def test_the_worker_template_stops_the_worker_then_kills_its_whole_cgroup_and_takes_its_device_id_from_the_instance():
    worker, master = unit("zmqgrid-worker@.service"), unit("zmqgrid-master.service")
    # mixed: SIGTERM to the worker alone, which stops its tasks and reports them; SIGKILL to every process left in
    # the cgroup once it has exited or died (control-group would SIGTERM the tasks too, racing the worker's stop)
    assert worker["KillMode"] == ["mixed"] and worker["KillSignal"] == ["SIGTERM"]
    assert worker["Restart"] == ["on-failure"]
    for settings, role in ((worker, "worker"), (master, "master")):
        assert settings["User"] and settings["User"] != ["root"]
        assert settings["ExecStart"][0].startswith(f"{EXEC} distribute --mode {role} --config /etc/zmqgrid/{role}.json")
        # a bad config is not restarted in a loop, nor a worker whose key was revoked or rejected (exit 5)
        assert settings["RestartPreventExitStatus"] == (["3 5"] if role == "worker" else ["3"])
    assert worker["ExecStart"][0].endswith("--device-id %i")


def _runs(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.timeout(120)
def test_a_worker_stopped_as_its_unit_stops_it_ends_its_tasks_itself_and_records_them_stopped_by_the_shutdown(
        harness, tmp_path):
    # Given a worker running a shell task with children and grandchildren, each in the task's session
    harness.start_master()
    worker = harness.start_worker("w1", concurrency=1)
    client = harness.client()
    harness.wait_online(client, "w1")
    pids = tmp_path / "pids"
    task_id = client.submit(build_spec(shell=TREE.format(pids=pids), retries=1))[0]
    wait_until(lambda: pids.exists() and len(pids.read_text().split()) >= TREE_PIDS, 30, "the task's tree to start")
    tree = [psutil.Process(int(pid)) for pid in pids.read_text().split()]   # known by pid and create time
    try:
        # When systemd stops the unit (KillMode=mixed): SIGTERM to the worker, its main process, alone
        worker.send_signal(signal.SIGTERM)
        wait_until(lambda: worker.poll() is not None, 30, "the worker to exit")

        # Then it exits 0 having ended every process of the task itself (the SIGKILL systemd then sends to what is
        # left of the cgroup finds none of them), and the attempt is recorded as stopped by the shutdown, not as a
        # failure of the task's own (which a task's --retry-on rules could leave unretried)
        assert worker.returncode == 0
        assert not [proc.pid for proc in tree if _runs(proc)]
        first = "SELECT state, error FROM attempts WHERE task_id = ? AND attempt = 1"
        wait_until(lambda: db_query(harness.db, first, (task_id,)), 20, "the first attempt's end recorded")
        [(state, error)] = db_query(harness.db, first, (task_id,))
        assert state == "cancelled" and "worker shutting down" in error, (state, error)
    finally:
        for proc in tree:   # only what this test started, and only while it is still that process
            if _runs(proc):
                proc.kill()


@pytest.mark.parametrize("role", ["master", "worker"])
def test_the_shipped_configs_are_valid(role):
    config = load_config(role, DEPLOY / "config" / f"{role}.json", env={})
    assert config.curve and config.log_file is None


def _zmqgrid(args: list[str], env: dict[str, str], cwd: Path, log: Path) -> subprocess.Popen:
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, "-m", "zmqgrid", *args], cwd=cwd, env=env, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def test_the_compose_recipe_runs_a_secured_master_and_two_workers(tmp_path):
    # Given the compose file's own key script and commands, with the container paths moved into tmp_path and
    # the master on 127.0.0.1 instead of the network (the only change: the rest is what the containers run)
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"keys", "master", "worker-1", "worker-2"}
    keys, data = tmp_path / "keys", tmp_path / "data"
    data.mkdir()
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "zmqgrid").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m zmqgrid "$@"\n')
    (shim / "zmqgrid").chmod(0o755)
    port = free_port_block()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZMQGRID_")}
    env.update(PYTHONPATH=str(REPO), PATH=f"{shim}{os.pathsep}{env['PATH']}", ZMQGRID_KEYS_DIR=str(keys),
               ZMQGRID_DB_PATH=str(data / "zmqgrid.db"), ZMQGRID_PORT=str(port), ZMQGRID_HOST="127.0.0.1",
               ZMQGRID_AUTHORIZED_KEYS_DIR=str(keys / "authorized"), ZMQGRID_MASTER_KEY=str(keys / "master.key"))

    def local(text: str) -> str:
        return text.replace("/etc/zmqgrid/keys", str(keys)).replace("/etc/zmqgrid/", f"{DEPLOY / 'config'}/") \
            .replace("tcp://master:8000", f"tcp://127.0.0.1:{port}").replace("$$", "$")

    keys.mkdir()
    script = local(services["keys"]["command"][0])
    for _ in range(2):   # run twice: a second `up` must keep the keys it made
        subprocess.run(["sh", "-ec", script], env=env, check=True, timeout=60, capture_output=True)
    assert sorted(p.name for p in (keys / "authorized").iterdir()) == ["admin.key", "worker-1.key", "worker-2.key"]
    procs = []
    try:
        procs.append(_zmqgrid([local(a) for a in services["master"]["command"]], env, data, tmp_path / "master.out"))
        for name in ("worker-1", "worker-2"):
            worker_env = {**env, **{k: local(v) for k, v in services[name]["environment"].items()}}
            procs.append(_zmqgrid([local(a) for a in services[name]["command"]], worker_env, data,
                                  tmp_path / f"{name}.out"))
        # When an admin submits from the master's side (its keys_dir holds admin.key_secret)
        admin = client_curve(load_config("master", DEPLOY / "config" / "master.json", env=env))
        with Client(f"tcp://127.0.0.1:{port}", timeout_s=10, curve=admin) as c:
            def online() -> set:
                for p in procs:
                    assert p.poll() is None, (tmp_path / "master.out").read_text()[-2000:]
                return {d["device_id"] for d in c.devices() if d["state"] == "online"}
            wait_until(lambda: online() >= {"worker-1", "worker-2"}, 30, "both workers online")
            ids = c.submit([build_spec(shell="echo deployed", device=d) for d in ("worker-1", "worker-2")])
            done = c.wait(ids, timeout_s=30)
        # Then both workers ran their task over CURVE
        assert [t["state"] for t in done.values()] == ["done", "done"], done
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
    assert "curve=on" in (tmp_path / "master.out").read_text()
