"""Retention in a real master: it prunes old and surplus finished tasks from its ledger, with their attempts and
output, and keeps recent and active ones; bad settings are refused before it starts."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from zmqgrid.client import build_spec
from zmqgrid.config import load_config
from zmqgrid.errors import ConfigError
from zmqgrid.model import validate_task_spec
from zmqgrid.store.task_store import TaskStore

from ..helpers import Harness, db_query, insert_task, run_cli, stays, wait_until

pytestmark = pytest.mark.timeout(90)
DAY = 86400.0


def seed(db: Path, tasks: list[tuple[str, str, float]]) -> None:
    """Write (id, state, days ago) tasks into the ledger as a master would have: finished ones with an attempt
    row and output, running ones held by a device that is gone."""
    store = TaskStore(db)
    try:
        now = time.time()
        for task_id, state, days_ago in tasks:
            at = now - days_ago * DAY
            insert_task(store, validate_task_spec({"kind": "shell", "command": "true", "id": task_id}), 0, None, at)
            if state == "queued":
                continue
            store.assign(task_id, 1, "gone", at + 1)
            store.mark_running(task_id, 1, at + 2, at + 2)
            if state == "running":
                continue
            store.end_attempt(task_id, 1, "gone", state, at + 3, assigned_at=at + 1, started_at=at + 2, exit_code=0,
                              stdout=f"out {task_id}", stderr="err")
            store.finish_task(task_id, state, at + 3, started_at=at + 2, exit_code=0)
        store.commit()
    finally:
        store.close()


def rows(db: Path) -> dict[str, int]:
    return {"tasks": db_query(db, "SELECT count(*) FROM tasks")[0][0],
            "attempts": db_query(db, "SELECT count(*) FROM attempts")[0][0],
            "output": db_query(db, "SELECT count(*) FROM task_output")[0][0]}


def ids(db: Path) -> set[str]:
    return {r[0] for r in db_query(db, "SELECT id FROM tasks")}


def test_the_master_prunes_finished_tasks_past_the_age_with_attempts_and_output_and_keeps_the_rest(tmp_path):
    old = [(f"old-{state}-{i}", state, 40 + i) for state in ("done", "failed", "cancelled", "timed_out")
           for i in range(5)]
    recent = [(f"recent-{i}", "done", 2 + i) for i in range(5)]
    active = [("old-queued", "queued", 100), ("old-running", "running", 100)]
    h = Harness(tmp_path, env={"ZMQGRID_RETENTION_DAYS": "30"})
    try:
        seed(h.db, old + recent + active)
        assert rows(h.db) == {"tasks": 27, "attempts": 25, "output": 50}
        h.start_master()
        wait_until(lambda: rows(h.db)["tasks"] == 7, 20, "the 20 old finished tasks pruned")
        assert ids(h.db) == {t for t, _, _ in recent + active}
        assert rows(h.db) == {"tasks": 7, "attempts": 5, "output": 10}, "their attempts and output went with them"
        client = h.client()
        assert client.task("old-queued")["state"] == "queued", "active tasks are never pruned"
        assert client.task("old-running")["state"] in ("running", "queued")   # re-queued once its device times out
        assert client.logs("recent-0")["stdout"] == "out recent-0"

        # Tasks that finish now are recent: a worker runs them and they stay.
        h.start_worker("w1")
        h.wait_online(client, "w1")
        fresh = client.submit([build_spec(shell=f"echo fresh {i}") for i in range(3)], notify=True)
        assert {r["state"] for r in client.wait(fresh, timeout_s=30).values()} == {"done"}
        assert set(fresh) <= ids(h.db)
        log = (tmp_path / "master.log").read_text()
        assert "retention: finished tasks older than 30 days or beyond the newest 1000000 are pruned" in log
        assert "retention pruned 20 finished tasks (older than 30 days or beyond the newest 1000000) with their " \
            "attempts and output in 1 chunk(s)" in log
    finally:
        h.stop()


def test_the_count_cap_keeps_the_newest_finished_tasks(tmp_path):
    finished = [(f"f{i}", "done", 10 - i * 0.5) for i in range(12)]     # f11 finished last
    h = Harness(tmp_path, env={"ZMQGRID_RETENTION_DAYS": "0", "ZMQGRID_RETENTION_MAX_TASKS": "4"})
    try:
        seed(h.db, finished + [("waiting", "queued", 20)])
        h.start_master()
        wait_until(lambda: rows(h.db)["tasks"] == 5, 20, "all but the newest 4 finished tasks pruned")
        assert ids(h.db) == {"f8", "f9", "f10", "f11", "waiting"}
        assert rows(h.db) == {"tasks": 5, "attempts": 4, "output": 8}
        assert h.client().status()["tasks"]["done"] == 4
    finally:
        h.stop()


def test_retention_zero_keeps_every_task(tmp_path):
    h = Harness(tmp_path, env={"ZMQGRID_RETENTION_DAYS": "0", "ZMQGRID_RETENTION_MAX_TASKS": "0"})
    try:
        seed(h.db, [(f"ancient-{i}", "done", 3000) for i in range(5)])
        h.start_master()
        wait_until(lambda: "retention: finished tasks never are pruned" in (tmp_path / "master.log").read_text(),
                   10, "the master to log its retention")
        # a pass would be due a second after start: watch past it
        stays(lambda: len(ids(h.db)) == 5, 2.5, "every ancient task kept")
        assert h.client().status()["tasks"]["done"] == 5
    finally:
        h.stop()


def test_retention_settings_follow_the_config_layers_and_bad_values_are_refused(tmp_path):
    assert (load_config("master", env={}).retention_days, load_config("master", env={}).retention_max_tasks) == \
        (30, 1_000_000)
    assert load_config("master", env={"ZMQGRID_RETENTION_DAYS": "7"}).retention_days == 7
    assert load_config("master", env={"ZMQGRID_RETENTION_DAYS": "7"}, flags={"retention_days": 0}).retention_days == 0
    with pytest.raises(ConfigError, match=r"retention_days = \"-1\" is not allowed; expected an integer 0-36500"):
        load_config("master", env={"ZMQGRID_RETENTION_DAYS": "-1"})
    with pytest.raises(ConfigError, match="retention_max_tasks"):
        load_config("master", env={"ZMQGRID_RETENTION_MAX_TASKS": "lots"})

    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "distribution_master.json").write_text(json.dumps({"retention_days": 1.5}))
    res = run_cli("distribute", "--mode", "master", "--db", str(tmp_path / "l.db"), cwd=tmp_path)
    assert res.returncode == 3
    assert res.stderr.strip().splitlines() == [
        "error: config/distribution_master.json: retention_days = 1.5 is not allowed; expected an integer 0-36500"]
    assert not (tmp_path / "l.db").exists(), "refused before the ledger is opened"
