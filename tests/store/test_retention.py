"""Retention on a real ledger: old or surplus finished tasks go with their attempts and output, in bounded chunks;
queued, assigned and running tasks, and recent finished ones, stay. Plus the indexes the big-ledger queries use."""
from __future__ import annotations

import pytest

from zmqgrid.model import TASK_STATES, validate_task_spec
from zmqgrid.store.retention import Retention, RetentionTimer, offline_devices
from zmqgrid.store.task_store import TaskStore

from ..helpers import insert_task

pytestmark = pytest.mark.timeout(60)
DAY = 86400.0
NOW = 1_800_000_000.0


def add(store: TaskStore, task_id: str, state: str, at: float, device: str = "w1") -> None:
    """A task submitted at `at` and brought to `state` through the store's own writes (the master's)."""
    insert_task(store, validate_task_spec({"kind": "shell", "command": "true", "id": task_id}), 3, None, at)
    if state == "queued":
        return
    store.assign(task_id, 1, device, at + 1)
    if state == "assigned":
        return
    store.mark_running(task_id, 1, at + 2, at + 2)
    if state == "running":
        return
    store.end_attempt(task_id, 1, device, state, at + 3, assigned_at=at + 1, started_at=at + 2, exit_code=0,
                      stdout=f"out of {task_id}", stderr="warning")
    store.finish_task(task_id, state, at + 3, started_at=at + 2, exit_code=0)


def counts(store: TaskStore) -> dict[str, int]:
    q = store.db.execute
    return {"tasks": q("SELECT count(*) FROM tasks").fetchone()[0],
            "attempts": q("SELECT count(*) FROM attempts").fetchone()[0],
            "output": q("SELECT count(*) FROM task_output").fetchone()[0]}


def ids(store: TaskStore) -> set[str]:
    return {r[0] for r in store.db.execute("SELECT id FROM tasks")}


def prune_all(retention: Retention, now: float, rows: int | None = None) -> list[int]:
    done = []
    while True:
        pruned = retention.prune_chunk(now, rows)
        done.append(pruned.tasks)
        if not pruned.more:
            return done


@pytest.fixture
def store(tmp_path):
    s = TaskStore(tmp_path / "ledger.db")
    yield s
    s.close()


def test_finished_tasks_older_than_the_age_go_with_their_attempts_and_output_and_the_rest_stay(store):
    for state in ("done", "failed", "timed_out", "cancelled", "quarantined"):
        add(store, f"old-{state}", state, NOW - 40 * DAY)
        add(store, f"new-{state}", state, NOW - 5 * DAY)
    for state in ("queued", "assigned", "running"):       # submitted long ago, still in flight: never pruned
        add(store, f"old-{state}", state, NOW - 90 * DAY)
    add(store, "reopened", "failed", NOW - 60 * DAY)
    store.commit()
    store.reopen_task("reopened", 3, "requeued by hand", NOW - 1)   # requeued: active again, not finished
    store.commit()
    assert counts(store) == {"tasks": 14, "attempts": 11, "output": 22}

    assert prune_all(Retention(store.db, days=30, max_tasks=0), NOW) == [5]

    assert ids(store) == {f"new-{s}" for s in ("done", "failed", "timed_out", "cancelled", "quarantined")} | \
        {"old-queued", "old-assigned", "old-running", "reopened"}
    # the reopened task keeps its earlier attempt and output: only finished tasks lose theirs
    assert counts(store) == {"tasks": 9, "attempts": 6, "output": 12}
    assert store.get_task("new-done")["attempts"][0]["state"] == "done"
    assert store.get_output("new-failed")["stdout"] == "out of new-failed"


def test_the_count_cap_keeps_the_newest_finished_tasks_and_ignores_active_ones(store):
    for i in range(10):
        add(store, f"f{i}", "done", NOW - (10 - i) * 3600)   # f9 finished last
    add(store, "q", "queued", NOW - 30 * DAY)
    add(store, "r", "running", NOW - 30 * DAY)
    store.commit()

    retention = Retention(store.db, days=0, max_tasks=3)
    assert retention.finished_count() == 10
    assert prune_all(retention, NOW) == [7]

    assert ids(store) == {"f7", "f8", "f9", "q", "r"}
    assert counts(store) == {"tasks": 5, "attempts": 3, "output": 6}
    assert prune_all(retention, NOW) == [0], "at the cap nothing more goes"


def test_age_and_count_together_take_whichever_deletes_more(store):
    for i in range(6):
        add(store, f"old{i}", "done", NOW - 50 * DAY + i)
    for i in range(6):
        add(store, f"new{i}", "done", NOW - DAY + i)
    store.commit()
    assert sum(prune_all(Retention(store.db, days=30, max_tasks=4), NOW)) == 8
    assert ids(store) == {"new2", "new3", "new4", "new5"}


def test_each_chunk_deletes_at_most_its_rows_oldest_first(store):
    for i in range(10):
        add(store, f"t{i}", "done", NOW - 100 * DAY + i * DAY)
    store.commit()
    retention = Retention(store.db, days=30, max_tasks=0, chunk=4)

    first = retention.prune_chunk(NOW)
    assert (first.tasks, first.more) == (4, True)
    assert ids(store) == {f"t{i}" for i in range(4, 10)}, "the oldest went first"
    assert retention.prune_chunk(NOW, rows=100).tasks == 4, "a chunk never exceeds `chunk`"
    last = retention.prune_chunk(NOW, rows=3)
    assert (last.tasks, last.more) == (2, False)
    assert counts(store) == {"tasks": 0, "attempts": 0, "output": 0}


def test_zero_and_zero_keep_everything_forever(store):
    add(store, "ancient", "done", 1000.0)
    store.commit()
    retention = Retention(store.db, days=0, max_tasks=0)
    assert not retention.enabled
    assert retention.prune_chunk(NOW).tasks == 0
    timer = RetentionTimer(retention, now_mono=0.0)
    assert timer.run(now_mono=1e9, now=NOW) == 0
    assert ids(store) == {"ancient"}


def test_the_timer_runs_chunks_back_to_back_only_while_a_backlog_lasts(store):
    for i in range(30):
        add(store, f"t{i}", "done", NOW - 100 * DAY + i)
    store.commit()
    timer = RetentionTimer(Retention(store.db, days=30, max_tasks=0, chunk=10), now_mono=0.0)
    assert timer.run(now_mono=0.5, now=NOW) == 0, "not before its first pass is due"
    mono, runs = 1.0, []
    for _ in range(5):
        runs.append((timer.run(mono, NOW), timer.next_at - mono))
        mono = timer.next_at
    assert [n for n, _ in runs] == [10, 10, 10, 0, 0] and not ids(store)
    assert all(0 < wait < 5 for _, wait in runs[:3]), "a full chunk: the next one comes soon"
    assert [wait for _, wait in runs[3:]] == [60.0, 60.0], "then it waits for the next pass"


# ------------------------------------------------------------------------------------------- indexes (m007)

def plan(store: TaskStore, sql: str, params: list) -> str:
    return " | ".join(r[3] for r in store.db.execute("EXPLAIN QUERY PLAN " + sql, params))


def test_the_ledger_has_the_indexes_its_queries_use_and_none_that_nothing_reads(store):
    names = {r[0] for r in store.db.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL")}
    assert {"idx_tasks_state", "idx_tasks_device_state", "idx_tasks_finished", "idx_tasks_group"} <= names
    assert not names & {"idx_attempts_device_id", "idx_tasks_state_priority", "idx_tasks_device_id"}
    partial = {r[0]: r[1] for r in store.db.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index'")}
    assert "WHERE device_id IS NOT NULL" in partial["idx_tasks_device_state"]
    assert "WHERE finished_at IS NOT NULL" in partial["idx_tasks_finished"]
    assert "WHERE group_id IS NOT NULL" in partial["idx_tasks_group"]

    cols = "id"
    by_state = plan(store, f"SELECT {cols} FROM tasks WHERE state = ? ORDER BY rowid DESC LIMIT 50", ["done"])
    assert "idx_tasks_state" in by_state and "TEMP B-TREE" not in by_state
    both = plan(store, f"SELECT {cols} FROM tasks WHERE state = ? AND device_id = ? ORDER BY rowid DESC LIMIT 50",
                ["done", "w1"])
    assert "idx_tasks_device_state" in both and "TEMP B-TREE" not in both
    recent = plan(store, "SELECT state, count(*) FROM tasks WHERE finished_at >= ? GROUP BY +state", [NOW])
    assert "COVERING INDEX idx_tasks_finished" in recent
    active = plan(store, "SELECT id FROM tasks WHERE state IN ('queued', 'assigned', 'running') ORDER BY rowid", [])
    assert "idx_tasks_state" in active
    from zmqgrid.store.retention import _OLDER_THAN
    oldest = plan(store, _OLDER_THAN, [NOW, 10])
    assert "INDEX idx_tasks_finished" in oldest and "TEMP B-TREE" not in oldest


def test_a_devices_tasks_are_merged_over_the_states_newest_first_with_offsets(store):
    states = ["done", "failed", "running", "done", "cancelled", "assigned", "done", "timed_out"]
    for i, state in enumerate(states * 3):
        add(store, f"t{i:02d}", state, NOW + i, device="w1" if i % 3 else "w2")
    store.commit()
    expected = [f"t{i:02d}" for i in reversed(range(24)) if i % 3]
    assert [t["id"] for t in store.list_tasks(device_id="w1", limit=100)] == expected
    assert [t["id"] for t in store.list_tasks(device_id="w1", limit=5, offset=3)] == expected[3:8]
    assert [t["id"] for t in store.list_tasks("done", "w1", limit=100)] == \
        [i for i in expected if store.get_task(i)["state"] == "done"]
    assert "rank_" not in store.list_tasks(device_id="w1", limit=1)[0]
    assert set(states) <= set(TASK_STATES)
    sql = " UNION ALL ".join(f"SELECT rowid AS rank_, id FROM tasks WHERE device_id = ? AND state = '{s}'"
                             for s in TASK_STATES) + " ORDER BY rank_ DESC LIMIT 50"
    merged = plan(store, sql, ["w1"] * len(TASK_STATES))
    assert "MERGE" in merged and "TEMP B-TREE" not in merged


def test_offline_devices_that_must_stay_never_hide_the_ones_behind_them(tmp_path):
    # Given a ledger with 5 long-offline devices each pinned by a queued task, and 5 behind them that hold nothing
    store = TaskStore(tmp_path / "ledger.db")
    try:
        for n in range(10):
            store.upsert_device({"device_id": f"d{n}", "name": f"d{n}", "hostname": "h", "os": "Linux",
                                 "python_version": "3", "python_executable": "python", "tags": [], "concurrency": 1,
                                 "pid": n, "version": "0"}, 1000.0 + n, 0, "offline")
        store.insert_tasks([(validate_task_spec({"kind": "shell", "command": "true", "device": f"d{n}"}), 0, None)
                            for n in range(5)], 2000.0)
        store.commit()
        # When the pruner asks for up to 3 of them
        found = offline_devices(store.db, before=5000.0, limit=3)
    finally:
        store.close()
    # Then it gets 3 of those that hold nothing, not an empty list because the first ones must stay
    assert len(found) == 3 and set(found) <= {"d5", "d6", "d7", "d8", "d9"}
