"""The command line names the command that helps; the library and the master name only what went wrong.

Each case: the CLI's one error line (unchanged wording, `python main.py ...`), and the library error under it,
which carries the data the hint needs but no command line."""
from __future__ import annotations

import shlex
import time

import pytest
import sqlite_utils
import zmq

from zmqgrid.client import Client
from zmqgrid.errors import MasterUnavailable, ScheduleNotFound, TaskNotFound
from zmqgrid.security import CertificateMissing, load_keypair
from zmqgrid.store import key_store
from zmqgrid.store.task_store import TaskStore

from ..helpers import Harness, run_cli
from .test_cli import assert_user_error

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def master(tmp_path_factory):
    harness = Harness(tmp_path_factory.mktemp("hints"))
    try:
        harness.start_master()
        yield harness
    finally:
        harness.stop()


def test_an_unknown_task_or_schedule_is_told_with_the_command_that_lists_them(master, tmp_path):
    # The master's answer names the task or schedule only
    client = master.client()
    with pytest.raises(TaskNotFound) as task:
        client.task("0123456789abcdef")
    with pytest.raises(ScheduleNotFound) as schedule:
        client.schedule_remove("nope")
    assert (str(task.value), str(schedule.value)) == ("no task '0123456789abcdef'", "no schedule 'nope'")
    # The command line adds how to list them
    shown = assert_user_error(run_cli("tasks", "show", "0123456789abcdef", "--master", master.url, cwd=tmp_path), 3)
    assert shown == "error: no task '0123456789abcdef'; list tasks with: python main.py tasks list"
    removed = assert_user_error(run_cli("schedules", "remove", "nope", "--master", master.url, cwd=tmp_path), 3)
    assert removed == "error: no schedule 'nope'; list them with: python main.py schedules list"


def test_a_missing_certificate_is_told_with_the_command_that_generates_one(tmp_path):
    with pytest.raises(CertificateMissing) as missing:
        load_keypair(tmp_path / "keys" / "master.key_secret", "master")
    assert missing.value.role == "master" and "main.py" not in str(missing.value)
    started = run_cli("distribute", "--mode", "master", "--curve", "--keys-dir", "keys", "--port", "1",
                      "--db", str(tmp_path / "l.db"), cwd=tmp_path)
    assert assert_user_error(started, 3) == (
        "error: master certificate keys/master.key_secret does not exist; "
        "generate one: python main.py keys generate --role master")


def test_accepting_a_key_for_a_device_another_key_holds_is_told_with_the_command_that_revokes_that_one(tmp_path):
    # Given an accepted key bound to device w1, and a pending key that claims w1 too
    holder, claimant = (zmq.curve_keypair()[0].decode() for _ in range(2))
    store = TaskStore(tmp_path / "ledger.db")
    now = time.time()
    key_store.stage_authorized(store, holder, "worker", "w1", now)
    key_store.stage_device(store, holder, "w1", "w1", "host-a")
    key_store.stage_seen(store, claimant, "worker", now)
    key_store.stage_claim(store, claimant, "w1", "host-b")
    store.commit()
    store.close()
    # When the operator accepts the claimant, nothing changes and the line names the command for the holder
    accepted = run_cli("keys", "accept", claimant, "--db", str(tmp_path / "ledger.db"), cwd=tmp_path)
    line = assert_user_error(accepted, 3)
    assert line.endswith(f"holds; nothing changed; if that device's key changed, revoke the old one first: "
                         f"python main.py keys revoke {shlex.quote(holder)}"), line
    db = sqlite_utils.Database(tmp_path / "ledger.db")
    try:
        with pytest.raises(key_store.KeyHeld) as held:
            key_store.change_state(db, claimant, key_store.find_key(db, claimant), "accepted")
    finally:
        db.close()
    assert held.value.holder == holder and "main.py" not in str(held.value)


def test_a_master_nothing_listens_for_is_told_with_the_command_that_starts_one(tmp_path):
    # Given an address where no master runs (the harness's ports, nothing started)
    url = Harness(tmp_path).url
    # The library names what went wrong and the command's data, no command line
    client = Client(url, timeout_s=1.0)
    try:
        with pytest.raises(MasterUnavailable) as unavailable:
            client.status()
    finally:
        client.close()
    assert unavailable.value.command == "distribute --mode master" and "main.py" not in str(unavailable.value)
    assert "nothing accepts connections there" in str(unavailable.value)
    # The command line adds the command, in its error line and in distribute --status
    listed = assert_user_error(run_cli("tasks", "list", "--master", url, "--timeout", "1", cwd=tmp_path), 2)
    assert listed.endswith("start it or check --master; on the master's machine: python main.py distribute --mode "
                           "master"), listed
    status = run_cli("distribute", "--status", "--master", url, "--timeout", "1", cwd=tmp_path)
    assert status.returncode == 2 and "on the master's machine: python main.py distribute --mode master" in \
        status.stdout, status
