"""The JSON API over real HTTP against a real master and worker: what a curl user does."""
from __future__ import annotations

import asyncio

import aiohttp
import pytest

from ..helpers import wait_until

pytestmark = pytest.mark.timeout(120)

API = "/api/distribution"


def submitted(served, spec, role="client") -> list[str]:
    answer = served.call("POST", f"{API}/tasks", role, body=spec)
    assert answer.status == 201, answer.text
    return answer.json["ids"]


def final(served, task_id: str) -> dict:
    return wait_until(lambda: (t := served.call("GET", f"{API}/tasks/{task_id}", "read").json)["state"]
                      in ("done", "failed", "timed_out", "cancelled", "quarantined") and t, 30, f"task {task_id} to end")


def test_healthz_answers_without_a_token_and_readyz_gives_the_status_body(served):
    assert served.call("GET", "/healthz", None).json == {"state": "up"}
    ready = served.call("GET", "/readyz", None)
    assert ready.status == 200 and ready.json["state"] == "healthy" and ready.json["devices"]["online"] == 1


def test_the_overview_is_the_status_that_distribute_status_prints(served):
    overview = served.call("GET", f"{API}/system/overview", "read").json
    assert overview["state"] == "healthy" and overview["problems"] == []
    assert overview["master"] == served.harness.url and set(overview["tasks"]) >= {"queued", "done"}


def test_a_submitted_task_runs_and_is_listed_shown_and_its_logs_read_by_a_prefix(served):
    (task_id,) = submitted(served, {"shell": "echo from-http; echo oops >&2", "name": "http-one"})
    task = final(served, task_id[:16])
    assert task["id"] == task_id and task["state"] == "done"
    rows = served.call("GET", f"{API}/tasks?state=done&limit=1000", "read").json["tasks"]
    assert task_id in {r["id"] for r in rows}
    logs = served.call("GET", f"{API}/tasks/{task_id[:16]}/logs", "read").json
    assert (logs["id"], logs["stdout"], logs["stderr"], logs["state"]) == (task_id, "from-http\n", "oops\n", "done")


def test_a_list_of_specs_is_submitted_whole_and_answered_with_every_id(served):
    ids = submitted(served, [{"shell": f"echo {n}", "tag": []} for n in range(3)])
    assert len(set(ids)) == 3
    assert [final(served, i)["state"] for i in ids] == ["done"] * 3


def test_follow_streams_the_output_as_server_sent_events_until_the_task_ends(served):
    (task_id,) = submitted(served, {"shell": "for i in 1 2 3; do echo line$i; sleep 0.2; done; echo bye >&2"})
    events = served.gateway.events(f"{API}/tasks/{task_id[:16]}/logs?follow=1", served.tokens["read"])
    kinds = [e for e, _ in events]
    assert kinds[0] == "attempt" and events[0][1] == {"attempt": 1, "device_id": "w1"}
    assert kinds[-1] == "end" and events[-1][1] == {"state": "done"}
    assert "".join(d["text"] for e, d in events if e == "stdout") == "line1\nline2\nline3\n"
    assert "".join(d["text"] for e, d in events if e == "stderr") == "bye\n"


def test_cancel_then_requeue_a_task_and_a_second_cancel_is_a_conflict(served):
    (task_id,) = submitted(served, {"shell": "sleep 30", "retries": 0})
    wait_until(lambda: served.call("GET", f"{API}/tasks/{task_id}", "read").json["state"] == "running", 20, "running")
    cancel = served.call("POST", f"{API}/tasks/{task_id[:16]}/cancel", "admin")
    assert cancel.status == 200 and cancel.json == {"id": task_id, "outcome": "cancelling"}
    assert final(served, task_id)["state"] == "cancelled"
    again = served.call("POST", f"{API}/tasks/{task_id}/cancel", "admin")
    assert again.status == 409 and again.json["error"] == f"task {task_id} is already cancelled"
    requeue = served.call("POST", f"{API}/tasks/{task_id}/requeue", "admin")
    assert requeue.status == 200 and requeue.json == {"id": task_id, "outcome": "queued"}
    served.call("POST", f"{API}/tasks/{task_id}/cancel", "admin")
    final(served, task_id)


def test_devices_are_listed_shown_by_prefix_and_have_stats(served):
    (task_id,) = submitted(served, {"shell": "echo stats", "name": "stats-probe"})
    final(served, task_id)
    rows = served.call("GET", f"{API}/devices", "read").json["devices"]
    assert [r["device_id"] for r in rows] == ["w1"]
    assert served.call("GET", f"{API}/devices/w", "read").json["device_id"] == "w1"
    stats = served.call("GET", f"{API}/devices/w1/stats?window_s=600", "read").json
    assert stats["device_id"] == "w1" and stats["state"] == "online" and stats["concurrency"] == 4
    assert stats["done"] >= 1 and stats["mean_s"] is not None and stats["p95_s"] >= 0 and stats["sampled"] is False
    by_name = served.call("GET", f"{API}/tasks/stats", "read").json
    assert by_name["by_name"]["stats-probe"]["done"] == 1 and by_name["by_state"]["done"] >= 1


def test_drain_and_resume_a_device_over_http(served):
    drained = served.call("PUT", f"{API}/devices/w1/status", "admin", body={"action": "drain"})
    assert drained.status == 200 and drained.json == {"device_id": "w1", "outcome": "draining"}
    assert served.call("GET", f"{API}/devices/w1", "read").json["state"] == "draining"
    resumed = served.call("PUT", f"{API}/devices/w1/status", "admin", body={"action": "resume"})
    assert resumed.json == {"device_id": "w1", "outcome": "online"}


def test_projects_are_listed(served):
    assert served.call("GET", f"{API}/projects", "read").json == {"projects": []}


def test_a_project_is_synced_to_the_workers_shown_with_what_each_holds_and_removed(served, tmp_path):
    folder = tmp_path / "webspider"
    folder.mkdir()
    (folder / "data.txt").write_text("hello\n")
    version = served.harness.client().push_project(folder)["version"]
    sync = f"{API}/projects/webspider/sync"
    assert served.call("POST", sync, "client", body={}).status == 403
    assert served.call("POST", sync, "admin", body={"tags": "linux"}).status == 400
    assert served.call("POST", f"{API}/projects/nothing/sync", "admin", body={}).status == 404

    # When an admin starts a sync, it answers at once with the workers it went to
    started = served.call("POST", sync, "admin", body={"version": version[:8]})
    assert started.status == 202 and started.json["workers"] == ["w1"] and started.json["version"] == version

    # Then the project's page shows w1 holding the version, ready
    def held() -> list:
        versions = served.call("GET", f"{API}/projects/webspider", "read").json["versions"]
        return [(w["device_id"], w["copy"], w["env"]) for w in versions[0].get("workers", [])]
    assert wait_until(lambda: held() == [("w1", "cached", "none")] and held(), 30, "w1 holding the version")
    assert served.call("GET", f"{API}/projects/nothing", "read").status == 404
    assert served.call("DELETE", f"{API}/projects/webspider", "client").status == 403
    removed = served.call("DELETE", f"{API}/projects/webspider?version={version[:8]}", "admin")
    assert removed.status == 200 and removed.json["removed"] == [version]
    assert served.call("GET", f"{API}/projects", "read").json == {"projects": []}


def test_a_reader_that_leaves_a_followed_stream_costs_no_error_and_the_gateway_goes_on(served):
    (task_id,) = submitted(served, {"shell": "while true; do echo tick; sleep 0.1; done", "retries": 0})

    async def read_one_event_and_leave() -> str:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{served.gateway.base}{API}/tasks/{task_id}/logs?follow=1",
                                   headers={"Authorization": f"Bearer {served.tokens['read']}"}) as response:
                return (await response.content.readline()).decode()
    assert asyncio.run(read_one_event_and_leave()) == "event: attempt\n"
    served.call("POST", f"{API}/tasks/{task_id}/cancel", "admin")
    assert final(served, task_id)["state"] == "cancelled"
    assert served.call("GET", "/healthz", None).status == 200
    log = served.gateway.log.read_text()
    assert " ERROR " not in log, log[-2000:]


def test_a_schedule_is_added_paused_resumed_and_removed_over_http(served):
    added = served.call("POST", f"{API}/schedules", "admin",
                        body={"name": "nightly", "cron": "0 3 * * *", "task": {"shell": "echo nightly"}})
    assert added.status == 201 and added.json["name"] == "nightly" and added.json["state"] == "active", added.text
    listed = served.call("GET", f"{API}/schedules", "read").json["schedules"]
    assert [s["name"] for s in listed] == ["nightly"]
    paused = served.call("PUT", f"{API}/schedules/nightly/status", "admin", body={"action": "pause"})
    assert paused.status == 200 and paused.json["state"] == "paused"
    assert served.call("PUT", f"{API}/schedules/nightly/status", "admin", body={"action": "resume"}).json["state"] \
        == "active"
    assert served.call("DELETE", f"{API}/schedules/nightly", "admin").status == 200
    assert served.call("GET", f"{API}/schedules", "read").json == {"schedules": []}
    gone = served.call("DELETE", f"{API}/schedules/nightly", "admin")
    assert gone.status == 404 and set(gone.json) == {"error", "hint"}
    bad = served.call("POST", f"{API}/schedules", "admin", body={"name": "x", "cron": "not cron", "task": {"shell": "true"}})
    assert bad.status == 400 and "cron" in bad.json["error"], bad.text
    assert served.call("POST", f"{API}/schedules", "client",
                       body={"name": "y", "cron": "0 3 * * *", "task": {"shell": "true"}}).status == 403
