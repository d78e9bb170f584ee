"""The dashboard's small parts: formatting, the data seam, the layer rule, and the `dashboard` command."""
from __future__ import annotations

import pytest

from tests.helpers import free_port_block
from tests.test_layers import imports, within
from zmqgrid.cli import main
from zmqgrid.tui import ClientSource, TaskQuery
from zmqgrid.tui.format import RateHistory, duration, spark

from .data import static_source

pytestmark = pytest.mark.timeout(60)


def test_spark_scales_to_the_largest_value_and_pads_on_the_left():
    assert spark([0, 1, 2, 4, 8], 5) == "▁▂▃▅█"
    assert spark([5, 10], 4) == "  ▅█"
    assert spark([50], 3, top=100) == "  ▅"
    assert spark([], 3) == "   "
    assert spark([0, 0], 2) == "▁▁"


def test_rates_come_from_successive_done_counts_and_never_go_negative():
    rates = RateHistory()
    for done, at in ((100, 0.0), (110, 1.0), (110, 1.0), (130, 3.0), (5, 4.0)):
        rates.add(done, at)
    assert list(rates.rates) == [10.0, 10.0, 0.0]   # the same moment twice adds nothing; a smaller count is 0


def test_durations_are_short():
    assert [duration(s) for s in (None, 0.25, 42, 185, 7440, 266400)] == ["-", "0.2s", "42s", "3m05s", "2h04m",
                                                                          "3d02h"]


def test_the_static_source_pages_and_filters_as_the_master_does():
    source = static_source(count=1)
    assert [t["state"] for t in source.snapshot(TaskQuery(state="done")).tasks] == ["done", "done"]
    assert [t["id"] for t in source.snapshot(TaskQuery(device="crawler-02")).tasks] == ["c3d4e5f60718293a"]
    assert len(source.snapshot(TaskQuery(offset=3, limit=10)).tasks) == 2


def test_a_master_that_does_not_answer_gives_an_unreachable_snapshot():
    url = f"tcp://127.0.0.1:{free_port_block()}"
    snapshot = ClientSource(url, timeout_s=0.2, clock=lambda: 123.0).snapshot(TaskQuery())
    assert (snapshot.reachable, snapshot.at, snapshot.devices) == (False, 123.0, [])
    assert url in snapshot.error


def test_the_tui_sees_the_cluster_only_through_the_client():
    # zmqgrid.text (printable) is the bottom layer: it imports nothing of zmqgrid
    # zmqgrid.projects.sync is the client's side of a sync: it says in words what a worker holds of a version
    allowed = ("zmqgrid.tui", "zmqgrid.client", "zmqgrid.config", "zmqgrid.model", "zmqgrid.errors",
               "zmqgrid.protocol", "zmqgrid.text", "zmqgrid.projects.sync")
    found = sorted(f"{importer} -> {imported}" for importer, imported_set in imports().items()
                   if within(importer, "zmqgrid.tui")
                   for imported in imported_set if imported.startswith("zmqgrid") and not within(imported, *allowed))
    assert found == []
    assert any(within(name, "zmqgrid.tui") for name in imports())


def test_the_dashboard_without_a_terminal_says_so_in_one_line_and_exits_3(capsys):
    assert main(["dashboard", "--master", "tcp://127.0.0.1:9"]) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: the dashboard needs a terminal")
