"""`distribute --status`: exit 0 healthy, 1 degraded, 2 unreachable, 3 bad config; `--json` for scripts."""
from __future__ import annotations

import json
import subprocess

import pytest

from zmqgrid.model import DEVICE_STATES, TASK_STATES

from ..helpers import Harness, free_port_block, run_cli

pytestmark = pytest.mark.timeout(60)


def status(harness: Harness, *extra: str) -> subprocess.CompletedProcess:
    return run_cli("distribute", "--status", "--port", str(harness.port), *extra, cwd=harness.dir)


def status_json(harness: Harness) -> tuple[int, dict]:
    result = status(harness, "--json")
    assert "Traceback" not in result.stderr, result.stderr
    report = json.loads(result.stdout)
    return result.returncode, report


def assert_counts(report: dict) -> None:
    assert set(report["tasks"]) >= set(TASK_STATES) and all(isinstance(n, int) for n in report["tasks"].values())
    assert set(report["devices"]) >= set(DEVICE_STATES) and all(isinstance(n, int) for n in report["devices"].values())


def test_with_no_master_status_exits_2_quickly(tmp_path):
    # Given nothing listening on the port
    port = free_port_block()

    # When the status is asked for (run_cli's timeout guards against a hang; the status timeout is 0.8 s)
    result = run_cli("distribute", "--status", "--port", str(port), cwd=tmp_path, timeout_s=30)

    # Then it reports unreachable with exit 2, without a traceback
    assert result.returncode == 2, result.stderr
    assert "UNREACHABLE" in result.stdout and "Traceback" not in result.stderr
    as_json = json.loads(run_cli("distribute", "--status", "--json", "--port", str(port), cwd=tmp_path).stdout)
    assert as_json["state"] == "unreachable" and as_json["master"] == f"tcp://127.0.0.1:{port}"


def test_with_a_master_but_no_worker_status_exits_1_degraded(harness):
    harness.start_master()
    code, report = status_json(harness)
    assert code == 1
    assert report["state"] == "degraded" and "no worker online" in report["problems"]
    assert_counts(report)
    assert report["devices"]["online"] == 0
    human = status(harness)
    assert human.returncode == 1 and "DEGRADED - no worker online" in human.stdout


def test_with_a_master_and_a_worker_online_status_exits_0_healthy(harness):
    harness.start_master()
    harness.start_worker("w1")
    harness.wait_online(harness.client(), "w1")
    code, report = status_json(harness)
    assert code == 0, report
    assert report["state"] == "healthy" and report["problems"] == []
    assert_counts(report)
    assert report["devices"]["online"] == 1 and sum(report["tasks"].values()) == 0
    human = status(harness)
    assert human.returncode == 0 and "HEALTHY" in human.stdout and "online 1" in human.stdout


def test_a_task_needing_a_tag_no_online_worker_has_makes_status_exit_1_stuck(harness):
    # Given a healthy cluster whose only worker has no tags
    harness.start_master()
    harness.start_worker("w1")
    harness.wait_online(harness.client(), "w1")

    # When a task that requires the tag gpu is submitted
    submitted = run_cli("submit", "--shell", "true", "--tag", "gpu", "--master", harness.url, cwd=harness.dir)
    assert submitted.returncode == 0, submitted.stderr

    # Then the cluster is degraded: one queued task nobody can take
    code, report = status_json(harness)
    assert code == 1
    assert report["state"] == "degraded" and report["stuck_tasks"] == 1
    assert report["tasks"]["queued"] == 1 and report["devices"]["online"] == 1
    assert any("1 queued task(s) no online worker can take" in p for p in report["problems"])


@pytest.mark.parametrize("args", [
    ["--port", "0"],
    ["--port", "70000"],
    ["--config", "bad.json"],
    ["--config", "missing.json"],
    ["--master", "nowhere"],
], ids=["port 0", "port 70000", "bad value in config file", "missing config file", "bad master url"])
def test_a_bad_config_makes_status_exit_3_with_one_error_line(tmp_path, args):
    (tmp_path / "bad.json").write_text(json.dumps({"device_timeout": -5}))
    result = run_cli("distribute", "--status", *args, cwd=tmp_path)
    assert result.returncode == 3, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.stderr + result.stdout
