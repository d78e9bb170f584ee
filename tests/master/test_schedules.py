"""Schedules: exactly one firing per tick (also across restarts), missed-tick policies, and the CLI on a real master.

The unit tests run Schedules on a real ledger file with `now` injected, so no test waits for a real tick
except the end-to-end one, whose schedule ticks every 2 seconds.
"""
from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime

import pytest

from zmqgrid.errors import ScheduleNotFound, UsageError
from zmqgrid.master.board import Board
from zmqgrid.master.recovery import recover
from zmqgrid.master.schedules import MISFIRE_GRACE_S, Schedules, task_id
from zmqgrid.master.strategies import least_tasks
from zmqgrid.master.turn import Turn
from zmqgrid.model import is_valid_id
from zmqgrid.store.task_store import TaskStore

from ..helpers import REPO, db_query, wait_until

pytestmark = pytest.mark.timeout(90)

SPEC = {"kind": "shell", "command": "echo tick"}
EVERY_5_MIN = "*/5 * * * *"
# A local 10:00 on a January Monday: the next hours hold no DST change in any zone.
BASE = datetime(2030, 1, 7, 10, 0).timestamp()


def cluster_on(store: TaskStore) -> Board:
    board = Board(store, Turn(), incarnation="test", strategy=least_tasks, default_retries=0, default_timeout_s=None,
                      device_timeout_s=5.0)
    recover(board, 0.0, BASE)
    return board


def fire(schedules: Schedules, board: Board, now: float) -> list[str]:
    """One master turn's worth: fire what is due, submit it, commit both together."""
    specs = schedules.fire_due(now)
    board.submit(specs, b"", False, now)
    board.store.commit()
    return [s["id"] for s in specs]


def task_rows(path) -> list[tuple[str, int]]:
    return db_query(path, "SELECT id, count(*) FROM tasks WHERE id LIKE 'sched-%' GROUP BY id ORDER BY id")


@pytest.fixture
def ledger(tmp_path):
    return tmp_path / "ledger.db"


def test_a_schedule_fires_exactly_once_per_tick_however_often_it_is_asked(ledger):
    # Given a */5 schedule added just before 10:00
    store = TaskStore(ledger)
    board, schedules = cluster_on(store), Schedules(store)
    schedules.add("five", EVERY_5_MIN, SPEC, "run_once", BASE - 1)
    store.commit()

    # When the loop asks every 2.5 s for a simulated hour (120 times per tick)
    fired, now = [], BASE - 1
    while now < BASE + 3600 - 1:
        fired += fire(schedules, board, now)
        now += 2.5

    # Then each of the 12 ticks fired once, with its own deterministic id, and the ledger holds one task per tick
    expected = [task_id("five", BASE + 300 * k) for k in range(12)]
    assert fired == expected
    assert task_rows(ledger) == [(i, 1) for i in sorted(expected)]
    row = db_query(ledger, "SELECT fired_count, last_fired_at, next_at FROM schedules WHERE name = 'five'")[0]
    assert row == (12, BASE + 3300, BASE + 3600)
    assert all(is_valid_id(i) for i in expected)
    store.close()


def test_a_restart_between_ticks_fires_the_next_tick_once_and_a_repeated_firing_is_deduplicated(ledger):
    tick1, tick2 = BASE, BASE + 300
    store = TaskStore(ledger)
    board, schedules = cluster_on(store), Schedules(store)
    schedules.add("five", EVERY_5_MIN, SPEC, "run_once", BASE - 1)
    store.commit()
    assert fire(schedules, board, tick1 + 0.05) == [task_id("five", tick1)]

    # When tick 2 fires but the master dies before the turn's commit
    lost = schedules.fire_due(tick2 + 0.05)
    board.submit(lost, b"", False, tick2)
    assert [s["id"] for s in lost] == [task_id("five", tick2)]
    store.close()
    assert task_rows(ledger) == [(task_id("five", tick1), 1)], "nothing of the lost turn reached the ledger"

    # Then the restarted master, past tick 2, fires tick 2 exactly once
    store = TaskStore(ledger)
    board, schedules = cluster_on(store), Schedules(store)
    stale = Schedules(store)     # a view loaded before the firing below is committed
    assert fire(schedules, board, tick2 + 40) == [task_id("five", tick2)]
    assert fire(schedules, board, tick2 + 41) == []

    # And the stale view's repeat of the committed tick carries the same id, so the ledger drops it
    repeat = stale.fire_due(tick2 + 42)
    assert [s["id"] for s in repeat] == [task_id("five", tick2)]
    fresh = Board(store, Turn(), incarnation="other", strategy=least_tasks, default_retries=0, default_timeout_s=None,
                    device_timeout_s=5.0)     # knows nothing in memory: only the ledger can deduplicate
    fresh.submit(repeat, b"", False, tick2 + 42)
    store.commit()
    assert task_rows(ledger) == [(task_id("five", tick1), 1), (task_id("five", tick2), 1)]
    assert fresh.counters["submitted"] == 0
    store.close()


def test_after_an_hour_down_run_once_fires_one_task_skip_none_and_both_go_on_on_schedule(ledger):
    # Given two */5 schedules that fired at 10:00, one per policy
    store = TaskStore(ledger)
    board, schedules = cluster_on(store), Schedules(store)
    schedules.add("once", EVERY_5_MIN, SPEC, "run_once", BASE - 1)
    schedules.add("skipper", EVERY_5_MIN, SPEC, "skip", BASE - 1)
    store.commit()
    assert sorted(fire(schedules, board, BASE + 0.1)) == [task_id("once", BASE), task_id("skipper", BASE)]
    store.close()

    # When the master comes back an hour and a bit later (ticks 10:05 .. 11:00 passed while it was down)
    back = BASE + 3600 + 100
    store = TaskStore(ledger)
    board, schedules = cluster_on(store), Schedules(store)

    # Then run_once fires once, for the latest missed tick (11:00); skip fires nothing
    assert fire(schedules, board, back) == [task_id("once", BASE + 3600)]
    assert fire(schedules, board, back + 1) == []

    # And both go on from the next tick (11:05), once each
    assert sorted(fire(schedules, board, BASE + 3900 + 0.1)) == [task_id("once", BASE + 3900),
                                                                 task_id("skipper", BASE + 3900)]
    assert fire(schedules, board, BASE + 3900 + 2) == []
    assert [r[0] for r in task_rows(ledger)] == sorted([task_id("once", BASE), task_id("skipper", BASE),
                                                        task_id("once", BASE + 3600), task_id("once", BASE + 3900),
                                                        task_id("skipper", BASE + 3900)])
    store.close()


def test_skip_still_fires_a_tick_the_master_reaches_within_the_grace_period(ledger):
    store = TaskStore(ledger)
    board, schedules = cluster_on(store), Schedules(store)
    schedules.add("skipper", EVERY_5_MIN, SPEC, "skip", BASE - 1)
    store.commit()
    assert fire(schedules, board, BASE + MISFIRE_GRACE_S - 0.5) == [task_id("skipper", BASE)]
    assert fire(schedules, board, BASE + 300 + MISFIRE_GRACE_S + 1) == [], "later than the grace: missed"
    assert fire(schedules, board, BASE + 600) == [task_id("skipper", BASE + 600)]
    store.close()


def test_a_paused_schedule_does_not_fire_and_resumes_from_the_next_tick_after_now(ledger):
    store = TaskStore(ledger)
    board, schedules = cluster_on(store), Schedules(store)
    schedules.add("five", EVERY_5_MIN, SPEC, "run_once", BASE - 1)
    assert schedules.pause("five")["state"] == "paused"
    store.commit()
    assert schedules.seconds_until_due(BASE) == float("inf")
    assert fire(schedules, board, BASE + 900) == []

    # Paused across a restart too; resumed, the ticks that passed while paused are not fired
    store.close()
    store = TaskStore(ledger)
    board, schedules = cluster_on(store), Schedules(store)
    assert schedules.rows()[0]["state"] == "paused"
    assert schedules.resume("five", BASE + 1000)["next_at"] == BASE + 1200
    assert schedules.seconds_until_due(BASE + 1000) == 200
    assert fire(schedules, board, BASE + 1100) == []
    assert fire(schedules, board, BASE + 1200) == [task_id("five", BASE + 1200)]
    store.close()


def test_add_refuses_bad_names_crons_tasks_and_policies_and_remove_forgets_the_schedule(ledger):
    store = TaskStore(ledger)
    schedules = Schedules(store)
    for name, cron, spec, missed, says in [
        ("has space", EVERY_5_MIN, SPEC, "run_once", "schedule name 'has space' is not allowed"),
        ("x" * 41, EVERY_5_MIN, SPEC, "run_once", "is not allowed"),
        ("-flag", EVERY_5_MIN, SPEC, "run_once", "is not allowed"),
        ("ok", "61 * * * *", SPEC, "run_once", 'minute field "61" is out of range 0-59'),
        ("ok", EVERY_5_MIN, {"kind": "nope"}, "run_once", "task kind 'nope' is unknown"),
        ("ok", EVERY_5_MIN, "echo", "run_once", "the task must be an object"),
        ("ok", EVERY_5_MIN, SPEC, "sometimes", "missed policy 'sometimes' is unknown; allowed: run_once, skip"),
    ]:
        with pytest.raises(UsageError) as caught:
            schedules.add(name, cron, spec, missed, BASE)
        assert says in str(caught.value)
    longest = schedules.add("x" * 40, EVERY_5_MIN, dict(SPEC, id="ignored"), "run_once", BASE)
    assert "id" not in longest["spec"]
    assert is_valid_id(task_id("x" * 40, datetime(9999, 12, 31).timestamp()))
    with pytest.raises(UsageError, match="exists"):
        schedules.add("x" * 40, EVERY_5_MIN, SPEC, "run_once", BASE)
    assert schedules.control({"op": "remove", "name": "x" * 40}, BASE)["state"] == "removed"
    with pytest.raises(ScheduleNotFound, match="no schedule 'x"):
        schedules.pause("x" * 40)
    with pytest.raises(UsageError, match="op 'edit' is unknown"):
        schedules.control({"op": "edit", "name": "a"}, BASE)
    store.commit()
    assert Schedules(store).rows() == []
    store.close()


# ------------------------------------------------------------ end to end: the CLI against a real master and worker


def test_schedules_through_the_cli_fire_pause_list_resume_and_remove_on_a_real_master(harness):
    harness.start_master()
    harness.start_worker("w1", concurrency=4)
    client = harness.client()
    harness.wait_online(client, "w1")

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(REPO / "main.py"), *args, "--master", harness.url],
                              cwd=harness.dir, env=harness.env, capture_output=True, text=True, timeout=30)

    def fired(state: str | None = None) -> set[str]:
        return {t["id"] for t in client.tasks(state, limit=1000) if t["id"].startswith("sched-every2-")}

    # Given a schedule every 2 seconds
    added = cli("schedules", "add", "every2", "--cron", "*/2 * * * * *", "--shell", "echo tick")
    assert added.returncode == 0 and added.stdout.startswith("every2 added; next run "), added.stderr

    # Then its tasks run, one per even second
    done = wait_until(lambda: fired("done") if len(fired("done")) >= 2 else None, 20, "2 scheduled tasks done")
    ticks = sorted(int(i.rsplit("-", 1)[1]) for i in done)
    assert all(t % 2 == 0 for t in ticks) and len(set(ticks)) == len(ticks)
    assert client.logs(sorted(done)[0])["stdout"] == "tick\n"

    # When it is paused, no new task appears while we poll for 3 s
    paused = cli("schedules", "pause", "every2")
    assert paused.returncode == 0 and paused.stdout.strip() == "every2 paused", paused.stderr
    before = fired()
    with pytest.raises(AssertionError, match="timed out after 3.0s"):
        wait_until(lambda: fired() - before, 3.0, "a task from the paused schedule")
    listed = cli("schedules", "list", "--json")
    rows = json.loads(listed.stdout)
    assert [(r["name"], r["state"], r["fired_count"], r["cron"]) for r in rows] == \
        [("every2", "paused", len(before), "*/2 * * * * *")]
    table = cli("schedules", "list").stdout
    assert table.startswith("NAME") and "every2" in table and "paused" in table

    # And resumed, it fires again
    assert cli("schedules", "resume", "every2").stdout.strip() == "every2 active"
    wait_until(lambda: fired() - before, 10, "a task after resume")

    # And removed, it is gone
    removed = cli("schedules", "remove", "every2")
    assert removed.returncode == 0 and removed.stdout.strip() == "every2 removed", removed.stderr
    assert json.loads(cli("schedules", "list", "--json").stdout) == []

    # A bad cron or an unknown name is one error line and exit 3
    for args, says in [(("add", "bad", "--cron", "*/5 * * *", "--shell", "true"), 'has 4 fields; expected 5'),
                       (("add", "bad", "--cron", "61 * * * *", "--shell", "true"), 'minute field "61"'),
                       (("pause", "nope"), "no schedule 'nope'")]:
        result = cli("schedules", *args)
        lines = result.stderr.splitlines()
        assert result.returncode == 3 and len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], \
            (result.returncode, result.stderr)
        assert "Traceback" not in result.stdout + result.stderr


def test_a_schedule_survives_a_master_kill_and_goes_on_without_firing_a_tick_twice(harness):
    harness.start_master()
    client = harness.client()
    client.schedule_add("beat", "* * * * * *", {"kind": "shell", "command": "true"})
    wait_until(lambda: len(db_query(harness.db, "SELECT id FROM tasks")) >= 2, 10, "two firings")
    harness.kill(harness.master)
    count = len(db_query(harness.db, "SELECT id FROM tasks"))

    harness.start_master()
    wait_until(lambda: len(db_query(harness.db, "SELECT id FROM tasks")) >= count + 2, 10, "firings after restart")
    ticks = sorted(int(r[0].rsplit("-", 1)[1]) for r in db_query(harness.db, "SELECT id FROM tasks"))
    assert len(ticks) == len(set(ticks))
    assert client.schedules()[0]["fired_count"] >= len(ticks)
