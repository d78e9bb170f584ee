"""A real worker fetches a pushed project's version from a real master, checks it, unpacks it into its cache and
runs shell, script and python tasks in that copy (docs/architecture.md, Projects, "Fetch", "The worker's cache");
a version the master lost fails its tasks with one line, a damaged copy is fetched again, a worker killed
mid-download leaves nothing half-used, and the master serves a version only to a device whose tasks pin it."""
from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import zmq

from zmqgrid.client import build_spec
from zmqgrid.projects.messages import RUNS_PROJECTS_TAG, ProjectData, ProjectFetch
from zmqgrid.protocol import Error, Register, RegisterAck, Tasks, decode

from ..helpers import Harness, db_query, run_cli, wait_until
from .test_push import project

pytestmark = pytest.mark.timeout(120)

CRAWL = """import os
from myspider.words import WORDS


def run(n):
    with open("data/words.txt") as f:
        return {"cwd": os.getcwd(), "words": f.read().split()[:n], "module": WORDS, "version": 1}
"""
EXPORT = """import os, sys
print("cwd", os.getcwd())
print("data", open("data/words.txt").read().strip())
print("args", sys.argv[1:])
"""


def spider(root: Path) -> Path:
    return project(root / "myspider", {"myspider/__init__.py": "", "myspider/words.py": "WORDS = 'from the package'\n",
                                       "myspider/crawl.py": CRAWL, "data/words.txt": "alpha beta gamma\n",
                                       "tools/export.py": EXPORT, "run.sh": "echo shell in $(pwd)\n"})


def cache(h: Harness, device_id: str) -> Path:
    return h.dir / "state" / "projects" / device_id


def run_all(client, specs: list[dict], timeout_s: float = 60) -> list[dict]:
    ids = client.submit(specs, notify=True)
    done = client.wait(ids, timeout_s)
    return [done[i] for i in ids]


def test_shell_script_and_python_tasks_run_in_the_workers_copy_of_the_version_they_pin(harness, tmp_path):
    folder = spider(tmp_path)
    harness.start_master()
    client = harness.client()
    v1 = client.push_project(folder)["version"]
    harness.start_worker("w1", concurrency=1)   # one python child: v1's and v2's calls go to the same process
    harness.wait_online(client, "w1")
    copy = cache(harness, "w1") / v1

    shell, script, call = run_all(client, [
        build_spec(shell="sh run.sh && cat data/words.txt", project="myspider"),
        build_spec(script="tools/export.py", args=["--site", "a"], project="myspider"),
        build_spec(python="myspider.crawl:run", args=[2], project="myspider")])

    assert [t["state"] for t in (shell, script, call)] == ["done"] * 3, (shell, script, call)
    assert client.logs(shell["id"])["stdout"] == f"shell in {copy}\nalpha beta gamma\n"
    assert client.logs(script["id"])["stdout"] == f"cwd {copy}\ndata alpha beta gamma\nargs ['--site', 'a']\n"
    assert call["value"] == {"cwd": str(copy), "words": ["alpha", "beta"], "module": "from the package",
                             "version": 1}
    # the copy is complete, with its manifest; no download is left
    assert sorted(p.name for p in cache(harness, "w1").iterdir()) == [v1, f"{v1}.manifest", f"{v1}.used"]
    manifest = json.loads((cache(harness, "w1") / f"{v1}.manifest").read_text())
    assert set(manifest["files"]) == {"myspider/__init__.py", "myspider/words.py", "myspider/crawl.py",
                                      "data/words.txt", "tools/export.py", "run.sh"}

    # When v2 changes the package, v1 is pinned by name and v2 is the latest
    project(folder, {"myspider/crawl.py": CRAWL.replace('"version": 1', '"version": 2'),
                     "myspider/words.py": "WORDS = 'v2'\n"})
    v2 = client.push_project(folder)["version"]
    again = run_all(client, [build_spec(python="myspider.crawl:run", args=[1], project="myspider"),
                             build_spec(python="myspider.crawl:run", args=[1], project=f"myspider@{v1[:8]}"),
                             build_spec(python="myspider.crawl:run", args=[1], project="myspider")])
    # Then each call runs its own version's modules, in its own copy, in the same child
    assert [(t["value"]["version"], t["value"]["module"], t["value"]["cwd"]) for t in again] == [
        (2, "v2", str(cache(harness, "w1") / v2)), (1, "from the package", str(copy)),
        (2, "v2", str(cache(harness, "w1") / v2))]
    # and a task without a project runs where it always did
    plain = run_all(client, [build_spec(python="os:getcwd")])[0]
    assert plain["state"] == "done" and plain["value"] == str(harness.dir)


def test_a_version_the_master_no_longer_has_fails_its_tasks_at_once_with_one_line(harness, tmp_path):
    harness.start_master()
    client = harness.client()
    version = client.push_project(spider(tmp_path))["version"]
    (harness.dir / "ledger.db.projects" / f"{version}.tar").unlink()   # lost from the master's store
    harness.start_worker("w1")
    harness.wait_online(client, "w1")

    failed = run_all(client, [build_spec(shell="true", project="myspider", retries=3)])[0]

    assert failed["state"] == "failed"
    assert failed["error"]["type"] == "ProjectUnavailable"
    message = failed["error"]["message"]
    assert "\n" not in message and f"myspider@{version}" in message and "no archive" in message
    # permanent: never retried, though it had retries left
    assert db_query(harness.db, "SELECT count(*) FROM attempts WHERE task_id = ?", (failed["id"],)) == [(1,)]


def test_a_damaged_copy_is_found_at_the_first_use_after_a_start_and_fetched_again(harness, tmp_path):
    harness.start_master()
    client = harness.client()
    version = client.push_project(spider(tmp_path))["version"]
    harness.start_worker("w1")
    harness.wait_online(client, "w1")
    assert run_all(client, [build_spec(shell="cat data/words.txt", project="myspider")])[0]["state"] == "done"
    copy = cache(harness, "w1") / version

    harness.kill(harness.workers["w1"], signal.SIGTERM)
    (copy / "data" / "words.txt").write_text("tampered\n")
    harness.start_worker("w1")
    harness.wait_online(client, "w1")
    task = run_all(client, [build_spec(shell="cat data/words.txt", project="myspider")])[0]

    assert task["state"] == "done"
    assert client.logs(task["id"])["stdout"] == "alpha beta gamma\n"
    assert "is damaged (data/words.txt changed)" in (harness.dir / "w1.log").read_text()


def big_version_for_w1(harness: Harness, tmp_path: Path):
    """A master holding a version of 48 MiB (48 chunks: its download takes many turns) and w1 online: the client,
    the version, where w1 downloads it, and the project's folder."""
    folder = spider(tmp_path)
    project(folder, {"data/big.bin": os.urandom(48 << 20)})
    harness.start_master()
    client = harness.client()
    version = client.push_project(folder)["version"]
    harness.start_worker("w1")
    harness.wait_online(client, "w1")
    return client, version, cache(harness, "w1") / f"{version}.part", folder


def test_a_worker_killed_mid_download_leaves_no_copy_and_its_task_runs_once_after_the_next_start(harness, tmp_path):
    client, version, part, _ = big_version_for_w1(harness, tmp_path)
    task_id = client.submit(build_spec(shell="echo ran >> ../ran.txt", project="myspider"), notify=True)[0]

    # When the worker is killed while the archive is arriving
    wait_until(part.exists, 30, "the download to begin", interval_s=0.002)
    harness.kill(harness.master, signal.SIGSTOP)   # nothing more arrives until the worker is dead
    harness.kill(harness.workers["w1"])
    harness.kill(harness.master, signal.SIGCONT)
    assert part.exists() and part.stat().st_size < (48 << 20) and not (cache(harness, "w1") / version).exists()

    # Then its next start deletes the part, fetches the whole version and runs the task once
    harness.start_worker("w1")
    done = client.wait([task_id], 60)[task_id]
    assert done["state"] == "done", done
    assert (cache(harness, "w1") / "ran.txt").read_text() == "ran\n"
    assert not part.exists() and (cache(harness, "w1") / version / "data" / "big.bin").stat().st_size == 48 << 20
    assert db_query(harness.db, "SELECT count(*) FROM tasks") == [(1,)]


class RawWorker:
    """A DEALER that registers as a device advertising `runs projects` and keeps every task it is given; under
    CURVE (TEST_WITH_CURVE=1) with the accepted worker key of `w2`, the device id its key is bound to."""

    def __init__(self, h: Harness) -> None:
        self.device_id = "w2" if h.secured else "fz1"
        self.ctx = zmq.Context()
        self.dealer = self.ctx.socket(zmq.DEALER)
        self.dealer.setsockopt(zmq.LINGER, 0)
        if h.secured:
            curve = h.client_curve("w2")
            self.dealer.curve_serverkey, self.dealer.curve_publickey, self.dealer.curve_secretkey = \
                curve.server_key, curve.public, curve.secret
        else:
            self.dealer.setsockopt(zmq.IDENTITY, self.device_id.encode())   # open: the identity is the device id
        self.dealer.connect(h.url)
        self.tasks: list[dict] = []

    def close(self) -> None:
        self.dealer.close(0)
        self.ctx.term()

    def register(self) -> None:
        self.dealer.send_multipart(Register(
            device_id=self.device_id, name=self.device_id, hostname="h", os="Linux", python_version="3.11.7",
            python_executable="/usr/bin/python3", tags=[RUNS_PROJECTS_TAG], concurrency=1, credit=1, running=[],
            outbox=[], pid=1).encode())
        self.ack = self.receive()
        assert isinstance(self.ack, RegisterAck)

    def receive(self):
        assert self.dealer.poll(10_000), "no answer from the master"
        msg = decode(self.dealer.recv_multipart())
        if isinstance(msg, Tasks):
            self.tasks += msg.tasks
        return msg

    def ask(self, msg: ProjectFetch):
        self.dealer.send_multipart(msg.encode())
        while True:
            answer = self.receive()
            if isinstance(answer, (Error, ProjectData)) and answer.req_id == msg.req_id:
                return answer


def test_the_master_serves_a_version_only_to_a_device_a_task_pinning_it_was_dispatched_to(harness, tmp_path):
    harness.start_master()
    client = harness.client()
    version = client.push_project(spider(tmp_path))["version"]
    archive = (harness.dir / "ledger.db.projects" / f"{version}.tar").read_bytes()
    raw = RawWorker(harness)
    try:
        raw.register()
        refused = raw.ask(ProjectFetch(1, version, 0, 1 << 20))
        assert isinstance(refused, Error) and refused.code == "forbidden"
        assert f"no task dispatched to device {raw.device_id} pins project version" in refused.message

        client.submit(build_spec(shell="true", project="myspider", device=raw.device_id))
        wait_until(lambda: raw.dealer.poll(100) and raw.receive() and raw.tasks, 10, "the task dispatched to it")
        assert raw.tasks[0]["project"] == f"myspider@{version}"   # the pinned version is in the wire part
        data = raw.ask(ProjectFetch(2, version, 1000, 1 << 20))
        assert isinstance(data, ProjectData) and data.size == len(archive)
        assert data.offset == 1000 and data.data == archive[1000:1000 + (1 << 20)]
        past = raw.ask(ProjectFetch(3, version, len(archive), 10))
        assert isinstance(past, Error) and past.code == "bad_request"
        other = raw.ask(ProjectFetch(4, "0" * 64, 0, 10))
        assert isinstance(other, Error) and other.code == "forbidden"
    finally:
        raw.close()


def test_copies_past_project_cache_mb_are_deleted_least_recently_used_first_and_fetched_again_when_needed(
        harness, tmp_path):
    folder = project(tmp_path / "site", {"data.bin": os.urandom(700_000), "version.txt": "1\n"})
    harness.start_master()
    client = harness.client()
    v1 = client.push_project(folder)["version"]
    project(folder, {"version.txt": "2\n"})
    v2 = client.push_project(folder)["version"]
    harness.start_worker("w1", env={"ZMQGRID_PROJECT_CACHE_MB": "1"})   # room for one copy of 0.7 MB
    harness.wait_online(client, "w1")
    copies = lambda: sorted(p.name for p in cache(harness, "w1").iterdir() if p.is_dir())   # noqa: E731

    first = run_all(client, [build_spec(shell="cat version.txt", project=f"site@{v1}")])[0]
    assert copies() == [v1]
    second = run_all(client, [build_spec(shell="cat version.txt", project=f"site@{v2}")])[0]
    assert copies() == [v2]   # v1, used least recently and by no task, went
    third = run_all(client, [build_spec(shell="cat version.txt", project=f"site@{v1}")])[0]
    assert copies() == [v1]
    assert [client.logs(t["id"])["stdout"] for t in (first, second, third)] == ["1\n", "2\n", "1\n"]


def test_a_master_restarted_mid_download_is_asked_again_and_the_task_runs_once(harness, tmp_path):
    client, version, part, folder = big_version_for_w1(harness, tmp_path)
    task_id = client.submit(build_spec(shell="echo ran >> ../ran.txt", project="myspider"))[0]

    # When the master is killed while the archive is arriving, and started again
    wait_until(part.exists, 30, "the download to begin", interval_s=0.002)
    harness.kill(harness.master)
    assert part.exists() and not (cache(harness, "w1") / version).exists()
    harness.start_master()
    client = harness.client()

    # Then the worker, registered again, asks for what it lacks; the task runs once, in a whole copy
    done = client.wait([task_id], 60)[task_id]
    assert done["state"] == "done", done
    assert (cache(harness, "w1") / "ran.txt").read_text() == "ran\n"
    assert (cache(harness, "w1") / version / "data" / "big.bin").read_bytes() == (folder / "data/big.bin").read_bytes()


def test_the_cli_runs_a_projects_script_on_every_worker_and_refuses_a_path_out_of_the_project(harness, tmp_path):
    harness.start_master()
    client = harness.client()
    folder = spider(tmp_path)
    pushed = run_cli("projects", "push", str(folder), "--master", harness.url, cwd=tmp_path)
    assert pushed.returncode == 0, pushed.stderr
    version = client.projects("myspider")[0]["version"]
    harness.start_worker("w1")
    harness.start_worker("w2")
    harness.wait_online(client, "w1", "w2")
    # there is no tools/export.py where the CLI runs: with --project the path is the project's, nothing is read here
    done = run_cli("submit", "--project", "myspider", "--script", "tools/export.py", "--args", '["x"]', "--all",
                   "--wait", "--master", harness.url, cwd=tmp_path, timeout_s=60)
    assert done.returncode == 0, done.stderr
    assert "2/2 workers succeeded" in done.stdout
    ran = {client.task(line.split()[1])["device_id"]: client.logs(line.split()[1])["stdout"]
           for line in done.stderr.splitlines() if line.startswith("submitted ")}
    assert ran == {device: f"cwd {cache(harness, device) / version}\ndata alpha beta gamma\nargs ['x']\n"
                   for device in ("w1", "w2")}

    # a path out of the project is refused at submit; a path to nothing in it fails once, not retried
    out = run_cli("submit", "--project", "myspider", "--script", "../secret.py", "--master", harness.url, cwd=tmp_path)
    assert out.returncode == 3 and "a path inside the project" in out.stderr and "Traceback" not in out.stderr
    missing = run_all(client, [build_spec(script="tools/nothing.py", project="myspider", retries=2)])[0]
    assert missing["state"] == "failed" and missing["error"]["type"] == "StartError"
    assert "'tools/nothing.py' is not a file of project myspider@" in missing["error"]["message"]
    assert db_query(harness.db, "SELECT count(*) FROM attempts WHERE task_id = ?", (missing["id"],)) == [(1,)]


# --- a project's Python environment, from its requirements.txt --------------------------------------------------

def test_every_kind_runs_with_the_projects_environment_and_a_failed_build_fails_its_tasks_once(harness, tmp_path):
    # Given a project whose requirements.txt names a wheel it ships (installed offline: --no-index)
    from .test_envs import make_wheel
    folder = project(tmp_path / "envspider", {
        "requirements.txt": "--no-index\n./wheels/zgdemo-1.0-py3-none-any.whl\n",
        "envspider/__init__.py": "", "envspider/use.py": "import zgdemo\n\ndef value():\n    return zgdemo.VALUE\n",
        "show.py": "import sys, zgdemo\nprint(zgdemo.VALUE, sys.prefix != sys.base_prefix)\n"})
    make_wheel(folder / "wheels", "zgdemo", "1.0", "VALUE = 'from the wheel'\n")
    harness.start_master()
    client = harness.client()
    client.push_project(folder)
    harness.start_worker("w1", concurrency=1)
    harness.wait_online(client, "w1")

    # When a shell, a script and a python task of it run
    shell, script, call, plain = run_all(client, [
        build_spec(shell='python -c "import zgdemo; print(zgdemo.VALUE)"', project="envspider"),
        build_spec(script="show.py", project="envspider"),
        build_spec(python="envspider.use:value", project="envspider"),
        build_spec(shell='python -c "import zgdemo"')], timeout_s=120)

    # Then each sees the wheel: the shell with the environment activated, the script with its interpreter, the
    # call with its site-packages; a task without the project does not
    assert [t["state"] for t in (shell, script, call)] == ["done"] * 3, (shell, script, call)
    assert client.logs(shell["id"])["stdout"] == "from the wheel\n"
    assert client.logs(script["id"])["stdout"] == "from the wheel True\n"
    assert call["value"] == "from the wheel"
    assert plain["state"] == "failed"
    assert list((harness.dir / "state" / "envs").iterdir()), "the environment lives under state_dir/envs"

    # When a version's requirement cannot be installed
    project(folder, {"requirements.txt": "--no-index\nno-such-package-zmqgrid==1.0\n"})
    client.push_project(folder)
    failed = run_all(client, [build_spec(shell="true", project="envspider", retries=3)], timeout_s=120)[0]

    # Then its task fails at once, not retried, saying why with the installer's words
    assert failed["state"] == "failed" and failed["attempt"] == 1, failed
    assert failed["error"]["type"] == "env_build_failed", failed["error"]
    assert "no-such-package-zmqgrid" in failed["error"]["message"], failed["error"]
