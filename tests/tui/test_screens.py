"""Screenshots of the main screens at 80 and 120 columns, from fixed cluster data and a frozen clock.

Each screen is kept as plain text in tests/tui/screens/NAME-WxH.txt (what the terminal shows, without colours),
so a change reads as a diff. After a deliberate change of the look, rewrite them with:

    ZMQGRID_UPDATE_SCREENS=1 python -m pytest tests/tui/test_screens.py
"""
from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from zmqgrid.tui import make_app
from zmqgrid.tui.widgets import DevicesTable, OutputLog, TasksTable

from .data import DETAIL, static_source
from .pilot import screen_text, until

pytestmark = pytest.mark.timeout(60)

SCREENS = Path(__file__).parent / "screens"
SIZES = [(80, 24), (120, 40)]


@pytest.fixture(autouse=True)
def utc(monkeypatch):
    """Times of day are shown in local time: pin the zone so the screens are the same everywhere."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


async def settled(pilot, source) -> None:
    """Every fixed snapshot has been shown (the last one repeats from then on, changing nothing)."""
    app = pilot.app
    await until(pilot, lambda: source.exhausted and app.snapshots_applied > len(source.snapshots),
                describe="every snapshot shown")
    await pilot.pause()


async def open_failed_task(pilot) -> None:
    tasks = pilot.app.screen.query_one(TasksTable)
    tasks.move_cursor(row=tasks.get_row_index(DETAIL["id"]))
    await pilot.press("enter")
    await until(pilot, lambda: pilot.app.screen.query(OutputLog)
                and getattr(pilot.app.screen, "complete", False), describe="the task's output in full")
    await pilot.pause()


async def capture(name: str, size: tuple[int, int]) -> str:
    source = static_source(then_unreachable=name == "unreachable")
    app = make_app(source, refresh_s=0.25)
    async with app.run_test(size=size) as pilot:
        await settled(pilot, source)
        if name == "task":
            await open_failed_task(pilot)
        elif name == "device":
            devices = app.screen.query_one(DevicesTable)
            devices.focus()
            devices.move_cursor(row=devices.get_row_index("old-box"))
            await pilot.press("i")
            await until(pilot, lambda: type(app.screen).__name__ == "DetailScreen", describe="the device's detail")
            await pilot.pause()
        elif name == "help":
            await pilot.press("question_mark")
            await until(pilot, lambda: type(app.screen).__name__ == "HelpScreen", describe="the help screen")
            await pilot.pause()
        return screen_text(app)


def check_screen(name: str, size: tuple[int, int]) -> str:
    shown = asyncio.run(capture(name, size))
    path = SCREENS / f"{name}-{size[0]}x{size[1]}.txt"
    if os.environ.get("ZMQGRID_UPDATE_SCREENS") == "1":
        path.parent.mkdir(exist_ok=True)
        path.write_text(shown + "\n", encoding="utf-8")
    expected = path.read_text(encoding="utf-8").rstrip("\n")
    assert shown == expected, f"{path.name} differs; the screen now shows:\n{shown}"
    return shown


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_the_main_screen_shows_header_devices_and_tasks(size):
    shown = check_screen("main", size)
    assert "incarnation 29462d22b07d" in shown or "inc 29462d22b07d" in shown
    assert "1 online  1 draining  1 offline  keys 2 pending" in shown
    assert "2 assigned  4 running" in shown
    assert "peak 12.0/s" in shown
    for text in ("crawler-01", "draining", "13m32s", "3/3 +2", "a1b2c3d4e5f60718", "python crawl.py --sit", "? Help",
                 "Schedules 2 · 1 paused", "nightly-report"):
        assert text in shown


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_the_unreachable_master_is_shown_in_the_header_and_the_last_data_stays(size):
    shown = check_screen("unreachable", size)
    assert "✖ master unreachable — retrying (down 0.0s): did not answer within 2s" in shown
    assert "crawler-01" in shown and "a1b2c3d4e5f60718" in shown


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_the_task_screen_shows_spec_attempts_error_and_output(size):
    shown = check_screen("task", size)
    assert "Task d4e5f60718293a4b · shell · failed on crawler-01 · attempt 4 of 4" in shown
    assert "error    ExitCode: exited with code 3 · exit 3" in shown
    assert "‼ error: too many redirects" in shown   # tailed to the end, stderr marked
    assert "Output of attempt 4 · 43 lines · tail on" in shown


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_the_device_detail_has_every_field_and_an_offline_device_says_its_metrics_are_not_live(size):
    shown = check_screen("device", size)
    assert "Device old-box" in shown and "13m32s ago" in shown
    assert "last metrics" in shown and "os            Linux 6.8 x86_64" in shown


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_the_help_screen_lists_keys(size):
    shown = check_screen("help", size)
    assert "zmqgrid dashboard — keys (esc closes)" in shown
