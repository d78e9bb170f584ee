"""Environments unused for `env_keep_days` are deleted from <state_dir>/envs/, never one a task holds or runs,
and never one another worker sharing the folder used lately (zmqgrid.projects.envprune; docs/architecture.md,
Projects, "The worker's cache and environments"). Real virtualenvs, built offline with uv from a wheel the test
makes; "a while ago" is an mtime set back on the real marker files, as the passing days would leave them."""
from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

import pytest

from zmqgrid.config import load_config
from zmqgrid.errors import ConfigError
from zmqgrid.projects.envfiles import file_lock
from zmqgrid.projects.envprune import IN_USE_S, PRUNING, USED, EnvPruner
from zmqgrid.projects.envs import Environments
from zmqgrid.protocol import Tasks

from ..helpers import wait_until
from ..worker.test_project_gate import Rig, archive_of
from .test_envs import OFFLINE, copy_of, make_wheel

pytestmark = pytest.mark.timeout(120)
DAY = 86400.0
WHEEL = "./wheels/zgdemo-1.0-py3-none-any.whl\n"


def age(key_folder: Path, seconds: float) -> None:
    """Leave the environment as if nobody had used it for `seconds`: its markers' mtimes set back."""
    then = time.time() - seconds
    for name in (USED, "current", "failed.json"):
        if (key_folder / name).exists():
            os.utime(key_folder / name, (then, then))


def built(tmp_path: Path, name: str, value: str):
    envs = Environments(tmp_path / "envs", install_args=OFFLINE)
    result = envs.for_copy(copy_of(tmp_path / name, WHEEL, {"zgdemo": f"V = {value!r}\n"}))
    assert result.ok and result.built, result.error_text()
    return envs, result


def test_an_env_unused_past_keep_days_goes_with_one_log_line_and_is_built_again_at_its_next_use(tmp_path, caplog):
    envs, old = built(tmp_path, "v1", "old")
    _, recent = built(tmp_path, "v2", "recent")
    assert (tmp_path / "envs" / old.key / USED).exists(), "getting an environment marks it used"
    pruner = EnvPruner(tmp_path / "envs", keep_days=14)
    # Given one unused for 15 days and one for 13
    age(tmp_path / "envs" / old.key, 15 * DAY)
    age(tmp_path / "envs" / recent.key, 13 * DAY)
    # When a pass runs
    assert pruner.stale(set()) == [old.key]
    with caplog.at_level(logging.INFO, logger="zmqgrid.projects.envprune"):
        assert pruner.prune([old.key]) == [old.key]
    # Then the old one is gone, folder and all, and said so once; the other stays
    assert sorted(p.name for p in (tmp_path / "envs").iterdir()) == [recent.key]
    lines = [r.getMessage() for r in caplog.records if "pruned" in r.getMessage()]
    assert len(lines) == 1 and f"environment {old.key} pruned: last used 15.0 days ago" in lines[0]
    # And its next use builds it again, in the same place
    again = envs.for_copy(tmp_path / "v1")
    assert again.ok and again.built and again.env_dir.parent == old.env_dir.parent


def test_an_env_another_worker_used_lately_stays_whatever_keep_days_says(tmp_path):
    _, result = built(tmp_path, "v1", "x")
    folder = tmp_path / "envs" / result.key
    # Given a worker (this pruner) with an env_keep_days shorter than the in-use window
    pruner = EnvPruner(tmp_path / "envs", keep_days=60 / DAY)
    # An env used 10 minutes ago stays: another worker sharing the folder may be running a task in it
    age(folder, IN_USE_S / 3)
    assert pruner.stale(set()) == [] and pruner.prune([result.key]) == []
    # When another worker marks it as its tasks' (as every worker does each pass), it is fresh again
    age(folder, 15 * DAY)
    EnvPruner(tmp_path / "envs", keep_days=0).mark([result.key])
    assert pruner.stale(set()) == [] and pruner.prune([result.key]) == [] and folder.is_dir()
    # Past the window and keep_days, it goes
    age(folder, IN_USE_S + 60)
    assert pruner.prune(pruner.stale(set())) == [result.key] and not folder.exists()


def test_keep_days_zero_keeps_every_env_and_one_this_worker_uses_is_never_stale(tmp_path):
    _, result = built(tmp_path, "v1", "x")
    age(tmp_path / "envs" / result.key, 400 * DAY)
    assert EnvPruner(tmp_path / "envs", keep_days=0).stale(set()) == []
    assert EnvPruner(tmp_path / "envs", keep_days=14).stale({result.key}) == []


def test_an_env_whose_lock_is_held_is_left_for_the_next_pass(tmp_path):
    _, result = built(tmp_path, "v1", "x")
    folder = tmp_path / "envs" / result.key
    age(folder, 30 * DAY)
    pruner = EnvPruner(tmp_path / "envs", keep_days=14)
    # Given a build or a read of its state under way (its lock held: another open file, as another process has)
    with file_lock(folder, 0.0) as locked:
        assert locked
        assert pruner.prune([result.key]) == [] and folder.is_dir()
    assert pruner.prune([result.key]) == [result.key] and not folder.exists()


def _open_fds_of(path: Path) -> int:
    """How many of this process's file descriptors are open on `path` (Linux: /proc/self/fd)."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}") == str(path)
        except OSError:   # closed meanwhile
            pass
    return count


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts open files in /proc/self/fd (Linux)")
def test_a_caller_waiting_for_the_lock_of_a_pruned_env_locks_the_new_folder(tmp_path):
    folder = tmp_path / "envs" / "k"
    got: list[tuple[bool, bool]] = []

    def wait_for_it() -> None:
        with file_lock(folder, 30.0) as locked:
            got.append((locked, (folder / "lock").exists()))

    with file_lock(folder, 0.0):
        waiter = threading.Thread(target=wait_for_it)
        waiter.start()
        # once it has the old lock file open (beside this thread's own fd on it), it waits on that file's lock
        wait_until(lambda: _open_fds_of(folder / "lock") >= 2, 10, "the waiter to open the old lock file")
        os.rename(folder, folder.with_name(f"k{PRUNING}1"))   # as a pruner does under the lock
    waiter.join(30)
    # Then it did not take the renamed folder's lock: it locked a new <key>/lock
    assert got == [(True, True)]


def test_what_a_pruner_killed_mid_way_left_is_swept(tmp_path):
    left = tmp_path / "envs" / f"0123456789abcdef-cpython-311-00000000{PRUNING}4242" / "build-1" / "bin"
    left.mkdir(parents=True)
    (left / "python").write_text("")
    EnvPruner(tmp_path / "envs", keep_days=14).prune([])
    assert list((tmp_path / "envs").iterdir()) == []


def test_the_gate_never_prunes_the_env_of_a_running_task_and_binds_a_version_again_after_pruning(tmp_path):
    wheel = make_wheel(tmp_path / "wheel", "zgdemo", "1.0", "V = 1\n").read_bytes()
    version, archive = archive_of(tmp_path, {"requirements.txt": b"--no-index\n" + WHEEL.encode(),
                                             "wheels/zgdemo-1.0-py3-none-any.whl": wheel})
    rig = Rig(tmp_path)
    try:
        envs = tmp_path / "state" / "envs"

        def run(task_id: str, command: str) -> None:
            rig.slots.take(Tasks([{"id": task_id, "attempt": 1, "kind": "shell", "command": command,
                                   "project": f"s@{version}"}]))
            asked = rig.fetches()
            while asked:
                rig.answer(archive, asked)
                asked = rig.fetches()
            wait_until(lambda: rig.gate.tick(0) or task_id in rig.slots.active_ids(), 90, f"{task_id} ready")
            rig.slots.start_held()

        # Given a task running in the version's environment, unused by the file's account for 30 days
        run("p1", "sleep 60")
        assert "p1" in rig.slots.running
        (key,) = [p.name for p in envs.iterdir()]
        age(envs / key, 30 * DAY)
        # When a pass runs: it is this worker's, so it is marked used again and stays
        rig.gate.prune_envs()
        rig.gate.jobs.submit(lambda: None).result(30)   # the jobs thread, where a deletion would run, is past it
        assert time.time() - (envs / key / USED).stat().st_mtime < 60
        assert (envs / key / "current").exists()
        # Once the task has ended and the env is old again, a pass deletes it
        rig.slots.kill([("p1", 1)], "cancelled by a user")
        wait_until(lambda: rig.slots.collect_finished() or "p1" not in rig.slots.active_ids(), 20,
                   "p1 to end")
        age(envs / key, 30 * DAY)
        rig.gate.prune_envs()
        wait_until(lambda: not (envs / key).exists(), 30, "the environment pruned")
        # And a later task of the version gets it built again and runs in it
        run("p2", "python -c 'import zgdemo; print(zgdemo.V)' && sleep 60")
        assert (envs / key / "current").exists() and "p2" in rig.slots.running
    finally:
        rig.slots.kill([("p1", 1), ("p2", 1)], "the test ends")
        rig.close()


def test_env_keep_days_is_a_number_of_days_zero_for_never():
    assert load_config(env={}).env_keep_days == 14.0
    assert load_config(env={"ZMQGRID_ENV_KEEP_DAYS": "0"}).env_keep_days == 0.0
    with pytest.raises(ConfigError, match='env_keep_days = "-1" is not allowed.*a number of days, 0 for never'):
        load_config(env={"ZMQGRID_ENV_KEEP_DAYS": "-1"})
