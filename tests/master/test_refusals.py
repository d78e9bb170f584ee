"""RefusalLog: one budget of log lines for what all peers get wrong, and a counted summary of the rest."""
from __future__ import annotations

import logging

import pytest

from zmqgrid.master.refusals import MAX_COUNTED_PEERS, RefusalLog

from ..helpers import wait_until

pytestmark = pytest.mark.timeout(30)


def test_the_budget_is_for_the_whole_master_not_per_peer_and_the_rest_is_counted(caplog):
    log = RefusalLog(burst=3, window_s=0.2)
    with caplog.at_level(logging.INFO, logger="zmqgrid.master.refusals"):
        # Given 20,000 peers each refused once within one window
        for n in range(20_000):
            log.write(f"key-{n}", logging.WARNING, "refused %s", n)
        # Then 3 lines were written, and once the window passed one summary counts the rest
        assert len(caplog.records) == 3
        wait_until(lambda: log.tick() or len(caplog.records) == 4, 10, "the summary")
    summary = caplog.records[-1].getMessage()
    assert summary.startswith(f"refused 19997 more messages from {MAX_COUNTED_PEERS}+ keys in the last "), summary


def test_a_quiet_window_writes_no_summary_and_a_new_window_has_a_new_budget(caplog):
    log = RefusalLog(senders="connections", burst=2, window_s=0.2)
    with caplog.at_level(logging.INFO, logger="zmqgrid.master.refusals"):
        for _ in range(2):
            log.write("peer", logging.WARNING, "bad")
        wait_until(lambda: log.tick() or log.lines == 0, 10, "the next window")
        assert [r.getMessage() for r in caplog.records] == ["bad", "bad"]   # nothing counted: no summary
        for _ in range(5):
            log.write("peer", logging.WARNING, "bad again")
        wait_until(lambda: log.tick() or len(caplog.records) == 5, 10, "the summary")
    assert caplog.records[-1].getMessage().startswith("refused 3 more messages from 1 connections")
