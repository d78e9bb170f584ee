"""`db backup` of a running master's ledger, and `db check`, against real ledger files and a real master."""
from __future__ import annotations

import re
import shutil
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from tests.helpers import Harness, db_query, run_cli, wait_until
from zmqgrid.cli.db import PROGRESS_EVERY_S
from zmqgrid.client import build_spec, new_task_id
from zmqgrid.store import maintenance
from zmqgrid.store.task_store import TaskStore

PREFILLED = 60_000   # about 5,500 pages: a backup one page a step takes many steps while the master writes


def fill(path: Path, n: int) -> list[str]:
    """A ledger of n queued tasks, written straight to the file (quicker than submitting them)."""
    store = TaskStore(path)
    specs = []
    for i in range(n):
        spec = build_spec(shell=f"echo {i}")
        spec["id"] = new_task_id()
        specs.append((spec, 0, None))
    store.insert_tasks(specs, time.time())
    store.commit()
    store.close()
    return [spec["id"] for spec, _, _ in specs]


class Writer(threading.Thread):
    """Submits batches of tasks to the master until stopped; keeps each acknowledged batch with when it came."""

    def __init__(self, h: Harness) -> None:
        super().__init__(daemon=True)
        self.client = h.client()
        self.acked: list[tuple[float, list[str]]] = []
        self.halt = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for _ in range(10_000):   # bounded: a few seconds of batches at most are needed
                if self.halt.is_set():
                    return
                ids = self.client.submit([build_spec(shell="true") for _ in range(20)])
                self.acked.append((time.monotonic(), ids))
        except BaseException as e:   # reported by the test, not lost in the thread
            self.error = e

    def ids_before(self, t: float) -> list[str]:
        return [i for at, ids in list(self.acked) if at < t for i in ids]


def test_a_backup_of_a_running_master_holds_every_task_acknowledged_before_it(tmp_path):
    # Given a master with a big ledger, and a client submitting tasks to it all along
    h = Harness(tmp_path)
    prefilled = fill(h.db, PREFILLED)
    writer = None
    try:
        h.start_master()
        writer = Writer(h)
        writer.start()
        wait_until(lambda: len(writer.acked) >= 5 or writer.error, 20, "the writer's first batches")
        # When the ledger is backed up one page a step while the master commits
        started = time.monotonic()
        r = run_cli("db", "backup", "copy.db", "--db", str(h.db), "--step-pages", "1", cwd=tmp_path, timeout_s=120)
        ended = time.monotonic()
        wait_until(lambda: writer.ids_before(time.monotonic()) != writer.ids_before(ended) or writer.error, 20,
                   "a batch acknowledged after the backup")
        writer.halt.set()
        writer.join(20)
        assert writer.error is None, writer.error
        assert r.returncode == 0, r.stderr
        assert "backed up" in r.stdout and "checked" in r.stdout
        # Then the copy is sound and holds every task acknowledged before the backup began
        copy = tmp_path / "copy.db"
        assert maintenance.check(copy).ok
        in_copy = {row[0] for row in db_query(copy, "SELECT id FROM tasks")}
        before = writer.ids_before(started)
        assert before and not (set(prefilled) | set(before)) - in_copy
        # and the master really was committing while the copy was made (the copy is one snapshot, not a mix)
        during = set(writer.ids_before(ended)) - set(before)
        assert during, "no batch was acknowledged during the backup: the test did not test a busy master"
        assert not (tmp_path / "copy.db-wal").exists() and not list(tmp_path.glob(".copy.db.partial*"))
        assert (copy.stat().st_mode & 0o077) == 0   # owner-only, like the ledger

        # And restoring it as README says (stop, copy over db_path, delete -wal/-shm, start) gives a master
        # that has those tasks
        h.stop()
        shutil.copyfile(copy, h.db)
        for sidecar in (Path(f"{h.db}-wal"), Path(f"{h.db}-shm")):
            sidecar.unlink(missing_ok=True)
        h.start_master()
        with h.client() as c:
            assert c.task(before[-1])["id"] == before[-1]
        assert db_query(h.db, "SELECT count(*) FROM tasks") == [(len(in_copy),)]
    finally:
        if writer is not None:
            writer.halt.set()
        h.stop()


def test_backup_reports_progress_step_by_step_up_to_the_whole_ledger(tmp_path):
    fill(tmp_path / "l.db", 5000)
    seen: list[tuple[int, int]] = []
    result = maintenance.backup(tmp_path / "l.db", tmp_path / "b.db", step_pages=10,
                                progress=lambda done, total: seen.append((done, total)))
    assert len(seen) > 10 and seen[-1][0] == seen[-1][1] == result.pages
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)
    assert result.tasks == 5000


def test_a_backup_that_lasts_longer_than_its_progress_interval_prints_progress_lines_on_stderr(tmp_path):
    # Given a ledger of many pages, held by another connection's exclusive lock, so that the backup waits before
    # it copies its first pages (as a big ledger's would take its time)
    fill(tmp_path / "l.db", 5000)
    holder = sqlite3.connect(tmp_path / "l.db", isolation_level=None)
    holder.execute("PRAGMA locking_mode=EXCLUSIVE")
    holder.execute("BEGIN EXCLUSIVE")
    done: list = []
    backup = threading.Thread(target=lambda: done.append(run_cli("db", "backup", "b.db", "--db", "l.db",
                                                                 "--step-pages", "10", cwd=tmp_path, timeout_s=60)))
    try:
        backup.start()
        wait_until(lambda: list(tmp_path.glob(".b.db.partial-*")), 30, "the backup to begin its copy")
        # pacing: the backup has now lasted longer than the interval between its progress lines
        time.sleep(PROGRESS_EVERY_S + 0.2)
    finally:
        holder.close()   # When the lock goes and the backup copies its pages
        backup.join(60)
    # Then it said how far it was, on stderr, before it finished; stdout has only the result
    r = done[0]
    assert r.returncode == 0, r.stderr
    lines = r.stderr.splitlines()
    assert lines and all(re.fullmatch(r"backup: \d+/\d+ pages \(\d+%\)", line) for line in lines), r.stderr
    copied, total = map(int, re.match(r"backup: (\d+)/(\d+)", lines[0]).groups())
    assert 0 < copied < total, lines
    assert r.stdout.startswith("backed up") and "backup:" not in r.stdout, r.stdout


def test_backup_never_overwrites_a_file_without_force(tmp_path):
    fill(tmp_path / "l.db", 10)
    (tmp_path / "old.db").write_bytes(b"keep me")
    r = run_cli("db", "backup", "old.db", "--db", "l.db", cwd=tmp_path)
    assert r.returncode == 3 and r.stderr.count("\n") == 1 and "already exists" in r.stderr and "--force" in r.stderr
    assert (tmp_path / "old.db").read_bytes() == b"keep me"
    r = run_cli("db", "backup", "old.db", "--db", "l.db", "--force", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert db_query(tmp_path / "old.db", "SELECT count(*) FROM tasks") == [(10,)]


@pytest.mark.parametrize("args, expected", [
    (("db", "backup", "b.db", "--db", "missing.db"), "no ledger at missing.db"),
    (("db", "backup", "nodir/b.db", "--db", "l.db"), "does not exist"),
    (("db", "backup", "l.db", "--db", "l.db"), "is the ledger itself"),
    (("db", "backup", "b.db", "--db", "notsqlite.db"), "not an SQLite file"),
    (("db", "check", "--db", "missing.db"), "no ledger at missing.db"),
])
def test_db_mistakes_are_one_line_and_exit_3(tmp_path, args, expected):
    fill(tmp_path / "l.db", 1)
    (tmp_path / "notsqlite.db").write_text("hello")
    r = run_cli(*args, cwd=tmp_path)
    assert r.returncode == 3 and r.stderr.count("\n") == 1 and expected in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "b.db").exists()


@pytest.mark.parametrize("quick", [False, True])
def test_check_of_a_sound_ledger_is_ok_and_writes_nothing(tmp_path, quick):
    fill(tmp_path / "l.db", 100)
    before = (tmp_path / "l.db").read_bytes()
    r = run_cli("db", "check", "--db", "l.db", *(["--quick"] if quick else []), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert ("quick_check ok" if quick else "integrity_check ok") in r.stdout
    assert (tmp_path / "l.db").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["l.db"]   # no -wal or -shm made beside it


def test_check_of_a_running_masters_ledger_is_ok(tmp_path):
    h = Harness(tmp_path)
    try:
        h.start_master()
        with h.client() as c:
            c.submit([build_spec(shell="true") for _ in range(50)])
        r = run_cli("db", "check", "--db", str(h.db), "--json", cwd=tmp_path)
        assert r.returncode == 0 and '"ok": true' in r.stdout, r.stdout + r.stderr
    finally:
        h.stop()


def test_check_of_a_damaged_ledger_lists_the_first_problems_and_exits_1(tmp_path):
    fill(tmp_path / "l.db", 20_000)
    with open(tmp_path / "l.db", "r+b") as f:   # garbage over part of a page deep in the tasks tree
        f.seek(4096 * 900 + 100)
        f.write(b"\xff" * 3000)
    r = run_cli("db", "check", "--db", "l.db", "--max-problems", "3", cwd=tmp_path)
    assert r.returncode == 1
    problems = [line for line in r.stdout.splitlines() if line.startswith("problem: ")]
    assert len(problems) == 3 and "page" in problems[0], r.stdout
    assert r.stderr.count("\n") == 1 and "failed its integrity_check" in r.stderr and "Traceback" not in r.stderr
    # and a backup of it is refused, leaving nothing behind
    r = run_cli("db", "backup", "b.db", "--db", "l.db", cwd=tmp_path)
    assert r.returncode == 3 and not (tmp_path / "b.db").exists() and not list(tmp_path.glob(".b.db*"))


def test_check_of_a_file_that_is_not_sqlite_fails(tmp_path):
    (tmp_path / "l.db").write_bytes(b"\x00" * 8192)
    r = run_cli("db", "check", "--db", "l.db", cwd=tmp_path)
    assert r.returncode == 1 and "not an SQLite database" in r.stdout
