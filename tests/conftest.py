"""Fixtures: every one builds real parts (processes, sockets, SQLite files) and stops what it started."""
from __future__ import annotations

from pathlib import Path

import pytest

from .helpers import Harness


@pytest.fixture
def harness(tmp_path: Path):
    h = Harness(tmp_path)
    yield h
    h.stop()


@pytest.fixture
def cluster(harness: Harness):
    """A running master and two workers (w1, w2), both online."""
    harness.start_master()
    harness.start_worker("w1")
    harness.start_worker("w2")
    client = harness.client()
    harness.wait_online(client, "w1", "w2")
    return harness
