"""Helpers for driving the dashboard in tests: the screen as plain text, and polling with a deadline."""
from __future__ import annotations

import io
import time
from typing import Any, Callable

from rich.console import Console
from textual.app import App
from textual.pilot import Pilot


def screen_text(app: App) -> str:
    """What the terminal shows now, as plain text lines (what export_screenshot draws, without the SVG)."""
    width, height = app.size
    console = Console(width=width, height=height, file=io.StringIO(), record=True, color_system=None,
                      legacy_windows=False, safe_box=False)
    console.print(app.screen._compositor.render_update(full=True, screen_stack=app._background_screens))
    return "\n".join(line.rstrip() for line in console.export_text(styles=False).splitlines())


async def until(pilot: Pilot, predicate: Callable[[], Any], timeout_s: float = 20.0,
                describe: str = "condition") -> Any:
    """Let the app run until predicate() is truthy; fail with what the screen shows (never a bare sleep)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        await pilot.pause(0.05)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {describe}; the screen shows:\n"
                         f"{screen_text(pilot.app)}")


async def until_shown(pilot: Pilot, text: str, timeout_s: float = 20.0) -> str:
    """Wait until `text` is on the screen; returns the screen."""
    return await until(pilot, lambda: text in (shown := screen_text(pilot.app)) and shown, timeout_s,
                       f"{text!r} on the screen")
