"""The master's serving of project fetches (docs/architecture.md, Projects, "Fetch"), on real archive files: a
request is queued only for a version a task dispatched to the device pins, and a turn reads at most 8 chunks."""
from __future__ import annotations

import pytest

from zmqgrid.errors import ProjectNotFound
from zmqgrid.master.entries import DeviceEntry, TaskEntry, requirement
from zmqgrid.master.fetches import CHUNKS_PER_TURN, Fetches, ProjectForbidden
from zmqgrid.projects.messages import ProjectData, ProjectFetch
from zmqgrid.protocol import decode

pytestmark = pytest.mark.timeout(30)
VERSION = "ab" * 32


@pytest.fixture
def served(tmp_path):
    archive = bytes(range(256)) * 4096 * 12   # 12 MiB
    (tmp_path / f"{VERSION}.tar").write_bytes(archive)
    fetches = Fetches(lambda version: tmp_path / f"{version}.tar")
    device = DeviceEntry("w1", b"w1", inflight={"t1"})
    tasks = {"t1": TaskEntry("t1", {}, requirement("shell", None, None, f"s@{VERSION}"), 0, 0, None)}
    return fetches, device, tasks, archive


def test_a_turn_reads_at_most_eight_chunks_and_the_rest_wait_their_turn(served):
    fetches, device, tasks, archive = served
    for i in range(12):
        fetches.admit(b"w1", device, tasks, ProjectFetch(i + 1, VERSION, i << 20, 1 << 20))
    sent: list = []
    fetches.serve(lambda identity, frames: sent.append(decode(frames)), lambda *error: sent.append(error))
    assert len(sent) == CHUNKS_PER_TURN == 8 and fetches.waiting()
    fetches.serve(lambda identity, frames: sent.append(decode(frames)), lambda *error: sent.append(error))
    assert not fetches.waiting()
    assert all(isinstance(m, ProjectData) and m.size == len(archive) for m in sent)
    assert b"".join(m.data for m in sorted(sent, key=lambda m: m.offset)) == archive


def test_a_version_no_task_of_the_device_pins_or_that_is_gone_is_refused_before_it_is_queued(served, tmp_path):
    fetches, device, tasks, _ = served
    with pytest.raises(ProjectForbidden, match="no task dispatched to device w1 pins project version cdcdcdcdcdcd"):
        fetches.admit(b"w1", device, tasks, ProjectFetch(1, "cd" * 32, 0, 10))
    other = DeviceEntry("w2", b"w2", inflight=set())
    with pytest.raises(ProjectForbidden):
        fetches.admit(b"w2", other, tasks, ProjectFetch(1, VERSION, 0, 10))
    (tmp_path / f"{VERSION}.tar").unlink()
    with pytest.raises(ProjectNotFound, match="the master has no archive of project version abababababab"):
        fetches.admit(b"w1", device, tasks, ProjectFetch(1, VERSION, 0, 10))
    assert not fetches.waiting()
