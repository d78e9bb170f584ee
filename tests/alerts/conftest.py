"""Fixtures of the alert tests: a master whose delivery retries fast, and a real webhook receiver on 127.0.0.1."""
from __future__ import annotations

from pathlib import Path

import pytest

from ..helpers import Harness
from .receiver import Receiver

# Retries a few tenths of a second apart, so a test of "500 then 200" or of a restart takes no longer than needed.
FAST_ALERTS = {"ZMQGRID_ALERT_RETRY": "0.1", "ZMQGRID_ALERT_RETRY_MAX": "0.4", "ZMQGRID_ALERT_TIMEOUT": "30"}


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def alert_harness(tmp_path: Path):
    h = Harness(tmp_path, env=FAST_ALERTS)
    yield h
    h.stop()


@pytest.fixture
def alert_cluster(alert_harness: Harness):
    """A master and one worker, w1, online: (harness, client)."""
    h = alert_harness
    h.start_master()
    h.start_worker("w1")
    client = h.client()
    h.wait_online(client, "w1")
    return h, client
