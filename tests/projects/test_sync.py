"""`projects sync` with a real master, real workers and real pushes (docs/architecture.md, Projects, "Sync and what
workers hold"): a sync puts the version in each worker's cache ahead of any task, `projects show` lists who holds
it, a rebuild builds again after the cause of a failed build was fixed, the master serves a synced version only to
the devices the sync went to, and a sync that cannot be done says why in one line."""
from __future__ import annotations

import json
import signal
import time

import pytest
import zmq

from zmqgrid.client import build_spec
from zmqgrid.projects.messages import ProjectData, ProjectFetch
from zmqgrid.protocol import Control, Error, Heartbeat

from ..helpers import db_query, run_cli, wait_until
from .test_envs import make_wheel
from .test_fetch import RawWorker, cache, run_all, spider
from .test_push import project

pytestmark = pytest.mark.timeout(120)


def test_a_sync_puts_the_version_in_every_workers_cache_before_any_task_and_show_lists_them(harness, tmp_path):
    harness.start_master()
    client = harness.client()
    version = client.push_project(spider(tmp_path))["version"]
    harness.start_worker("w1")
    harness.start_worker("w2")
    harness.wait_online(client, "w1", "w2")

    # When the project is synced
    synced = run_cli("projects", "sync", "myspider", "--master", harness.url, cwd=tmp_path, timeout_s=60)

    # Then each worker reports its progress and ends ready, with the copy in its cache and no task run
    assert synced.returncode == 0, synced.stderr
    lines = synced.stdout.splitlines()
    assert {"w1: ready", "w2: ready"} <= set(lines) and lines[-1] == f"myspider@{version[:12]}: 2/2 workers ready"
    for device in ("w1", "w2"):
        assert (cache(harness, device) / version / "myspider" / "crawl.py").is_file()
    assert db_query(harness.db, "SELECT count(*) FROM tasks") == [(0,)]

    # and projects show lists the workers holding the version, with its environment's state
    shown = run_cli("projects", "show", "myspider", "--master", harness.url, cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    held = [line.split() for line in shown.stdout.splitlines() if line.startswith(version[:12])]
    assert [row[1:] for row in held[1:]] == [["w1", "cached,", "no", "requirements.txt"],
                                             ["w2", "cached,", "no", "requirements.txt"]], shown.stdout
    rows = json.loads(run_cli("projects", "show", "myspider", "--json", "--master", harness.url, cwd=tmp_path).stdout)
    assert {(w["device_id"], w["copy"], w["env"], w["device"]) for w in rows[0]["workers"]} == {
        ("w1", "cached", "none", "online"), ("w2", "cached", "none", "online")}

    # When the master loses its archive, a task of the version still runs: the worker fetches nothing
    (harness.dir / "ledger.db.projects" / f"{version}.tar").unlink()
    done = run_all(client, [build_spec(shell="cat data/words.txt", project="myspider", device=d)
                            for d in ("w1", "w2")])
    assert [t["state"] for t in done] == ["done", "done"], done
    assert [client.logs(t["id"])["stdout"] for t in done] == ["alpha beta gamma\n"] * 2

    # When a worker is killed and started again, it reports the copy it found in its cache
    harness.kill(harness.workers["w2"])
    wait_until(lambda: any(w["device_id"] == "w2" and w["device"] == "offline"
                           for w in client.projects("myspider")[0]["workers"]), 30, "w2 shown offline")
    harness.start_worker("w2")
    wait_until(lambda: ("w2", "cached", "none", "online") in {
        (w["device_id"], w["copy"], w["env"], w["device"]) for w in client.projects("myspider")[0]["workers"]},
        30, "w2 to report its copy again")


def test_a_sync_of_an_unknown_project_or_with_no_matching_worker_is_refused_with_one_line(harness, tmp_path):
    harness.start_master()
    client = harness.client()
    client.push_project(spider(tmp_path))

    unknown = run_cli("projects", "sync", "nosuch", "--master", harness.url, cwd=tmp_path)
    assert unknown.returncode == 3, unknown
    assert unknown.stderr.startswith("error: no project 'nosuch'") and len(unknown.stderr.splitlines()) == 1
    wrong_version = run_cli("projects", "sync", "myspider@abcdef12", "--master", harness.url, cwd=tmp_path)
    assert wrong_version.returncode == 3 and "has no version 'abcdef12'" in wrong_version.stderr

    harness.start_worker("w1")
    harness.wait_online(client, "w1")
    nobody = run_cli("projects", "sync", "myspider", "--tag", "gpu", "--master", harness.url, cwd=tmp_path)
    assert nobody.returncode == 3, nobody
    assert nobody.stderr.startswith("error: no online worker runs projects and has tag gpu: nothing to sync")
    assert len(nobody.stderr.splitlines()) == 1 and "Traceback" not in nobody.stderr
    assert not (cache(harness, "w1")).exists() or not any(cache(harness, "w1").iterdir())


def test_a_sync_with_rebuild_builds_the_environment_again_once_its_failure_is_fixed(harness, tmp_path):
    # Given a project whose requirement comes from a wheelhouse on the worker's machine that is empty yet
    wheelhouse = tmp_path / "wheelhouse"
    wheelhouse.mkdir()
    folder = project(tmp_path / "envspider", {
        "requirements.txt": f"--no-index\n--find-links {wheelhouse}\nzgdemo==1.0\n",
        "show.py": "import zgdemo\nprint(zgdemo.VALUE)\n"})
    harness.start_master()
    client = harness.client()
    version = client.push_project(folder)["version"]
    harness.start_worker("w1")
    harness.wait_online(client, "w1")

    # When it is synced, the build fails: the command names the worker and why, and exits 1
    failed = run_cli("projects", "sync", "envspider", "--master", harness.url, cwd=tmp_path, timeout_s=90)
    assert failed.returncode == 1, failed
    assert f"error: envspider@{version[:12]} failed on 1 of 1 workers: w1 (" in failed.stderr
    assert "zgdemo" in failed.stderr and "w1: failed: " in failed.stdout
    shown = client.projects("envspider")[0]["workers"]
    assert [(w["device_id"], w["copy"], w["env"]) for w in shown] == [("w1", "cached", "failed")]

    # When the wheel is there and the sync asks for a rebuild
    make_wheel(wheelhouse, "zgdemo", "1.0", "VALUE = 'from the wheelhouse'\n")
    rebuilt = client.sync_project("envspider", rebuild=True, timeout_s=90)

    # Then the environment is built and a task of the version uses it
    assert rebuilt["ready"] == ["w1"] and rebuilt["failed"] == rebuilt["unfinished"] == [], rebuilt
    task = run_all(client, [build_spec(script="show.py", project="envspider")], timeout_s=60)[0]
    assert task["state"] == "done", task
    assert client.logs(task["id"])["stdout"] == "from the wheelhouse\n"


def test_the_master_serves_a_synced_version_only_to_the_devices_the_sync_went_to(harness, tmp_path):
    harness.start_master()
    client = harness.client()
    version = client.push_project(spider(tmp_path))["version"]
    other = client.push_project(project(tmp_path / "other", {"a.txt": "a\n"}))["version"]
    raw = RawWorker(harness)
    try:
        raw.register()
        assert isinstance(raw.ask(ProjectFetch(1, version, 0, 1 << 20)), Error)   # nothing names it yet

        started = client.request(Control, "project", {"op": "sync", "name": "myspider"}, about="project")
        assert started["workers"] == [raw.device_id] and started["version"] == version

        data = raw.ask(ProjectFetch(2, version, 0, 1 << 20))
        assert isinstance(data, ProjectData) and data.offset == 0 and data.size > 0
        refused = raw.ask(ProjectFetch(3, other, 0, 1 << 20))   # another version: still refused
        assert isinstance(refused, Error) and refused.code == "forbidden"
        assert "no sync sent to it names it" in refused.message
    finally:
        raw.close()


def test_a_sync_that_does_not_finish_in_time_exits_124_naming_the_workers_it_waits_for(harness, tmp_path):
    harness.env["ZMQGRID_DEVICE_TIMEOUT"] = "60"   # a stopped worker stays online while the sync waits for it
    harness.start_master()
    client = harness.client()
    version = client.push_project(spider(tmp_path))["version"]
    harness.start_worker("w1")
    harness.wait_online(client, "w1")

    harness.kill(harness.workers["w1"], signal.SIGSTOP)   # online still (for a while), but it answers nothing
    try:
        late = run_cli("projects", "sync", "myspider", "--timeout", "1", "--master", harness.url, cwd=tmp_path)
    finally:
        harness.kill(harness.workers["w1"], signal.SIGCONT)

    assert late.returncode == 124, late
    assert late.stderr == (f"error: myspider@{version[:12]} did not finish within 1 s on w1 (waiting for the sync "
                           "command); it goes on: projects show myspider follows it\n")
    # and it does go on: the worker, woken, applies the sync
    wait_until(lambda: any(w["device_id"] == "w1" and w["env"] == "none"
                           for w in (client.projects("myspider")[0].get("workers") or [])), 30, "w1 to hold it")


def test_a_workers_failure_reason_reaches_the_sync_output_as_escapes_never_as_bidi_or_format_characters(harness,
                                                                                                       tmp_path):
    # The schema keeps control characters out of a cache report's reason, not format ones (a bidi override that
    # reorders the operator's line, a zero-width space): the CLI shows them as escapes, as every table does.
    harness.start_master()
    client = harness.client()
    version = client.push_project(spider(tmp_path))["version"]
    raw = RawWorker(harness)
    push = raw.ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 0)
    try:
        raw.register()
        if harness.secured:
            curve = harness.client_curve("w2")
            push.curve_serverkey, push.curve_publickey, push.curve_secretkey = curve.server_key, curve.public, \
                curve.secret
        push.connect(f"tcp://127.0.0.1:{raw.ack.heartbeat_port}")
        reason = "pip said \u202enoitcelloc\u200b failed"
        # a report for any sync to come (its seq is past every one), the version's copy failed
        push.send_multipart(Heartbeat(device_id=raw.device_id, incarnation=raw.ack.incarnation, seq=1, running=[],
                                      held=[], metrics={}, sent_at=time.time(), commands=[],
                                      projects=[[version, "failed", "unknown", 1 << 40, reason]]).encode())
        wait_until(lambda: (client.projects("myspider")[0].get("workers") or [{}])[0].get("reason") == reason, 20,
                   "the master to hold the report")

        synced = run_cli("projects", "sync", "myspider", "--master", harness.url, cwd=tmp_path, timeout_s=60)
    finally:
        push.close(0)
        raw.close()

    assert synced.returncode == 1, synced
    shown = synced.stdout + synced.stderr
    assert "\u202e" not in shown and "\u200b" not in shown, shown
    assert f"{raw.device_id}: failed: pip said \\u202enoitcelloc\\u200b failed" in synced.stdout.splitlines(), shown
    assert "(pip said \\u202enoitcelloc\\u200b failed)" in synced.stderr, shown
