"""The dashboard against a real master and real workers (tests.helpers.Harness), driven through a Pilot."""
from __future__ import annotations

import asyncio

import pytest
import sqlite_utils

from tests.helpers import Harness, db_query, wait_until
from tests.scenes import w1_offline_across_a_master_restart, w1_running_one_holding_two
from zmqgrid.client import Client, build_spec
from zmqgrid.errors import ZmqgridError
from zmqgrid.store import key_store
from zmqgrid.tui import ClientSource, make_app
from zmqgrid.tui.screens import DetailScreen
from zmqgrid.tui.widgets import ClusterHeader, DevicesTable, OutputLog, ProjectsTable, SchedulesTable, TasksTable

from ..projects.test_push import project
from .pilot import screen_text, until, until_shown

pytestmark = pytest.mark.timeout(60)

SIZE = (120, 40)


def live_app(harness: Harness):
    return make_app(ClientSource(harness.url, timeout_s=1.0, curve=harness.curve), refresh_s=0.25)


def cell_text(table, row_key: str, column: str) -> str:
    return str(table.cells.get(row_key, {}).get(column, ""))


def test_devices_of_a_live_cluster_appear_online(cluster: Harness):
    async def scenario() -> None:
        app = live_app(cluster)
        async with app.run_test(size=SIZE) as pilot:
            devices = app.screen.query_one(DevicesTable)
            await until(pilot, lambda: {"w1", "w2"} <= set(devices.cells), describe="rows for w1 and w2")
            await until(pilot, lambda: all(cell_text(devices, d, "state") == "online" for d in ("w1", "w2")),
                        describe="w1 and w2 online")
            await until(pilot, lambda: all(text in screen_text(app) for text in ("2 online", "w1", "w2")),
                        describe="both devices on the screen")
            assert cell_text(devices, "w1", "run") == "0/2"   # in flight / concurrency
            await until(pilot, lambda: cell_text(devices, "w1", "cpu") != "-", describe="heartbeat metrics")
    asyncio.run(scenario())


def test_a_task_submitted_from_the_form_goes_from_queued_to_done_on_screen(cluster: Harness):
    async def scenario() -> None:
        app = live_app(cluster)
        async with app.run_test(size=SIZE) as pilot:
            tasks = app.screen.query_one(TasksTable)
            await until_shown(pilot, "2 online")
            # Given a task for a device that is not online yet (so it is seen queued)
            await pilot.press("n")
            await until(pilot, lambda: app.screen.query("#field-command"), describe="the submit form")
            app.screen.query_one("#field-command").value = "echo from-the-dashboard"
            app.screen.query_one("#field-device").value = "w3"
            await pilot.press("enter")
            task_id = await until(pilot, lambda: next(iter(tasks.cells), None), describe="the submitted task's row")
            await until(pilot, lambda: cell_text(tasks, task_id, "state") == "queued", describe="state queued")
            # When that device comes online
            await asyncio.to_thread(cluster.start_worker, "w3")
            # Then the row goes to done, and the task's output is shown in its detail
            await until(pilot, lambda: cell_text(tasks, task_id, "state") == "done", describe="state done")
            assert cell_text(tasks, task_id, "device") == "w3"
            assert cell_text(tasks, task_id, "exit") == "0"
            tasks.focus()
            tasks.move_cursor(row=tasks.get_row_index(task_id))
            await pilot.press("enter")
            log = await until(pilot, lambda: app.screen.query(OutputLog) and app.screen.query_one(OutputLog),
                              describe="the task screen")
            await until(pilot, lambda: "from-the-dashboard" in log.lines, describe="the task's output")
            shown = await until_shown(pilot, "result   exit 0")
            assert task_id in shown and "echo from-the-dashboard" in shown
    asyncio.run(scenario())


def test_cancel_from_the_dashboard_kills_the_running_task_on_its_worker(cluster: Harness):
    client = cluster.client()
    task_id = client.submit(build_spec(shell="echo started; sleep 60"))[0]
    wait_until(lambda: client.task(task_id)["state"] == "running", 20, "the task to run")

    async def scenario() -> None:
        app = live_app(cluster)
        async with app.run_test(size=SIZE) as pilot:
            tasks = app.screen.query_one(TasksTable)
            await until(pilot, lambda: task_id in tasks.cells, describe="the running task's row")
            tasks.focus()
            tasks.move_cursor(row=tasks.get_row_index(task_id))
            await pilot.press("k")
            await until_shown(pilot, f"Cancel task {task_id}?")
            await pilot.press("y")
            await until(pilot, lambda: cell_text(tasks, task_id, "state") == "cancelled", describe="state cancelled")
    asyncio.run(scenario())
    task = client.task(task_id)
    assert task["state"] == "cancelled"
    assert task["attempts"][-1]["state"] == "cancelled"


def test_a_killed_master_shows_unreachable_and_the_dashboard_recovers_when_it_is_back(cluster: Harness):
    async def scenario() -> None:
        app = live_app(cluster)
        async with app.run_test(size=SIZE) as pilot:
            await until_shown(pilot, "2 online")   # the main screen is up (on a slow machine it comes later)
            header = app.screen.query_one(ClusterHeader)
            devices = app.screen.query_one(DevicesTable)
            # When the master dies
            cluster.kill(cluster.master)
            shown = await until_shown(pilot, "master unreachable — retrying")
            assert header.has_class("unreachable")
            assert "w1" in shown   # the last known devices stay on screen
            # Then it comes back by itself once the master is restarted on the same ledger
            await asyncio.to_thread(cluster.start_master)
            await until(pilot, lambda: not header.has_class("unreachable"), describe="the header to recover")
            await until(pilot, lambda: all(cell_text(devices, d, "state") == "online" for d in ("w1", "w2")),
                        describe="the workers to register again")
            assert "unreachable" not in screen_text(app)
    asyncio.run(scenario())


def test_a_device_offline_across_a_master_restart_shows_when_it_was_last_seen_and_no_metrics(harness: Harness):
    # Given a worker whose heartbeats put its metrics in the ledger, killed with its master
    # When the master starts again (it has not heard from w1 since)
    w1_offline_across_a_master_restart(harness)

    async def scenario() -> None:
        app = live_app(harness)
        async with app.run_test(size=SIZE) as pilot:
            devices = app.screen.query_one(DevicesTable)
            await until(pilot, lambda: cell_text(devices, "w1", "state") == "offline", describe="w1 offline")
            # Then its row says when it was last seen, and shows no CPU, memory or disk figure
            assert cell_text(devices, "w1", "seen") not in ("never", "-", ""), devices.cells["w1"]
            assert [cell_text(devices, "w1", k) for k in ("cpu", "mem", "disk")] == ["-", "-", "-"]
    asyncio.run(scenario())


def test_tasks_waiting_on_a_worker_for_a_slot_are_counted_assigned_not_running(harness: Harness):
    # Given a worker with one slot, which takes two more tasks than it runs (prefetch 2)
    w1_running_one_holding_two(harness)

    async def scenario() -> None:
        app = live_app(harness)
        async with app.run_test(size=SIZE) as pilot:
            devices = app.screen.query_one(DevicesTable)
            # Then the header and the device count them apart
            await until_shown(pilot, "2 assigned  1 running")
            await until(pilot, lambda: cell_text(devices, "w1", "run") == "1/1 +2", describe="w1 1/1 +2")
    asyncio.run(scenario())


def test_a_schedule_of_a_live_master_is_listed_paused_and_resumed_from_the_dashboard(harness: Harness):
    harness.start_master()
    client = harness.client()
    client.schedule_add("nightly", "0 6 * * *", build_spec(shell="echo report"))

    async def scenario() -> None:
        app = live_app(harness)
        async with app.run_test(size=SIZE) as pilot:
            table = app.screen.query_one(SchedulesTable)
            await until(pilot, lambda: cell_text(table, "nightly", "state") == "active", describe="nightly listed")
            table.focus()
            for key, state in (("p", "paused"), ("u", "active")):
                await pilot.press(key)
                await until(pilot, lambda: app.screen.query("#yes"), describe="the confirmation")
                await pilot.press("y")
                await until(pilot, lambda: cell_text(table, "nightly", "state") == state, describe=f"state {state}")
                assert [s["state"] for s in client.schedules()] == [state]
    asyncio.run(scenario())


def test_the_header_counts_pending_keys_for_an_admin_key_and_not_for_a_client_key(secured_harness: Harness):
    h = secured_harness
    h.start_master()
    h.start_worker("w1")
    h.wait_online(h.client(), "w1")
    h.start_worker("stranger")   # a key nobody accepted: pending
    wait_until(lambda: db_query(h.db, "SELECT count(*) FROM keys WHERE state = 'pending'")[0][0] == 1, 20,
               "the stranger's key pending")
    client_key = h.client_curve("client")
    db = sqlite_utils.Database(h.db)
    key_store.change_state(db, client_key.public.decode(), key_store.find_key(db, client_key.public.decode()),
                           "accepted", "client", "client")
    db.close()
    wait_until(lambda: _answers_with(h, client_key), 20, "the client key accepted")

    async def scenario(curve, expected: str | None) -> None:
        app = make_app(ClientSource(h.url, timeout_s=1.0, curve=curve), refresh_s=0.25)
        async with app.run_test(size=SIZE) as pilot:
            shown = await until_shown(pilot, "1 online")
            if expected:
                await until_shown(pilot, expected)
            else:
                assert "pending" not in shown.splitlines()[1]
                assert "pending_keys" not in app.last_snapshot.status
    asyncio.run(scenario(h.curve, "keys 1 pending"))   # the harness's admin key
    asyncio.run(scenario(client_key, None))


def _answers_with(h: Harness, curve) -> bool:
    with Client(h.url, timeout_s=0.5, curve=curve) as c:
        try:
            c.status()
            return True
        except ZmqgridError:
            return False


def test_a_pushed_project_is_listed_with_its_versions_and_holders_and_a_task_names_its_pinned_version(
        harness: Harness, tmp_path):
    harness.start_master()
    client = harness.client()
    folder = project(tmp_path / "myspider", {"myspider/__init__.py": "", "data.txt": "one\n"})
    v1 = client.push_project(folder)["version"]
    project(folder, {"data.txt": "two\n"})
    v2 = client.push_project(folder)["version"]
    harness.start_worker("w1")
    task_id, = client.submit(build_spec(shell="cat data.txt", project="myspider"))
    assert client.wait([task_id], 30)[task_id]["state"] == "done"
    wait_until(lambda: client.projects("myspider")[0].get("workers"), 20, "w1's heartbeat naming its copy")

    async def scenario() -> None:
        app = live_app(harness)
        async with app.run_test(size=SIZE) as pilot:
            table = app.screen.query_one(ProjectsTable)
            await until(pilot, lambda: cell_text(table, "myspider", "version") == v2[:12], describe="myspider listed")
            assert cell_text(table, "myspider", "versions") == "2"
            table.focus()
            await pilot.press("enter")
            detail = await until(pilot, lambda: isinstance(app.screen, DetailScreen) and app.screen,
                                 describe="the project's versions")
            assert [label for label, _ in detail.fields] == [f"{v2[:12]} (latest)", "  w1", v1[:12]]
            assert detail.fields[1][1] == "cached, no requirements.txt"
            await pilot.press("escape")
            tasks = app.screen.query_one(TasksTable)
            await until(pilot, lambda: task_id in tasks.cells, describe="the task listed")
            tasks.focus()
            tasks.move_cursor(row=tasks.get_row_index(task_id))
            await pilot.press("enter")
            await until_shown(pilot, f"project  myspider@{v2}")
    asyncio.run(scenario())
