"""The process record and the sweep that kills what a dead worker left, on real unrelated processes: a reused pid
is never touched, a session outlives its leader, a live worker's record is left alone."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from zmqgrid.worker.orphans import kill_recorded, sweep_device
from zmqgrid.worker.procrecord import Entry, ProcessRecord, read_record, records_of

from ..helpers import REPO, run_cli, stays, wait_until

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="sessions and the reaper are POSIX only")


@pytest.fixture
def sleepers():
    """Start `sleep 300` processes, each the leader of its own session (as a task's is); all killed at teardown."""
    started: list[subprocess.Popen] = []

    def start() -> psutil.Process:
        proc = subprocess.Popen(["sleep", "300"], start_new_session=True)
        started.append(proc)
        return psutil.Process(proc.pid)

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def _runs(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _record_of_a_dead_worker(state_dir: Path, device_id: str, pids: list[int]) -> Path:
    """A record written by a real process that then dies without a word (as a SIGKILLed worker would)."""
    code = ("import os, sys; from zmqgrid.worker.procrecord import ProcessRecord; "
            "r = ProcessRecord(sys.argv[1], sys.argv[2]); [r.add_session(int(p)) for p in sys.argv[3:]]; "
            "print(r.path, flush=True); os._exit(0)")
    out = subprocess.run([sys.executable, "-c", code, str(state_dir), device_id, *map(str, pids)], cwd=REPO,
                         capture_output=True, text=True, check=True, timeout=30)
    return Path(out.stdout.strip())


def test_an_entry_whose_pid_now_belongs_to_another_process_leaves_that_process_alone(sleepers):
    # Given an unrelated session leader, and a record entry with its pid but another start time (a reused pid)
    other = sleepers()
    reused = Entry(pid=other.pid, create_time=other.create_time() - 1.0)

    # When the entry is killed
    killed = kill_recorded([reused])

    # Then nothing was signalled: the process and its session run on
    assert killed == []
    stays(lambda: _runs(other), 0.3, "the unrelated process running")
    # ... while the same entry with its true start time kills it
    assert kill_recorded([Entry(pid=other.pid, create_time=other.create_time())]) == [other.pid]
    wait_until(lambda: not _runs(other), 5, "the recorded process to die")


def test_the_members_of_a_recorded_session_die_after_its_leader_exited(tmp_path):
    # Given a recorded session leader that started a child and exited (the child stays in its session)
    leader = subprocess.Popen(["sh", "-c", "sleep 300 & echo $!; read _"], start_new_session=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    child = psutil.Process(int(leader.stdout.readline()))
    entry = Entry(pid=leader.pid, create_time=psutil.Process(leader.pid).create_time())
    try:
        leader.stdin.close()
        leader.wait(10)
        assert _runs(child)

        # When the entry is killed
        killed = kill_recorded([entry])

        # Then the orphaned member of the session is gone
        assert child.pid in killed
        wait_until(lambda: not _runs(child), 5, "the session's member to die")
    finally:
        leader.stdout.close()
        if _runs(child):
            child.kill()


def test_the_sweep_kills_what_a_dead_worker_of_this_device_recorded_and_nothing_else(tmp_path, sleepers):
    # Given the record of a dead worker of d1, one of a live worker of d1 (this process) and one of a dead d2
    state = tmp_path / "state"
    state.mkdir()
    mine, live, other_device = sleepers(), sleepers(), sleepers()
    dead_record = _record_of_a_dead_worker(state, "d1", [mine.pid])
    _record_of_a_dead_worker(state, "d2", [other_device.pid])
    live_record = ProcessRecord(state, "d1")
    live_record.add_session(live.pid)
    try:
        # When d1 starts and sweeps
        killed = sweep_device(state, "d1")

        # Then only the dead d1 worker's process died, and only its record is gone
        assert killed == [mine.pid]
        wait_until(lambda: not _runs(mine), 5, "the dead worker's task process to die")
        assert _runs(live) and _runs(other_device)
        assert not dead_record.exists()
        assert [p.name for p in records_of(state, "d1")] == [live_record.path.name]
        assert len(records_of(state, "d2")) == 1
    finally:
        live_record.close()


def test_the_record_keeps_only_open_entries_and_stays_small(tmp_path):
    # Given a record through which many attempts came and went, two of them still open
    record = ProcessRecord(tmp_path, "w1")
    try:
        cgroup = record.add_cgroup("/sys/fs/cgroup/zmqgrid-1/run-7")
        for i in range(1000):
            record.remove(record.add_cgroup(f"/sys/fs/cgroup/zmqgrid-1/run-{i + 8}"))
        session = record.add_session(record_pid := psutil.Process().pid)
        assert session is not None

        # Then it reads back as exactly those two, its owner running, and it was rewritten along the way
        read = read_record(record.path)
        assert read is not None and read.device_id == "w1" and read.owner_running()
        assert read.entries == [Entry(cgroup="/sys/fs/cgroup/zmqgrid-1/run-7"),
                                Entry(pid=record_pid, create_time=psutil.Process().create_time())]
        assert len(record.path.read_text().splitlines()) < 100
        # ... a torn last line (a power cut mid-write) is skipped, not fatal
        with open(record.path, "a") as f:
            f.write("+99 sess")
        assert len(read_record(record.path).entries) == 2
        record.remove(cgroup)
    finally:
        record.close()
    assert not record.path.exists()


def test_a_worker_whose_state_dir_cannot_be_written_refuses_to_start_in_one_line(tmp_path):
    # Given a file where the worker's state_dir (default `state`, in the working directory) should be
    (tmp_path / "state").write_text("")

    # When a worker starts there
    result = run_cli("distribute", "--mode", "worker", "--master", "tcp://127.0.0.1:9", "--device-id", "w1",
                     "--log-file", str(tmp_path / "w.log"), cwd=tmp_path, timeout_s=60)

    # Then it refuses, in one line naming the setting and what to do, as a configuration mistake
    assert result.returncode == 3, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "state_dir 'state'" in lines[0] and "ZMQGRID_STATE_DIR" in lines[0], result.stderr
    assert "Traceback" not in result.stderr
