"""Alerts delivered by a real master to a real receiver (docs/architecture.md, Alerts): what matches, in order,
retried, never held back by another rule, and none lost through a master SIGKILL."""
from __future__ import annotations

import signal
import threading

import pytest

from zmqgrid.client import build_spec

from ..helpers import db_query, wait_until

pytestmark = pytest.mark.timeout(120)


def failing(name: str, *tags: str) -> dict:
    return build_spec(shell="echo boom >&2; exit 3", name=name, retries=0, tag=list(tags) or None)


def rule(client, name: str, receiver, path: str, on: str = "failed", **kw) -> dict:
    return client.alert_add(name, on, webhook=receiver.url(path), **kw)


def test_a_failed_task_matching_a_rule_is_delivered_once_with_its_body_and_others_are_not(alert_harness, receiver):
    # Given a master, a worker tagged crawler, and a rule on failed tasks tagged crawler
    h = alert_harness
    h.start_master()
    h.start_worker("w1", "--tag", "crawler")
    client = h.client()
    h.wait_online(client, "w1")
    row = rule(client, "crawl-failed", receiver, "/hook?token=SECRET", on="failed,timed_out,quarantined",
               tags="crawler")
    assert row["target"] == f"http://127.0.0.1:{receiver.server.server_port}/…", row   # never the token

    # When a task without the tag fails, one with it succeeds, and then one with it fails
    other = client.submit(failing("plain"))[0]
    assert client.wait([other], 30)[other]["state"] == "failed"
    ok = client.submit(build_spec(shell="true", tag=["crawler"], name="fine"))[0]
    assert client.wait([ok], 30)[ok]["state"] == "done"
    bad = client.submit(failing("crawl-site-7", "crawler"))[0]
    assert client.wait([bad], 30)[bad]["state"] == "failed"

    # Then exactly the matching failure is delivered (events of a rule go in order: an earlier one would come first)
    wait_until(lambda: receiver.bodies("/hook?token=SECRET"), 20, "the delivery")
    [body] = receiver.bodies("/hook?token=SECRET")
    assert body["rule"] == "crawl-failed" and body["event"] == "failed" and body["kind"] == "task"
    assert body["task"]["id"] == bad and body["task"]["name"] == "crawl-site-7"
    assert body["task"]["device_id"] == "w1" and body["task"]["exit_code"] == 3
    assert body["text"].startswith(f"zmqgrid: task {bad} (crawl-site-7) failed on w1")
    assert db_query(h.db, "SELECT count(*) FROM alert_events")[0][0] == 1
    assert receiver.headers["/hook?token=SECRET"]["Content-Type"].startswith("application/json")
    # (marked delivered once the receiver's answer is in)
    [listed] = wait_until(lambda: [r for r in client.alerts() if r["delivered"]], 10, "the delivery recorded")
    assert (listed["delivered"], listed["failed"], listed["pending"]) == (1, 0, 0), listed
    assert "SECRET" not in (h.dir / "master.log").read_text()


def test_events_of_a_rule_arrive_in_the_order_the_tasks_failed(alert_cluster, receiver):
    h, client = alert_cluster
    rule(client, "ordered", receiver, "/o")
    ids = []
    for i in range(6):
        ids.append(client.submit(failing(f"t{i}"))[0])
        client.wait([ids[-1]], 30)
    wait_until(lambda: len(receiver.bodies("/o")) == 6, 30, "six deliveries")
    got = receiver.bodies("/o")
    assert [b["task"]["id"] for b in got] == ids
    assert [b["seq"] for b in got] == sorted(b["seq"] for b in got)


def test_a_receiver_answering_500_then_200_gets_it_after_retries_and_the_failures_are_listed(alert_cluster, receiver):
    h, client = alert_cluster
    receiver.script["/flaky"] = [500, 500, 200]
    rule(client, "flaky", receiver, "/flaky")
    task = client.submit(failing("once"))[0]
    client.wait([task], 30)
    wait_until(lambda: receiver.bodies("/flaky"), 30, "the delivery after retries")
    assert receiver.tries["/flaky"] == 3 and len(receiver.bodies("/flaky")) == 1
    [listed] = wait_until(lambda: [r for r in client.alerts() if r["delivered"]], 10, "the delivery recorded")
    assert (listed["delivered"], listed["failed"], listed["pending"]) == (1, 2, 0), listed
    assert "HTTP 500" in listed["last_error"] and "server says no" in listed["last_error"], listed


def test_a_hanging_endpoint_for_one_rule_does_not_hold_back_another(alert_cluster, receiver):
    h, client = alert_cluster
    receiver.hanging["/stuck"] = release = threading.Event()
    rule(client, "a-stuck", receiver, "/stuck")
    rule(client, "b-fine", receiver, "/fine")
    task = client.submit(failing("x"))[0]
    client.wait([task], 30)
    # B is delivered while A's request is still hanging on the receiver
    wait_until(lambda: receiver.bodies("/fine"), 20, "rule B's delivery")
    # A's request may reach the receiver just after B's: it then hangs there, undelivered
    wait_until(lambda: receiver.in_flight.get("/stuck") == 1, 20, "rule A's request hanging on the receiver")
    assert not receiver.bodies("/stuck")
    release.set()
    wait_until(lambda: receiver.bodies("/stuck"), 20, "rule A's delivery once released")


def test_events_committed_before_a_master_sigkill_are_all_delivered_in_order_after_the_restart(alert_harness,
                                                                                                receiver):
    # Given two rules whose receivers refuse everything for now, and eight failed tasks
    h = alert_harness
    h.start_master()
    h.start_worker("w1", concurrency=4)
    client = h.client()
    h.wait_online(client, "w1")
    receiver.script["/a"] = [500]
    receiver.script["/b"] = [503]
    rule(client, "a", receiver, "/a")
    rule(client, "b", receiver, "/b")
    ids = client.submit([failing(f"k{i}") for i in range(8)])
    client.wait(ids, 60)
    wait_until(lambda: receiver.tries.get("/a", 0) >= 2 and receiver.tries.get("/b", 0) >= 2, 20,
               "failed attempts on both rules")

    # When the master is SIGKILLed with the events undelivered, restarted on its ledger, and the receivers recover
    h.kill(h.master, signal.SIGKILL)
    assert not receiver.bodies("/a") and not receiver.bodies("/b")
    h.start_master()
    receiver.script["/a"] = [200]
    receiver.script["/b"] = [200]

    # Then every failure reaches each rule (at least once), none lost, in the order the tasks failed
    finished_at = dict(db_query(h.db, "SELECT id, finished_at FROM tasks WHERE state = 'failed'"))
    assert sorted(finished_at) == sorted(ids)
    for path in ("/a", "/b"):
        wait_until(lambda: {b["task"]["id"] for b in receiver.bodies(path)} == set(ids), 30, f"all of {path}")
        got = receiver.bodies(path)
        first_seen = list(dict.fromkeys(b["seq"] for b in got))
        assert first_seen == sorted(first_seen), (path, first_seen)
        assert len({b["seq"] for b in got}) == 8
    def recorded() -> dict | None:
        rows = {r["name"]: r for r in client.alerts() if r["delivered"] == 8}
        return rows if len(rows) == 2 else None
    rows = wait_until(recorded, 10, "all eight recorded delivered on both rules")
    assert rows["a"]["failed"] >= 2 and rows["a"]["dropped"] == 0
    # seq order is the order of the failures (tasks that failed in one turn share its time)
    for path in ("/a", "/b"):
        times = [finished_at[b["task"]["id"]] for b in sorted(receiver.bodies(path), key=lambda b: b["seq"])]
        assert times == sorted(times), path


def test_a_device_that_goes_offline_is_an_event(alert_harness, receiver):
    h = alert_harness
    h.start_master()
    h.start_worker("w1")
    h.start_worker("w2")
    client = h.client()
    h.wait_online(client, "w1", "w2")
    rule(client, "gone", receiver, "/dev", on="offline", pattern="w2")
    h.kill(h.workers["w2"], signal.SIGKILL)
    wait_until(lambda: receiver.bodies("/dev"), 20, "the offline event")
    [body] = receiver.bodies("/dev")
    assert body["event"] == "offline" and body["kind"] == "device" and body["device"]["id"] == "w2"
    assert "no heartbeat" in body["device"]["reason"]


def test_a_timed_out_task_matches_by_name_glob(alert_cluster, receiver):
    h, client = alert_cluster
    rule(client, "slow", receiver, "/slow", on="timed_out", pattern="nightly-*")
    other = client.submit(build_spec(shell="sleep 30", name="adhoc", timeout=0.5, retries=0))[0]
    assert client.wait([other], 30)[other]["state"] == "timed_out"
    late = client.submit(build_spec(shell="sleep 30", name="nightly-report", timeout=0.5, retries=0))[0]
    assert client.wait([late], 30)[late]["state"] == "timed_out"
    wait_until(lambda: receiver.bodies("/slow"), 20, "the delivery")
    assert [(b["event"], b["task"]["id"]) for b in receiver.bodies("/slow")] == [("timed_out", late)]


def test_a_quarantined_task_is_an_event(alert_harness, receiver):
    # Given a rule on quarantined tasks and a worker that this test restarts when it dies
    h = alert_harness
    h.start_master()
    h.start_worker("p1")
    client = h.client()
    h.wait_online(client, "p1")
    rule(client, "poison", receiver, "/q", on="quarantined")

    # When a task kills every worker that runs it, three times
    poison = client.submit(build_spec(python="tests.tasks:kill_worker_after", args=[0.3], retries=10))[0]

    def supervise() -> bool:
        if h.workers["p1"].poll() is not None:
            h.start_worker("p1")
        return bool(receiver.bodies("/q"))
    wait_until(supervise, 90, "the quarantined event")

    # Then the quarantine is delivered, with why
    [body] = receiver.bodies("/q")
    assert body["event"] == "quarantined" and body["task"]["id"] == poison
    assert "quarantined" in body["text"] and "its worker died 3 times" in body["task"]["reason"]
