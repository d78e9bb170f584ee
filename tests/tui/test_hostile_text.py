"""The dashboard shows a peer's control sequences and Rich markup as visible text (real master, driven by a Pilot).

A device row whose name, host, OS and tags hold ESC/OSC/CSI/CR/C1/bidi sequences and Rich markup is written into
the real master's ledger (the master refuses such texts in a Register at decode, so only an older master or
another program could have left one); a task is named and given output the same way. No cell, summary or output line of the dashboard
holds a raw control character, and markup is shown as the characters it is, not applied.
"""
from __future__ import annotations

import asyncio

import pytest

from tests.helpers import Harness, plant_device, wait_until
from zmqgrid.client import Client, build_spec
from zmqgrid.tui import ClientSource, make_app
from zmqgrid.tui.screens import DetailScreen
from zmqgrid.tui.widgets import DevicesTable, OutputLog, TasksTable

from .pilot import screen_text, until

pytestmark = pytest.mark.timeout(60)

SIZE = (160, 40)
MARKUP = "[link=https://example.invalid]click[/link][bold]b[/]"
HOSTILE = "\x1b]0;owned\x07\x1b[2J\x1b[31mred\rfake\x9b1m\u202eevil" + MARKUP
RAW_CONTROLS = ("\x1b", "\r", "\x07", "\x9b", "\u202e")


def raw_controls(text: str) -> list[str]:
    return sorted(repr(c) for c in RAW_CONTROLS if c in text)


def test_the_dashboard_shows_escape_sequences_and_markup_from_peers_as_visible_text(harness: Harness):
    # Given a hostile device, and a task with a hostile name, tags and output that ran on a real worker
    harness.start_master()
    plant_device(harness.db, "evil", name=MARKUP, hostname="h" + HOSTILE, os_name="o" + HOSTILE,
                 tags=["t" + HOSTILE])
    harness.start_worker("w1")
    with Client(harness.url, timeout_s=5, curve=harness.curve) as client:
        task_id = client.submit(build_spec(shell="printf 'out\\033[2J\\033]0;t\\007\\rX\\n'", name="job" + HOSTILE,
                                           tags=[], device="w1"))[0]
        wait_until(lambda: client.task(task_id)["state"] == "done", 20, "the task to finish")

    async def scenario() -> None:
        app = make_app(ClientSource(harness.url, timeout_s=1.0, curve=harness.curve), refresh_s=0.25)
        async with app.run_test(size=SIZE) as pilot:
            devices = app.screen.query_one(DevicesTable)
            tasks = app.screen.query_one(TasksTable)
            await until(pilot, lambda: "evil" in devices.cells and task_id in tasks.cells, describe="both rows")

            # Then every cell of both rows is free of raw control characters, and the markup is shown as text
            cells = {**{f"device {k}": v for k, v in devices.cells["evil"].items()},
                     **{f"task {k}": v for k, v in tasks.cells[task_id].items()}}
            dirty = {name: raw_controls(str(value)) for name, value in cells.items() if raw_controls(str(value))}
            assert not dirty, dirty
            assert str(devices.cells["evil"]["host"]).startswith("h\\x1b]0;owned\\x07")
            assert str(tasks.cells[task_id]["command"]).startswith("job\\x1b")
            shown = await until(pilot, lambda: "h\\x1b]0;owned" in (text := screen_text(app)) and text,
                                describe="the hostile device's row drawn")
            assert not raw_controls(shown)

            # The device's detail has every field (its name, with the markup, does not fit the table): escaped too
            devices.focus()
            devices.move_cursor(row=devices.get_row_index("evil"))
            await pilot.press("i")
            await until(pilot, lambda: isinstance(app.screen, DetailScreen), describe="the device's detail")
            shown = await until(pilot, lambda: "[link=https" in (text := screen_text(app)) and text,
                                describe="the markup in the name shown as text")
            assert not raw_controls(shown)
            assert "o\\x1b]0;owned" in shown   # its OS
            await pilot.press("escape")
            await until(pilot, lambda: not isinstance(app.screen, DetailScreen), describe="the detail closed")

            # And the task's screen: its summary and its output lines are escaped too
            tasks.focus()
            tasks.move_cursor(row=tasks.get_row_index(task_id))
            await pilot.press("enter")
            log = await until(pilot, lambda: app.screen.query(OutputLog) and app.screen.query_one(OutputLog),
                              describe="the task screen")
            await until(pilot, lambda: any(line.startswith("out") for line in log.lines), describe="its output")
            assert not raw_controls("\n".join(log.lines)), log.lines
            assert any(line.startswith("out\\x1b[2J") for line in log.lines), log.lines
            shown = screen_text(app)
            assert not raw_controls(shown)
            assert "job\\x1b" in shown
    asyncio.run(scenario())
