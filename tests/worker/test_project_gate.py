"""The worker's ProjectGate with its Slots, on real files: a task of a project waits for its copy without holding a
slot, is reported held, asks for the archive a window at a time, runs in the copy once it is unpacked; a cancel
finds it while it waits; a download that does not match its version is fetched again, then given up."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from zmqgrid.config import Config
from zmqgrid.projects.messages import CHUNK_BYTES, ProjectData, ProjectFetch
from zmqgrid.projects.pack import pack
from zmqgrid.protocol import Error, Tasks
from zmqgrid.worker.projects import DOWNLOAD_TRIES, ProjectCopy, ProjectGate
from zmqgrid.worker.slots import Slots

from ..helpers import wait_until

pytestmark = pytest.mark.timeout(60)


class Rig:
    """A gate and the slots it feeds, wired as Worker wires them; what they send is kept in `sent`."""

    def __init__(self, tmp_path: Path, concurrency: int = 1) -> None:
        self.config = Config(device_id="g1", state_dir=str(tmp_path / "state"), concurrent_tasks=concurrency,
                             prefetch=4, task_cgroups=False)
        self.sent: list = []
        self.gate = ProjectGate(self.config, send=self.sent.append, connected=lambda: True, wake=lambda: None,
                                release=lambda tasks: self.slots.release(tasks),
                                fail=lambda results: self.slots.ended(results),
                                active_ids=lambda: self.slots.active_ids())
        self.slots = Slots(self.config, record=None, watch=lambda fd: None, unwatch=lambda fd: None,
                           send=self.sent.append, connected=lambda: True, wake=lambda: None, gate=self.gate)
        self.gate.start()

    def close(self) -> None:
        self.slots.close()
        self.gate.close()

    def fetches(self) -> list[ProjectFetch]:
        asked = [m for m in self.sent if isinstance(m, ProjectFetch)]
        self.sent[:] = [m for m in self.sent if not isinstance(m, ProjectFetch)]
        return asked

    def results(self) -> list[dict]:
        return [r for message in self.slots.outbox.messages(time.monotonic(), []) for r in message.results]

    def answer(self, archive: bytes, asked: list[ProjectFetch], version: str | None = None) -> None:
        for msg in asked:
            self.gate.on_data(ProjectData(msg.req_id, version or msg.version, msg.offset, len(archive),
                                          archive[msg.offset:msg.offset + msg.length]))


@pytest.fixture
def rig(tmp_path):
    rig = Rig(tmp_path)
    yield rig
    rig.close()


def archive_of(tmp_path: Path, files: dict[str, bytes]) -> tuple[str, bytes]:
    folder = tmp_path / "src"
    for rel, data in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    packed = pack(folder)
    data = packed.path.read_bytes()
    packed.path.unlink()
    return packed.version, data


def test_a_task_waiting_for_its_copy_holds_no_slot_is_reported_held_and_runs_in_the_copy_once_it_came(rig, tmp_path):
    version, archive = archive_of(tmp_path, {"big.bin": b"x" * (5 * CHUNK_BYTES + 10), "hello.txt": b"hi\n"})
    waiting = {"id": "p1", "attempt": 1, "kind": "shell", "command": "cat hello.txt", "project": f"s@{version}"}
    plain = {"id": "n1", "attempt": 1, "kind": "shell", "command": "true"}

    rig.slots.take(Tasks([waiting, plain]))
    rig.slots.start_held()

    # the plain task took the one slot; the project's waits, held, not running
    assert set(rig.slots.running) == {"n1"}
    running, held = rig.slots.owned()
    assert ["p1", 1] in held and ["p1", 1] not in running
    assert rig.slots.holdings()[0] == 1 + 4 - 2   # concurrency 1 + prefetch 4, less the two it holds
    # one request first (its answer says the size), then a window of four
    first = rig.fetches()
    assert [(m.version, m.offset, m.length) for m in first] == [(version, 0, CHUNK_BYTES)]
    rig.answer(archive, first)
    window = rig.fetches()
    assert [m.offset for m in window] == [CHUNK_BYTES * i for i in range(1, 5)]
    while window:
        rig.answer(archive, window)
        window = rig.fetches()
    wait_until(lambda: rig.gate.tick(0) or "p1" in rig.slots.active_ids(), 20, "the copy to be unpacked")

    task = next(t for t in rig.slots.held if t["id"] == "p1")
    copy = tmp_path / "state" / "projects" / "g1" / version
    assert task["cwd"] == str(copy) and task["_project"] == ProjectCopy(str(copy), rig.config.python_executable)
    assert (copy / "hello.txt").read_bytes() == b"hi\n" and not (copy.parent / f"{version}.part").exists()


def test_a_waiting_task_is_cancelled_where_it_waits(rig, tmp_path):
    version, _ = archive_of(tmp_path, {"a.txt": b"a"})
    rig.slots.take(Tasks([{"id": "p1", "attempt": 1, "kind": "shell", "command": "true", "project": f"s@{version}"}]))
    rig.slots.kill([("p1", 1)], "cancelled by a user")
    assert rig.gate.count() == 0 and rig.slots.owned()[1] == [["p1", 1]]   # now in the outbox
    assert [(r["id"], r["state"]) for r in rig.results()] == [("p1", "cancelled")]


def test_a_download_that_does_not_match_its_version_is_fetched_again_then_given_up(rig, tmp_path):
    version, archive = archive_of(tmp_path, {"a.txt": b"a"})
    rig.slots.take(Tasks([{"id": "p1", "attempt": 1, "kind": "shell", "command": "true", "project": f"s@{version}"}]))
    forged = archive[:-1] + b"!"   # the same size, another last byte: not the version's hash
    for attempt in range(1, DOWNLOAD_TRIES + 1):
        asked = wait_until(lambda: rig.gate.tick(0) or rig.fetches(), 20, f"download {attempt} to begin")
        assert [m.offset for m in asked] == [0]
        rig.answer(forged, asked)
    wait_until(lambda: rig.gate.tick(0) or rig.gate.count() == 0, 20, "the task to fail")
    assert rig.fetches() == []
    (result,) = rig.results()
    assert result["error"]["type"] == "ProjectUnavailable"
    assert f"{DOWNLOAD_TRIES} downloads in a row failed (the archive downloaded does not match its version)" in \
        result["error"]["message"]


def test_an_error_from_the_master_fails_the_waiting_tasks_at_once_with_its_reason(rig, tmp_path):
    version, _ = archive_of(tmp_path, {"a.txt": b"a"})
    rig.slots.take(Tasks([{"id": "p1", "attempt": 1, "kind": "python", "function": "m:f", "project": f"s@{version}"},
                          {"id": "p2", "attempt": 1, "kind": "shell", "command": "true", "project": f"s@{version}"}]))
    (asked,) = rig.fetches()   # one download for both
    assert rig.gate.on_error(Error(asked.req_id, "not_found", "the master has no archive of project version x"))
    results = rig.results()
    assert sorted((r["id"], r["state"], r["error"]["type"], r["error"]["permanent"]) for r in results) == [
        ("p1", "failed", "ProjectUnavailable", True), ("p2", "failed", "ProjectUnavailable", True)]
    assert f"project s@{version} cannot be fetched from the master: the master has no archive" in \
        results[0]["error"]["message"]
    assert not rig.gate.on_error(Error(999, "bad_request", "not ours"))


def test_a_worker_advertises_runs_projects_unless_allow_projects_is_false_or_its_calls_run_inline():
    from zmqgrid.projects.messages import RUNS_PROJECTS_TAG
    from zmqgrid.worker.allow import advertised_tags, refusal

    task = {"id": "p1", "attempt": 1, "kind": "shell", "command": "true", "project": "s@" + "a" * 64}
    runs = Config(device_id="g1", tags=["linux"])
    assert advertised_tags(runs) == ["linux", RUNS_PROJECTS_TAG] and refusal(task, runs) is None
    for config, why in ((Config(device_id="g1", allow_projects=False), "allow_projects is false"),
                        (Config(device_id="g1", python_pool="inline"), "its python_pool is inline")):
        assert RUNS_PROJECTS_TAG not in advertised_tags(config)
        assert refusal(task, config) == f"this worker does not run tasks of projects: {why}"


def test_a_worker_with_a_small_max_message_bytes_asks_for_chunks_that_fit_it(tmp_path):
    rig = Rig(tmp_path)
    rig.config.max_message_bytes = 64 * 1024
    try:
        version, archive = archive_of(tmp_path, {"a.bin": b"z" * 100_000})
        rig.slots.take(Tasks([{"id": "p1", "attempt": 1, "kind": "shell", "command": "true",
                               "project": f"s@{version}"}]))
        asked = rig.fetches()
        while asked:
            assert all(m.length == 32 * 1024 for m in asked)
            rig.answer(archive, asked)
            asked = rig.fetches()
        wait_until(lambda: rig.gate.tick(0) or "p1" in rig.slots.active_ids(), 20, "the copy to be unpacked")
    finally:
        rig.close()
