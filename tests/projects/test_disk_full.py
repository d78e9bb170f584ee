"""A worker whose disk fills while it unpacks a project's version (a tmpfs of 4 MiB mounted as its state_dir, in a
mount namespace the test makes): the task fails with one line naming the disk, nothing half-written stays in the
cache, and the worker goes on running other tasks and a version that fits."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from zmqgrid.client import build_spec

from .test_fetch import cache
from .test_push import project

pytestmark = pytest.mark.timeout(120)


def can_mount_tmpfs() -> bool:
    if sys.platform != "linux" or shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /mnt"],
                           capture_output=True)
    return probe.returncode == 0


needs_mount = pytest.mark.skipif(not can_mount_tmpfs(), reason="needs `unshare -m` and tmpfs mounts (root on Linux)")


@needs_mount
def test_a_disk_full_while_unpacking_fails_the_task_with_one_line_and_leaves_nothing_half_written(harness, tmp_path):
    harness.start_master()
    state = harness.dir / "state"
    state.mkdir()
    # The worker's own view: a 4 MiB tmpfs over its state_dir (the archive of 3 MiB and its unpacking do not fit)
    in_small_disk = ("unshare", "-m", "sh", "-c", f'mount -t tmpfs -o size=4m tmpfs "{state}" && exec "$0" "$@"',
                     sys.executable)
    worker = harness.start_worker("w1", python=in_small_disk)
    client = harness.client()
    harness.wait_online(client, "w1")
    big = project(tmp_path / "big", {"data.bin": os.urandom(3 << 20)})
    client.push_project(big)

    # When a task of the big project reaches the worker
    task_id = client.submit(build_spec(shell="true", project="big", retries=0), notify=True)[0]
    done = client.wait([task_id], 60)[task_id]

    # Then it fails with one line naming the disk, and nothing of it stays in the worker's cache
    assert done["state"] == "failed", done
    message = done["error"]["message"]
    assert "No space left on device" in message and "\n" not in message, message
    seen = Path(f"/proc/{worker.pid}/root") / cache(harness, "w1").relative_to("/")   # inside its namespace
    assert sorted(p.name for p in seen.iterdir()) == []

    # And the worker goes on: a plain task and a version that fits both run
    small = project(tmp_path / "small", {"data.txt": "fits\n"})
    client.push_project(small)
    ids = client.submit([build_spec(shell="echo plain"), build_spec(shell="cat data.txt", project="small")],
                        notify=True)
    finished = client.wait(ids, 60)
    assert [finished[i]["state"] for i in ids] == ["done", "done"], finished
    assert worker.poll() is None
