"""What `/metrics` counts from the master's memory (finished tasks by state, done durations by task name, the oldest
queued task), parsed with prometheus-client's parser; the tag filter of GET tasks; a device's recent samples."""
from __future__ import annotations

import signal

import pytest

from zmqgrid.master.tallies import DURATION_BUCKETS, DURATION_NAMES

from ..helpers import Harness, wait_until
from .test_metrics import scrape
from .web import Gateway

pytestmark = pytest.mark.timeout(120)

API = "/api/distribution"
FINISHED = "zmqgrid_tasks_finished_total"


def _submit(served, *specs: dict) -> list[str]:
    answer = served.call("POST", f"{API}/tasks", "client", body=list(specs))
    assert answer.status == 201, answer.text
    return answer.json["ids"]


def _ended(served, ids: list[str]) -> bool:
    return all(served.call("GET", f"{API}/tasks/{i}", "read").json["state"] in ("done", "failed") for i in ids)


def test_finished_tasks_are_a_counter_by_state_that_only_grows_between_scrapes(served):
    before = scrape(served.gateway, served.tokens["read"])[FINISHED]
    ids = _submit(served, {"shell": "true"}, {"shell": "true"}, {"shell": "exit 3", "retries": 0})
    wait_until(lambda: _ended(served, ids), 30, "the three tasks to end")
    after = wait_until(lambda: (m := scrape(served.gateway, served.tokens["read"])[FINISHED])
                       [(("state", "failed"),)] >= before[(("state", "failed"),)] + 1 and m, 10, "a fresh scrape")
    assert after[(("state", "done"),)] >= before[(("state", "done"),)] + 2
    assert set(after) == {(("state", s),) for s in ("done", "failed", "timed_out", "cancelled", "quarantined")}
    assert all(after[k] >= before.get(k, 0) for k in after)


def test_done_durations_are_a_histogram_by_task_name_with_the_documented_buckets(served):
    ids = _submit(served, {"shell": "sleep 0.3", "name": "nap"}, {"shell": "sleep 0.3", "name": "nap"})
    wait_until(lambda: _ended(served, ids), 30, "the naps to end")
    m = wait_until(lambda: (got := scrape(served.gateway, served.tokens["read"]))
                   .get("zmqgrid_task_duration_seconds_count", {}).get((("name", "nap"),)) == 2 and got, 10,
                   "both naps in the histogram")
    buckets = {dict(k)["le"]: v for k, v in m["zmqgrid_task_duration_seconds_bucket"].items()
               if dict(k)["name"] == "nap"}
    assert sorted(float(le) for le in buckets) == sorted([*DURATION_BUCKETS, float("inf")])
    assert buckets["0.1"] == 0 and buckets["5.0"] == 2 and buckets["+Inf"] == 2   # each slept 0.3 s and ran < 5 s
    assert 0.6 <= m["zmqgrid_task_duration_seconds_sum"][(("name", "nap"),)] < 10


def test_past_the_first_names_every_new_name_counts_under_other(served):
    names = [f"job-{n:03d}" for n in range(DURATION_NAMES + 5)]
    ids = _submit(served, *({"shell": "true", "name": name} for name in names))
    wait_until(lambda: _ended(served, ids[-1:]) and _ended(served, ids), 60, "every named task to end")
    counts = wait_until(lambda: (got := scrape(served.gateway, served.tokens["read"])
                                 .get("zmqgrid_task_duration_seconds_count", {}))
                        and sum(got.values()) >= len(names) and got, 10, "every one counted")
    labels = {dict(k)["name"] for k in counts}
    assert "other" in labels and len(labels) == DURATION_NAMES + 1   # the first names, and "other"
    assert counts[(("name", "other"),)] >= 5


def test_the_age_of_the_oldest_queued_task_grows_until_it_leaves_the_queue(served):
    read = served.tokens["read"]
    task_id, = _submit(served, {"shell": "true", "tag": ["no-worker-has-this"]})
    try:
        first = wait_until(lambda: (m := scrape(served.gateway, read))["zmqgrid_queue_depth"][()] >= 1 and m, 10,
                           "the task queued")
        assert first["zmqgrid_tasks"][(("state", "queued"),)] >= 1
        age = first["zmqgrid_oldest_queued_task_age_seconds"][()]
        wait_until(lambda: scrape(served.gateway, read)["zmqgrid_oldest_queued_task_age_seconds"][()] >= age + 1,
                   10, "an older age at a later scrape")
    finally:
        assert served.call("POST", f"{API}/tasks/{task_id}/cancel", "admin").status == 200
    wait_until(lambda: scrape(served.gateway, read)["zmqgrid_oldest_queued_task_age_seconds"][()] == 0, 10,
               "no age once nothing is queued")


def test_tasks_are_listed_by_tag_and_a_bad_tag_is_a_400(served):
    crawl, plain = _submit(served, {"shell": "true", "tag": ["crawler"]}, {"shell": "true"})   # w1 has no tag
    try:
        listed = served.call("GET", f"{API}/tasks?tag=crawler", "read")
        assert listed.status == 200, listed.text
        assert [t["id"] for t in listed.json["tasks"]] == [crawl]
        assert [t["id"] for t in served.call("GET", f"{API}/tasks?tag=crawler&state=queued", "read")
                .json["tasks"]] == [crawl]
        assert served.call("GET", f"{API}/tasks?tag=crawler&state=done", "read").json["tasks"] == []
        assert served.call("GET", f"{API}/tasks?tag=crawl", "read").json["tasks"] == []   # a whole tag, not a part
    finally:
        served.call("POST", f"{API}/tasks/{crawl}/cancel", "admin")
    for bad in ("x" * 65, "a%0Ab", ""):
        answer = served.call("GET", f"{API}/tasks?tag={bad}", "read")
        assert answer.status == 400 and "tag" in answer.json["error"], answer.text


def test_device_stats_carry_its_recent_heartbeat_samples_bounded(served):
    def history(query: str = "") -> list:
        answer = served.call("GET", f"{API}/devices/w1/stats{query}", "read")
        assert answer.status == 200, answer.text
        return answer.json["history"]
    rows = wait_until(lambda: len(got := history()) >= 2 and got, 20, "two heartbeat samples of w1")
    assert set(rows[0]) == {"at", "cpu_percent", "memory_percent", "disk_percent", "load_1m", "running"}
    assert [r["at"] for r in rows] == sorted(r["at"] for r in rows)   # oldest first
    assert all(0 <= r["memory_percent"] <= 100 for r in rows)
    assert len(history("?samples=1")) == 1 and history("?samples=0") == []
    assert served.call("GET", f"{API}/devices/w1/stats?samples=601", "read").status == 400


def test_finished_counts_start_again_at_zero_with_a_new_master(tmp_path):
    h = Harness(tmp_path)
    gateway = None
    try:
        h.start_master()
        h.start_worker("w1")
        h.wait_online(h.client(), "w1")
        gateway = Gateway(h, tmp_path / "no-tokens.json", "--master-timeout", "1")
        gateway.call("POST", f"{API}/tasks", body={"shell": "true"})
        wait_until(lambda: scrape(gateway)[FINISHED][(("state", "done"),)] == 1, 30, "one done task counted")
        old = scrape(gateway)["zmqgrid_master_info"]
        h.kill(h.master, signal.SIGKILL)
        h.start_master()
        m = wait_until(lambda: (got := scrape(gateway)).get("zmqgrid_master_info", old) != old and got, 30,
                       "the new master's incarnation")
        assert m[FINISHED][(("state", "done"),)] == 0   # a counter reset, as rate() and increase() expect
    finally:
        if gateway is not None:
            gateway.stop()
        h.stop()


def test_unfinished_tasks_by_state_agree_with_the_ledger_count_of_status(served):
    ids = _submit(served, *({"shell": "sleep 3"} for _ in range(6)))   # w1 runs 4 at once
    try:
        def both() -> tuple[dict, dict] | None:
            gauge = scrape(served.gateway, served.tokens["read"])["zmqgrid_tasks"]
            counted = served.call("GET", f"{API}/system/overview", "read").json["tasks"]
            shown = {dict(k)["state"]: v for k, v in gauge.items()}
            return (shown, counted) if shown.get("running", 0) >= 1 else None
        wait_until(lambda: (got := both()) and all(got[0][s] == got[1][s] for s in ("queued", "assigned", "running")),
                   20, "the gauge and status to agree while tasks run")
    finally:
        for task_id in ids:
            served.call("POST", f"{API}/tasks/{task_id}/cancel", "admin")
