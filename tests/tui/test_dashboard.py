"""What the dashboard does with keys, fed fixed cluster data through StaticSource (the seam the live app uses)."""
from __future__ import annotations

import asyncio
import dataclasses

import pytest
from rich.console import Console

from tests.helpers import wait_until
from zmqgrid.tui import StaticSource, TaskOutput, make_app
from zmqgrid.tui.screens import DetailScreen, HelpScreen, TaskScreen
from zmqgrid.tui.screens.detail import device_fields
from zmqgrid.tui.widgets import ClusterHeader, DevicesTable, OutputLog, ProjectsTable, SchedulesTable, TasksTable

from . import data
from .data import DETAIL, NOW, SCHEDULES, TASKS, URL, snapshots, static_source, task
from .pilot import screen_text, until, until_shown

pytestmark = pytest.mark.timeout(60)

SIZE = (120, 40)


def run(scenario, source: StaticSource, refresh_s: float = 60.0, size: tuple[int, int] = SIZE) -> None:
    """Run `scenario(pilot, app)` on a dashboard over `source`. With the default interval only `r` refreshes."""
    async def main() -> None:
        app = make_app(source, refresh_s=refresh_s)
        async with app.run_test(size=size) as pilot:
            await until(pilot, lambda: app.snapshots_applied >= 1, describe="the first snapshot")
            await scenario(pilot, app)
    asyncio.run(main())


async def refresh(pilot, app) -> None:
    applied = app.snapshots_applied
    await pilot.press("r")
    await until(pilot, lambda: app.snapshots_applied > applied, describe="one more snapshot")


def states(app) -> dict[str, str]:
    table = app.screen.query_one(TasksTable)
    return {key: str(cells["state"]) for key, cells in table.cells.items()}


def test_pause_freezes_the_tables_but_not_the_header_sparkline():
    later = [dataclasses.replace(s, tasks=[dict(TASKS[0], state="done", exit_code=0), *TASKS[1:]])
             for s in snapshots(6)[1:]]
    source = StaticSource(snapshots(6)[:1] + later, master_url=URL, now=NOW)

    async def scenario(pilot, app):
        header = app.screen.query_one(ClusterHeader)
        await pilot.press("space")
        await until_shown(pilot, "PAUSED")
        for _ in range(5):
            await refresh(pilot, app)
        assert states(app)["a1b2c3d4e5f60718"] == "running"   # frozen
        assert len(header.rates.rates) == 5                     # still moving
        assert "space Resume" in screen_text(app)
        await pilot.press("space")
        await until(pilot, lambda: states(app)["a1b2c3d4e5f60718"] == "done", describe="the table to move again")
        assert "PAUSED" not in screen_text(app)
    run(scenario, source)


def test_plus_and_minus_change_the_refresh_interval():
    async def scenario(pilot, app):
        await pilot.press("plus")
        assert app.refresh_s == 2.0
        await pilot.press("minus", "minus")
        assert app.refresh_s == 0.5
        await until_shown(pilot, "refresh 0.5s")
    run(scenario, static_source(), refresh_s=1.0)


def test_number_keys_hide_and_show_the_panels():
    async def scenario(pilot, app):
        await pilot.press("1")
        assert not app.screen.query_one("#devices-panel").display
        await until(pilot, lambda: "Devices 3" not in screen_text(app), describe="the devices panel gone")
        await pilot.press("1", "2")
        assert app.screen.query_one("#devices-panel").display and not app.screen.query_one("#tasks-panel").display
    run(scenario, static_source())


def test_the_state_filter_asks_the_master_for_one_state_and_c_clears_it():
    async def scenario(pilot, app):
        while app.task_query.state != "failed":
            await pilot.press("s")
        await until(pilot, lambda: set(states(app).values()) == {"failed"}, describe="only failed tasks")
        await until_shown(pilot, "state failed")
        await pilot.press("c")
        await until(pilot, lambda: len(states(app)) == len(TASKS), describe="every task again")
    run(scenario, static_source())


def test_the_text_filter_narrows_the_focused_table():
    async def scenario(pilot, app):
        await pilot.press("slash", *"site")
        await until(pilot, lambda: set(states(app)) == {"a1b2c3d4e5f60718", "b2c3d4e5f6071829"},
                    describe="the two crawl tasks")
        await pilot.press("escape")
        devices = app.screen.query_one(DevicesTable)
        devices.focus()
        await pilot.press("slash", *"gpu", "enter")
        await until(pilot, lambda: set(devices.cells) == {"crawler-02"}, describe="the device tagged gpu")
        assert "filter 'gpu'" in screen_text(app)
    run(scenario, static_source())


def test_enter_on_a_device_shows_only_its_tasks():
    async def scenario(pilot, app):
        devices = app.screen.query_one(DevicesTable)
        devices.focus()
        devices.move_cursor(row=devices.get_row_index("crawler-02"))
        await pilot.press("enter")
        await until(pilot, lambda: set(states(app)) == {"c3d4e5f60718293a"}, describe="crawler-02's task")
        assert app.task_query.device == "crawler-02"
        assert app.focused is app.screen.query_one(TasksTable)
    run(scenario, static_source())


def test_sorting_devices_reorders_rows_and_keeps_the_cursor_on_its_device():
    async def scenario(pilot, app):
        devices = app.screen.query_one(DevicesTable)
        devices.focus()
        devices.move_cursor(row=devices.get_row_index("old-box"))
        assert [r.key.value for r in devices.ordered_rows] == ["crawler-01", "crawler-02", "old-box"]
        await pilot.press("o")   # by state: offline first
        assert [r.key.value for r in devices.ordered_rows] == ["old-box", "crawler-02", "crawler-01"]
        assert devices.selected_key == "old-box"
        await pilot.press("O")
        assert [r.key.value for r in devices.ordered_rows] == ["crawler-01", "crawler-02", "old-box"]
        await until_shown(pilot, "sort state (reversed)")
    run(scenario, static_source())


def test_the_cursor_stays_on_its_task_when_new_tasks_arrive_above_it_and_enter_opens_that_task():
    def newer(n: int) -> dict:
        return task(f"ffff00001111222{n}", "queued", f"echo newest {n}", device_id=None, attempt=0, started=None)
    first = snapshots(4)
    source = StaticSource([first[0], dataclasses.replace(first[1], tasks=[newer(1), *TASKS]),
                           dataclasses.replace(first[2], tasks=[newer(2), newer(1), *TASKS]),
                           dataclasses.replace(first[3], tasks=[newer(3), newer(2), newer(1), *TASKS])],
                          master_url=URL, now=NOW)

    async def scenario(pilot, app):
        table = app.screen.query_one(TasksTable)
        table.move_cursor(row=table.get_row_index("d4e5f60718293a4b"))
        await refresh(pilot, app)
        assert [r.key.value for r in table.ordered_rows][:2] == ["ffff000011112221", "a1b2c3d4e5f60718"]
        assert table.selected_key == "d4e5f60718293a4b"   # moved down with its task
        # Given the cursor on the top row, the newest task
        await pilot.press("home")
        assert table.selected_key == "ffff000011112221"
        # When newer tasks arrive above it
        await refresh(pilot, app)
        await refresh(pilot, app)
        # Then it is still on that task, and enter opens that one
        assert (table.cursor_row, table.selected_key) == (2, "ffff000011112221")
        await pilot.press("enter")
        opened = await until(pilot, lambda: isinstance(app.screen, TaskScreen) and app.screen, describe="a task")
        assert opened.task_id == "ffff000011112221"
    run(scenario, source)


def test_the_cursor_stays_on_its_device_when_a_sort_by_cpu_reorders_the_rows():
    later = snapshots(2)[1]
    busier = [dict(d, metrics=dict(d["metrics"], cpu_percent=99.0)) if d["device_id"] == "crawler-02" else d
              for d in later.devices]
    source = StaticSource([snapshots(1)[0], dataclasses.replace(later, devices=busier)], master_url=URL, now=NOW)

    async def scenario(pilot, app):
        devices = app.screen.query_one(DevicesTable)
        devices.focus()
        while devices.sort_index != 2:   # by cpu, highest first
            await pilot.press("o")
        assert [r.key.value for r in devices.ordered_rows][:2] == ["crawler-01", "crawler-02"]
        assert devices.selected_key == "crawler-01"   # the top row
        await refresh(pilot, app)
        assert [r.key.value for r in devices.ordered_rows][:2] == ["crawler-02", "crawler-01"]
        assert devices.selected_key == "crawler-01"
    run(scenario, source)


def test_pages_of_tasks_are_asked_for_by_offset():
    many = [task(f"{n:016x}", "done", f"echo {n}") for n in range(250)]
    source = StaticSource([dataclasses.replace(s, tasks=many) for s in snapshots(1)], master_url=URL, now=NOW)

    async def scenario(pilot, app):
        await until_shown(pilot, "page 1 (rows 1-100)")
        await pilot.press("right_square_bracket")
        await until_shown(pilot, "page 2 (rows 101-200)")
        await pilot.press("right_square_bracket")
        await until_shown(pilot, "page 3 (rows 201-250)")
        await pilot.press("right_square_bracket")
        assert app.task_query.offset == 200   # the last page: no further
        await pilot.press("left_square_bracket")
        await until_shown(pilot, "page 2 (rows 101-200)")
        assert next(iter(app.screen.query_one(TasksTable).cells)) == f"{100:016x}"
    run(scenario, source)


def test_actions_ask_first_and_send_only_what_was_confirmed():
    source = static_source()

    async def scenario(pilot, app):
        tasks = app.screen.query_one(TasksTable)
        tasks.move_cursor(row=tasks.get_row_index("d4e5f60718293a4b"))
        await pilot.press("k")
        await until_shown(pilot, "Cancel task d4e5f60718293a4b?")
        await pilot.press("n")
        await pilot.press("R")
        await until_shown(pilot, "Queue task d4e5f60718293a4b again?")
        await pilot.press("y")
        devices = app.screen.query_one(DevicesTable)
        devices.focus()
        for key, action in (("d", "drain"), ("u", "resume"), ("x", "shutdown")):
            await pilot.press(key)
            await until_shown(pilot, f"{action.capitalize()} device crawler-01?")
            await pilot.press("y")
        await until(pilot, lambda: len(source.actions) == 4, describe="four actions sent")
        assert source.actions == [("requeue", ("d4e5f60718293a4b",)), ("drain", ("crawler-01",)),
                                  ("resume", ("crawler-01",)), ("shutdown", ("crawler-01",))]
    run(scenario, source)


def test_the_submit_form_sends_a_shell_task_and_refuses_a_bad_field():
    source = static_source()

    async def scenario(pilot, app):
        await pilot.press("n")
        await until(pilot, lambda: app.screen.query("#field-command"), describe="the form")
        for field, value in (("command", "python crawl.py"), ("tags", "linux, gpu"), ("timeout", "soon")):
            app.screen.query_one(f"#field-{field}").value = value
        await pilot.press("enter")
        await until_shown(pilot, "timeout must be a number, got 'soon'")
        app.screen.query_one("#field-timeout").value = "30"
        await pilot.press("enter")
        await until(pilot, lambda: source.actions, describe="the submission")
        (what, (spec,)), = source.actions
        assert what == "submit"
        assert (spec["kind"], spec["command"], spec["tags"], spec["timeout"]) == \
            ("shell", "python crawl.py", ["linux", "gpu"], 30.0)
    run(scenario, source)


def test_the_help_screen_lists_every_binding():
    async def scenario(pilot, app):
        await pilot.press("question_mark")
        help_screen = await until(pilot, lambda: isinstance(app.screen, HelpScreen) and app.screen,
                                  describe="the help screen")
        console = Console(width=200, record=True, color_system=None)
        console.print(help_screen.render_help())
        text = console.export_text()
        for _, bindings in app.help_sections():
            for binding in bindings:
                assert binding.description in text, binding
        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(app.screen, HelpScreen), describe="the help screen to close")
    run(scenario, static_source())


def test_the_output_of_a_running_task_is_followed_and_found_in():
    running = dict(DETAIL, state="running", error=None)
    source = static_source()
    source.details[DETAIL["id"]] = running
    source.outputs[DETAIL["id"]] = TaskOutput(DETAIL["id"], 4, "running", stdout="page 1\npage 2\npar")

    async def scenario(pilot, app):
        tasks = app.screen.query_one(TasksTable)
        tasks.move_cursor(row=tasks.get_row_index(DETAIL["id"]))
        await pilot.press("enter")
        log = await until(pilot, lambda: app.screen.query(OutputLog) and app.screen.query_one(OutputLog),
                          describe="the task screen")
        await until(pilot, lambda: list(log.lines) == ["page 1", "page 2"], describe="the complete lines")
        source.outputs[DETAIL["id"]] = TaskOutput(DETAIL["id"], 4, "running", stdout="page 1\npage 2\npartial\n",
                                                  stderr="oops\n")
        await until(pilot, lambda: list(log.lines)[2:] == ["partial", "‼ oops"], describe="the new output")
        await pilot.press("slash", *"page")
        await until_shown(pilot, "'page' 1/2")
        await pilot.press("escape", "N")
        await until_shown(pilot, "'page' 2/2")
        assert not log.tail
        await pilot.press("t")
        await until_shown(pilot, "tail on")
        # A retry starts a new attempt: the pane starts over with it.
        source.outputs[DETAIL["id"]] = TaskOutput(DETAIL["id"], 5, "done", stdout="again\n")
        source.details[DETAIL["id"]] = dict(DETAIL, state="done", error=None, exit_code=0)
        await until(pilot, lambda: app.screen.complete, describe="the task to end")
        assert list(log.lines) == ["── attempt 5 ──", "again"]
        await until_shown(pilot, "Output of attempt 5")
        await pilot.press("escape")
        await until(pilot, lambda: app.screen.query(TasksTable), describe="back on the main screen")
    run(scenario, source)


class ClosingSource(StaticSource):
    """Answers its second snapshot only once closing has taken the header off the main screen."""

    app = None

    def snapshot(self, query):
        if self.served >= 1:
            screen = self.app.main
            wait_until(lambda: not screen.query(ClusterHeader), 10, "closing to take the header off", interval_s=0.001)
        return super().snapshot(query)


def test_a_snapshot_that_lands_while_the_dashboard_closes_is_dropped():
    # CI once failed this way in test_live: a refresh answered while run_test tore the screen down found no header.
    source = ClosingSource(snapshots(2), master_url=URL, now=NOW)

    async def main() -> None:
        app = source.app = make_app(source, refresh_s=60.0)
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: app.snapshots_applied >= 1, describe="the first snapshot")
            await pilot.press("r")
            await until(pilot, lambda: source.served >= 1 and app.fetching, describe="the second refresh asked")
        # the late answer came (in its thread, which run_test does not wait for), and closing did not fail on it
        wait_until(lambda: source.served == 2, 10, "the late answer")
    asyncio.run(main())


# --- issue 26, items 17-22 ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("size", [(80, 24), (120, 40)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_the_devices_table_shows_only_whole_columns_and_the_others_in_the_devices_detail(size):
    async def scenario(pilot, app):
        devices = app.screen.query_one(DevicesTable)
        await until(pilot, lambda: devices.size.width > 0 and devices.cells, describe="the devices table laid out")
        shown = screen_text(app)
        # Every column shown is whole (the table needs no sideways scrolling), and the first ones are the readable ones
        assert devices.max_scroll_x == 0, (devices.virtual_size, devices.size)
        assert {"device", "state", "seen", "run", "cpu", "mem"} <= set(devices.shown_columns)
        labels = dict(DevicesTable.COLUMNS)
        header = next(line for line in shown.splitlines() if line.strip().startswith("DEVICE"))
        assert header.split() == [labels[k] for k in devices.shown_columns]
        left_out = [k for k, _ in DevicesTable.COLUMNS if k not in devices.shown_columns]
        assert "os" in left_out   # OS does not fit whole at 80 or 120 columns, beside the live figures
        # The device's detail has every field, those left out too
        devices.focus()
        devices.move_cursor(row=devices.get_row_index("crawler-02"))
        await pilot.press("i")
        detail = await until(pilot, lambda: isinstance(app.screen, DetailScreen) and app.screen,
                             describe="the device's detail")
        text = "\n".join(f"{label} {value}" for label, value in detail.fields)
        for line in ("os Linux 6.8 x86_64", "python 3.11.7", "name crawler-02", "host host-crawler-02",
                     "tags linux, gpu", "executable /usr/bin/python3", "state draining"):
            assert line in text, text
        await until_shown(pilot, "Device crawler-02")
        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(app.screen, DetailScreen), describe="the detail to close")
    run(scenario, static_source(), size=size)


def test_an_offline_device_shows_when_it_was_last_seen_and_no_live_metrics():
    async def scenario(pilot, app):
        devices = app.screen.query_one(DevicesTable)
        row = {k: str(v) for k, v in devices.cells["old-box"].items()}
        # old-box: offline, no seconds_since_heartbeat, last_seen_at 812 s before the snapshot, last CPU figure 100
        assert row["seen"] == "13m32s"
        assert (row["cpu"], row["mem"], row["disk"]) == ("-", "-", "-")
        assert row["cpu_spark"].strip() == "" and row["run"] == "0/3"
        devices.focus()
        devices.move_cursor(row=devices.get_row_index("old-box"))
        await pilot.press("i")
        detail = await until(pilot, lambda: isinstance(app.screen, DetailScreen) and app.screen, describe="detail")
        fields = dict(detail.fields)
        assert fields["last seen"].startswith("13m32s ago (at ")
        assert fields["last metrics"].startswith("cpu 100% · memory 97%") and "not live" in fields["last metrics"]
    run(scenario, static_source(count=1))


def test_the_header_and_the_devices_table_count_running_and_assigned_tasks_apart():
    async def scenario(pilot, app):
        shown = await until_shown(pilot, "2 assigned  4 running")
        assert "6 running" not in shown
        devices = app.screen.query_one(DevicesTable)
        # crawler-01 runs 3 tasks in its 3 slots and holds 2 more that wait for a slot
        assert str(devices.cells["crawler-01"]["run"]) == "3/3 +2"
        assert str(devices.cells["crawler-02"]["run"]) == "1/3"
    run(scenario, static_source())


def test_enter_in_the_find_box_gives_the_keys_back_to_the_output_so_n_and_N_step_through_matches():
    async def scenario(pilot, app):
        tasks = app.screen.query_one(TasksTable)
        tasks.move_cursor(row=tasks.get_row_index(DETAIL["id"]))
        await pilot.press("enter")
        log = await until(pilot, lambda: app.screen.query(OutputLog) and app.screen.query_one(OutputLog),
                          describe="the task screen")
        await until(pilot, lambda: app.screen.complete, describe="the whole output")
        await pilot.press("slash", *"fetching page 1", "enter")
        box = app.screen.query_one("#find")
        await until(pilot, lambda: app.focused is log, describe="the output focused again")
        assert not box.has_class("visible")
        await until_shown(pilot, "'fetching page 1' 1/11")   # page 1 and pages 10-19
        await pilot.press("n")
        await until_shown(pilot, "'fetching page 1' 2/11")
        await pilot.press("N", "N")
        await until_shown(pilot, "'fetching page 1' 11/11")
        assert box.value == "fetching page 1"   # n and N were not typed into the box
        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(app.screen, TaskScreen), describe="back on the main screen")
    run(scenario, static_source())


def test_the_schedules_panel_lists_schedules_and_pauses_and_resumes_one_after_asking():
    source = static_source()

    async def scenario(pilot, app):
        shown = await until_shown(pilot, "Schedules 2 · 1 paused")
        assert "nightly-report" in shown and "0 6 * * 1-5" in shown
        table = app.screen.query_one(SchedulesTable)
        assert str(table.cells["ping"]["state"]) == "paused"
        table.focus()
        table.move_cursor(row=table.get_row_index("nightly-report"))
        await pilot.press("p")
        await until_shown(pilot, "Pause schedule nightly-report?")
        await pilot.press("n")   # no: nothing sent
        await pilot.press("p")
        await until_shown(pilot, "Pause schedule nightly-report?")
        await pilot.press("y")
        await until(pilot, lambda: source.actions, describe="the pause sent")
        table.move_cursor(row=table.get_row_index("ping"))
        await pilot.press("u")
        await until_shown(pilot, "Resume schedule ping?")
        await pilot.press("y")
        await until(pilot, lambda: len(source.actions) == 2, describe="the resume sent")
        assert source.actions == [("schedule pause", ("nightly-report",)), ("schedule resume", ("ping",))]
        await pilot.press("enter")
        detail = await until(pilot, lambda: isinstance(app.screen, DetailScreen) and app.screen, describe="detail")
        fields = dict(detail.fields)
        assert fields["cron"].startswith("*/5 * * * *") and fields["runs"] == "curl -s https://example.com"
        await pilot.press("escape")
        await pilot.press("3")   # the panel hides
        await until(pilot, lambda: "Schedules 2" not in screen_text(app), describe="the schedules panel hidden")
    run(scenario, source)


def test_a_master_without_schedules_costs_the_panel_one_line():
    source = StaticSource([dataclasses.replace(s, schedules=[]) for s in snapshots(1)], master_url=URL, now=NOW)

    async def scenario(pilot, app):
        await until_shown(pilot, "Schedules: none (add one with: python main.py schedules add)")
        assert not app.screen.query_one(SchedulesTable).display
    run(scenario, source)


def test_the_projects_panel_lists_projects_and_shows_a_projects_versions():
    async def scenario(pilot, app):
        shown = await until_shown(pilot, "Projects 1")
        assert "myspider" in shown and "3f9a1c2b7d0e" in shown and "3.4 MiB" in shown
        table = app.screen.query_one(ProjectsTable)
        table.focus()
        await pilot.press("enter")
        detail = await until(pilot, lambda: isinstance(app.screen, DetailScreen) and app.screen, describe="versions")
        assert detail.title_text == "Project myspider"
        assert [label for label, _ in detail.fields] == ["3f9a1c2b7d0e (latest)", "0a1b2c3d4e5f"]
        assert dict(detail.fields)["0a1b2c3d4e5f"].startswith("40 files · 793.0 KiB · pushed ")
        await pilot.press("escape")
        await pilot.press("4")   # the panel hides
        await until(pilot, lambda: "Projects 1" not in screen_text(app), describe="the projects panel hidden")
    run(scenario, static_source())


def test_a_master_without_projects_costs_the_panel_one_line():
    source = StaticSource([dataclasses.replace(s, projects=[]) for s in snapshots(1)], master_url=URL, now=NOW)

    async def scenario(pilot, app):
        await until_shown(pilot, "Projects: none (push one with: python main.py projects push ./folder)")
        assert not app.screen.query_one(ProjectsTable).display
    run(scenario, source)


def test_the_header_shows_the_pending_keys_the_master_tells_an_admin_and_nothing_otherwise():
    told = snapshots(1)[0]
    untold = dataclasses.replace(told, status={k: v for k, v in told.status.items() if k != "pending_keys"})

    async def scenario(pilot, app):
        await until_shown(pilot, "1 offline  keys 2 pending")
        await refresh(pilot, app)
        await until(pilot, lambda: "keys" not in screen_text(app).splitlines()[1], describe="no keys count")
    run(scenario, StaticSource([told, untold], master_url=URL, now=NOW))
    assert SCHEDULES   # the fixed data the panel tests read


def test_a_devices_detail_says_how_many_tasks_it_holds_beyond_its_slots_and_whether_it_sizes_that_itself():
    adaptive = data.device("w1")
    adaptive["metrics"].update(prefetch=14, prefetch_adaptive=True)
    fixed = data.device("w2")
    fixed["metrics"].update(prefetch=2, prefetch_adaptive=False)
    gone = data.device("w3", state="offline")
    gone["metrics"].update(prefetch=5, prefetch_adaptive=True)
    assert dict(device_fields(adaptive, data.NOW))["prefetch"] == \
        "14 tasks held beyond its slots now, sized by the worker (adaptive)"
    assert dict(device_fields(fixed, data.NOW))["prefetch"] == "2 tasks held beyond its slots now, fixed by its config"
    assert "prefetch" not in dict(device_fields(gone, data.NOW))   # not live
