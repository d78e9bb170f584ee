"""Answers too large for one message are sent in parts, never dropped (issue 24, item 9): a bulk cancel of more
tasks than a reply holds, a watch of finished tasks whose values together pass the client's message limit, and
the Finished notices of such tasks. Real master, real worker, real clients."""
from __future__ import annotations

import pytest

from zmqgrid import protocol as p
from zmqgrid.client import Client, build_spec

from ..helpers import wait_until

pytestmark = pytest.mark.timeout(120)

SMALL_CLIENT = 64 * 1024
BIG_VALUE = 3 * 1024 * 1024   # within a result's bound (4 MiB), six of them past a client's 16 MiB


def test_a_bulk_cancel_of_more_tasks_than_a_reply_holds_cancels_and_reports_them_all(harness):
    # Given 3,000 queued tasks for a tag no worker has, and a client that accepts at most 64 KiB a message
    harness.start_master()
    ids = harness.client().submit([build_spec(shell="true", tag="nobody") for _ in range(3000)])
    with Client(harness.url, timeout_s=15, max_message_bytes=SMALL_CLIENT, curve=harness.curve) as small:
        # When it cancels them all by their state
        outcome = small.cancel(state="queued")
    # Then every one is cancelled and reported, though no single reply could hold them all
    assert outcome == {task_id: "cancelled" for task_id in ids}
    counts = {t["state"] for t in harness.client().tasks(state="cancelled", limit=5000)}
    assert counts == {"cancelled"}


def test_a_watch_of_finished_tasks_whose_values_pass_the_message_limit_gets_them_all(harness):
    # Given six finished tasks whose values take 3 MiB each (18 MiB together, past a client's 16 MiB)
    assert BIG_VALUE < p.MAX_VALUE_BYTES
    harness.start_master()
    harness.start_worker("w1")
    client = harness.client(timeout_s=30)
    ids = client.submit([build_spec(python="tests.tasks:text", args=[BIG_VALUE]) for _ in range(6)])
    wait_until(lambda: {client.task(i)["state"] for i in ids} == {"done"}, 60, "the six tasks done")
    # When another client waits for them (a watch answered from the ledger)
    with Client(harness.url, timeout_s=30, curve=harness.curve) as waiter:
        results = waiter.wait(ids, timeout_s=60)
    # Then it gets every one with its whole value
    assert sorted(results) == sorted(ids)
    assert {len(r["value"]) for r in results.values()} == {BIG_VALUE}


def test_finished_notices_of_tasks_with_big_values_all_reach_the_submitter(harness):
    # Given a client that submitted six tasks with notify, whose values take 3 MiB each, on a worker that runs
    # them side by side (so several end in one turn of the master)
    harness.start_master()
    client = harness.client(timeout_s=30)
    ids = client.submit([build_spec(python="tests.tasks:text", args=[BIG_VALUE]) for _ in range(6)], notify=True)
    harness.start_worker("w1", concurrency=6)
    # When it waits for them on the notices alone (no watch asked again while they are quiet)
    results = client.wait(ids, timeout_s=90, rewatch_s=600)
    # Then every notice arrived whole, also when several ended in one turn (a Finished past 8 MiB is sent in parts)
    assert {len(r["value"]) for r in results.values()} == {BIG_VALUE} and len(results) == 6
