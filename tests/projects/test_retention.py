"""The master keeps the newest `project_keep_versions` versions of each project and every older one an unfinished
task pins; the others' rows and archives go after each push and at start (docs/architecture.md, Projects, "The
master's store")."""
from __future__ import annotations

import pytest

from zmqgrid.client import build_spec

from ..helpers import Harness, wait_until
from .test_push import archives, project

pytestmark = pytest.mark.timeout(120)


def push_versions(client, folder, count: int, first: int = 0) -> list[str]:
    versions = []
    for n in range(first, first + count):
        project(folder, {"myspider/crawl.py": f"def run(u): return {n}\n"})
        versions.append(client.push_project(folder)["version"])
    return versions


def listed(client) -> list[str]:
    return [row["version"] for row in client.projects("myspider")]


def pruned_lines(h: Harness) -> list[str]:
    return [line for line in (h.dir / "master.log").read_text().splitlines() if " pruned: " in line]


def test_only_the_newest_versions_and_those_a_queued_task_pins_are_kept_also_after_a_restart(harness, tmp_path):
    harness.env["ZMQGRID_PROJECT_KEEP_VERSIONS"] = "2"
    harness.start_master()
    client = harness.client()
    folder = project(tmp_path / "myspider", {"myspider/__init__.py": ""})
    (v1,) = push_versions(client, folder, 1)
    # Given a task that pins the oldest version and stays queued (no worker)
    (task,) = client.submit(build_spec(shell="true", project="myspider"))
    # When N + 2 versions are pushed in all
    v2, v3, v4 = push_versions(client, folder, 3, first=1)
    # Then the newest two and the pinned one are kept; the other old one goes, index row and archive
    wait_until(lambda: listed(client) == [v4, v3, v1], 20, "v2 pruned")
    wait_until(lambda: f"{v2}.tar" not in archives(harness), 20, "v2's archive deleted")
    assert archives(harness) == sorted(f"{v}.tar" for v in (v1, v3, v4))
    assert len(pruned_lines(harness)) == 1 and f"myspider@{v2[:12]} pruned" in pruned_lines(harness)[0]
    assert client.task(task)["spec"]["project"] == f"myspider@{v1}"

    # A restart keeps the pinned version while its task is unfinished
    harness.kill(harness.master)
    harness.start_master()
    client = harness.client()
    assert listed(client) == [v4, v3, v1] and len(pruned_lines(harness)) == 1

    # Once its task has ended, the next start lets it go
    client.cancel([task])
    wait_until(lambda: client.task(task)["state"] == "cancelled", 20, "the task cancelled")
    harness.kill(harness.master)
    harness.start_master()
    client = harness.client()
    wait_until(lambda: listed(client) == [v4, v3], 20, "v1 pruned at start")
    wait_until(lambda: archives(harness) == sorted(f"{v}.tar" for v in (v3, v4)), 20, "v1's archive deleted")
    assert f"myspider@{v1[:12]} pruned" in pruned_lines(harness)[-1]


def test_keep_versions_zero_keeps_every_version_and_an_archive_another_name_holds_stays(harness, tmp_path):
    harness.env["ZMQGRID_PROJECT_KEEP_VERSIONS"] = "0"
    harness.start_master()
    client = harness.client()
    folder = project(tmp_path / "myspider", {"myspider/__init__.py": ""})
    versions = push_versions(client, folder, 3)
    assert listed(client) == versions[::-1]
    project(folder, {"myspider/crawl.py": "def run(u): return 0\n"})
    assert client.push_project(folder, name="other")["version"] == versions[0]
    harness.kill(harness.master)

    # With one kept, the older versions go at start; one that another project also holds keeps its archive
    harness.env["ZMQGRID_PROJECT_KEEP_VERSIONS"] = "1"
    harness.start_master()
    client = harness.client()
    wait_until(lambda: listed(client) == [versions[2]], 20, "the older versions pruned at start")
    wait_until(lambda: archives(harness) == sorted(f"{v}.tar" for v in (versions[0], versions[2])), 20,
               "only the unnamed archive deleted")
    assert [row["version"] for row in client.projects("other")] == [versions[0]]
