"""Operator control through real workers: drain, resume, shutdown, re-sent commands, live output, fan-out."""
from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from zmqgrid.client import build_spec
from zmqgrid.projects.messages import RUNS_PROJECTS_TAG
from zmqgrid.transport import zmtp_heartbeat_ms

from ..helpers import REPO, wait_until

pytestmark = pytest.mark.timeout(60)


def _states(client) -> dict:
    return {d["device_id"]: d["state"] for d in client.devices()}


def test_a_drained_device_finishes_its_task_takes_nothing_new_and_takes_work_again_after_resume(cluster):
    client = cluster.client()
    running = client.submit(build_spec(python="tests.tasks:sleep", args=[1.0], device="w1"), notify=True)[0]
    wait_until(lambda: client.task(running)["state"] == "running", 20, "the task to run on w1")

    assert client.control_devices("drain", ["w1"]) == {"w1": "draining"}
    assert _states(client)["w1"] == "draining"
    later = client.submit([build_spec(python="tests.tasks:add", args=[i, 1]) for i in range(10)], notify=True)
    results = client.wait(later, timeout_s=30)
    assert {r["device_id"] for r in results.values()} == {"w2"}, "nothing new went to the drained device"
    assert client.wait([running], 30)[running]["state"] == "done", "what it had, it finished"

    assert client.control_devices("resume", ["w1"]) == {"w1": "online"}
    pinned = client.run(build_spec(shell="echo back", device="w1"), timeout_s=30)
    assert pinned["state"] == "done" and pinned["device_id"] == "w1"
    assert client.control_devices("drain", ["nope"]) == {"nope": "not found"}


def test_shutdown_drains_the_device_and_its_worker_process_exits_by_itself(cluster):
    client = cluster.client()
    task_id = client.submit(build_spec(python="tests.tasks:sleep", args=[0.5], device="w2"), notify=True)[0]
    wait_until(lambda: client.task(task_id)["state"] == "running", 20, "the task to run on w2")
    assert client.control_devices("shutdown", ["w2"]) == {"w2": "shutting down"}
    assert cluster.workers["w2"].wait(20) == 0
    assert client.wait([task_id], 10)[task_id]["state"] == "done"
    wait_until(lambda: _states(client)["w2"] == "offline", 20, "w2 offline after it left")


def test_a_command_missed_while_the_worker_was_frozen_is_re_sent_and_applied(harness):
    # Given a master whose PUB drops a subscriber that stops answering ZMTP pings (three pings: 1.8 s here),
    # and a device timeout long enough that a short freeze does not make the device offline
    harness.env["ZMQGRID_DEVICE_TIMEOUT"] = "8"
    harness.start_master()
    frozen = harness.start_worker("w1")
    client = harness.client()
    harness.wait_online(client, "w1")

    # When a drain is published while the worker is frozen, so the PUB drops it
    frozen.send_signal(signal.SIGSTOP)
    try:
        # Its heartbeats stop; once they are later than the PUB's ZMTP timeout (and a little), it has dropped it too.
        dropped_after_s = 3 * zmtp_heartbeat_ms(0.2) / 1000 + 0.6
        wait_until(lambda: next(d for d in client.devices() if d["device_id"] == "w1")["seconds_since_heartbeat"]
                   > dropped_after_s, 10, "the frozen worker's heartbeats to stop")
        assert client.control_devices("drain", ["w1"]) == {"w1": "draining"}
    finally:
        frozen.send_signal(signal.SIGCONT)

    # Then the master notices the heartbeats do not list it, re-sends it over the ROUTER, and it is applied
    wait_until(lambda: "re-sending command" in (harness.dir / "master.log").read_text(), 20, "a re-send")
    wait_until(lambda: "action=drain" in (harness.dir / "w1.log").read_text(), 20, "the worker to apply the drain")
    wait_until(lambda: next(d for d in client.devices() if d["device_id"] == "w1")["pending_commands"] == 0, 20,
               "no command pending for w1")


def test_logs_follow_shows_lines_before_the_task_ends(cluster):
    client = cluster.client()
    task_id = client.submit(build_spec(python="tests.tasks:chatty", args=[6, 0.4]), notify=True)[0]
    seen = []
    for item in client.follow(task_id, poll_s=0.1, timeout_s=30):
        if item.stream != "attempt":
            seen.append((item.text, client.task(task_id)["state"]))
    assert seen[0][1] == "running", f"the first output arrived while it ran: {seen[:2]}"
    assert "".join(t for t, _ in seen).count("line ") == 6
    assert client.wait([task_id], 10)[task_id]["value"] == 6


def test_submit_all_runs_once_per_matching_worker_and_reports_each(harness):
    harness.start_master()
    harness.start_worker("a1", "--tag", "alpha")
    harness.start_worker("a2", "--tag", "alpha")
    harness.start_worker("b1", "--tag", "beta")
    client = harness.client()
    harness.wait_online(client, "a1", "a2", "b1")
    env = dict(harness.env)
    cli = [sys.executable, str(REPO / "main.py"), "submit", "--master", harness.url]

    everyone = subprocess.run(cli + ["--all", "--shell", "echo hi from $PPID", "--wait"], env=env,
                              capture_output=True, text=True, timeout=40)
    assert everyone.returncode == 0, everyone.stderr
    assert "3/3 workers succeeded" in everyone.stdout
    for device in ("a1", "a2", "b1"):
        assert device in everyone.stdout

    tagged = subprocess.run(cli + ["--all", "--tag", "alpha", "--shell", "exit 4", "--retries", "0", "--wait"],
                            env=env, capture_output=True, text=True, timeout=40)
    assert tagged.returncode == 1 and "0/2 workers succeeded" in tagged.stdout
    assert "b1" not in tagged.stdout

    nobody = subprocess.run(cli + ["--all", "--tag", "gamma", "--shell", "true"], env=env, capture_output=True,
                            text=True, timeout=40)
    assert nobody.returncode == 3 and nobody.stderr.startswith("error: no online worker matches --all --tag gamma")


def test_reload_makes_a_worker_re_read_its_config_file_and_register_again(harness):
    import json
    config = harness.dir / "worker.json"
    config.write_text(json.dumps({"concurrent_tasks": 1, "tags": ["old"]}))
    harness.start_master()
    harness.start_worker("w1", "--config", str(config), concurrency=1)
    client = harness.client()
    harness.wait_online(client, "w1")

    config.write_text(json.dumps({"concurrent_tasks": 3, "tags": ["fresh"]}))
    assert client.control_devices("reload", ["w1"]) == {"w1": "reloading"}

    def reloaded():   # the file's tags apply (with the one a worker that runs projects adds); its concurrency does not,
        # since the --concurrency flag wins
        row = next(d for d in client.devices() if d["device_id"] == "w1")
        return row["tags"] == ["fresh", RUNS_PROJECTS_TAG] and row["concurrency"] == 1
    wait_until(reloaded, 20, "w1 to register again with its new config")
    done = client.run(build_spec(shell="echo tagged", tags=["fresh"]), timeout_s=30)
    assert done["state"] == "done" and done["device_id"] == "w1"
