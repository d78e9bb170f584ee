"""The browser dashboard in a real headless Chromium (tools/browser_check.py): a standalone cluster with a task done,
seen through the page with a read token, until its devices and the task are on the screen; a screenshot is saved."""
from __future__ import annotations

import os

import pytest

from tools.browser_check import check_standalone, find_chromium

from ..helpers import free_port_block

pytestmark = pytest.mark.timeout(150)


@pytest.fixture
def chromium() -> str:
    found = find_chromium()
    if found is None:
        reason = "chromium is not installed (apt-get install chromium; .ci/run installs it)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return found


def test_chromium_shows_the_devices_and_a_done_task_of_a_standalone_cluster(tmp_path, chromium):
    shot = tmp_path / "dashboard.png"

    ports = free_port_block(4)   # the master's three, then the gateway's (two calls may overlap: their modulus differs)
    outcome = check_standalone(tmp_path, shot, chromium, port=ports, http_port=ports + 3)

    assert outcome.seen, f"not on the screen: {outcome.missing}; last text: {outcome.screen[-2000:]!r}"
    assert "local-1" in outcome.screen and "read-only" in outcome.screen
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
