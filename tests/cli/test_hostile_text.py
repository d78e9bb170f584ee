"""Text a peer chose (device names, host names, tags, task names, errors) reaches a person's terminal escaped.

The master refuses control characters in a Register's texts at decode (docs/architecture.md, Message schema), so
a device with such texts can only be a row written before that rule or by another program: the test writes one
into the real master's ledger, whose name, host, OS and tags hold ESC/OSC/CSI/CR/C1/bidi sequences, and a client
submits a task named and tagged the same way (task names may hold any text). The real CLI lists them from the
real master. Its output must hold no raw control character (each is shown as a visible escape), and `--json`
must still decode to the values as sent. `keys list` shows a pending key whose recorded host name holds them.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from zmqgrid.client import Client, build_spec
from zmqgrid.store import key_store
from zmqgrid.store.task_store import TaskStore
from zmq.auth import load_certificate

from ..helpers import REPO, SUITE_KEYS, plant_device, wait_until

pytestmark = pytest.mark.timeout(60)

# OSC 0 (set the window title), CSI (clear the screen, red), CR (overwrite the line), a C1 CSI, a bidi override
HOSTILE = "\x1b]0;owned\x07\x1b[2J\x1b[31mred\rfake\x9b1m\u202eevil"
RAW_CONTROLS = ("\x1b", "\r", "\x07", "\x9b", "\u202e")


def cli_env() -> dict[str, str]:
    """helpers.run_cli's environment: no ZMQGRID_* of the caller; the shared keys in the secured suite."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZMQGRID_")}
    env["PYTHONPATH"] = str(REPO)
    if os.environ.get("TEST_WITH_CURVE") == "1":
        env.update(ZMQGRID_CURVE="true", ZMQGRID_KEYS_DIR=str(SUITE_KEYS))
    return env


def run_cli(*args: str, cwd) -> subprocess.CompletedProcess:
    """helpers.run_cli, but the output kept as the bytes written (text mode would turn a raw CR into a newline)."""
    env = cli_env()
    done = subprocess.run([sys.executable, "-m", "zmqgrid", *args], cwd=cwd, env=env, capture_output=True,
                          timeout=30, stdin=subprocess.DEVNULL)
    done.stdout, done.stderr = done.stdout.decode("utf-8"), done.stderr.decode("utf-8", "replace")
    return done


def assert_no_raw_controls(text: str) -> None:
    found = sorted({repr(c) for c in RAW_CONTROLS if c in text})
    assert not found, f"raw control characters {found} in:\n{text!r}"


def test_devices_and_tasks_with_escape_sequences_in_their_names_are_listed_escaped(harness):
    # Given a device and a task whose peer-chosen texts hold terminal control sequences
    harness.start_master()
    plant_device(harness.db, "evil", name=HOSTILE, hostname="host-" + HOSTILE, os_name=HOSTILE, tags=["gpu" + HOSTILE])
    with Client(harness.url, timeout_s=5, curve=harness.curve) as client:
        task_id = client.submit(build_spec(shell="echo " + HOSTILE, name="job" + HOSTILE, tags=["t" + HOSTILE]))[0]
        wait_until(lambda: any(d["device_id"] == "evil" for d in client.devices()), 10, "the hostile device")

    # When a person lists them with the CLI
    url = ["--master", harness.url]
    outputs = {args: run_cli(*args, *url, cwd=harness.dir)
               for args in (("devices", "list"), ("tasks", "list"), ("tasks", "show", task_id))}

    # Then every command succeeds, shows the rows, and no raw control character reaches the terminal
    for args, done in outputs.items():
        assert done.returncode == 0, (args, done.stderr)
        assert_no_raw_controls(done.stdout)
        assert "\\x1b" in done.stdout, (args, done.stdout)    # shown, as a visible escape
    assert "evil" in outputs[("devices", "list")].stdout
    assert task_id in outputs[("tasks", "list")].stdout

    # And --json keeps the values as sent (only escaped as JSON), with no raw C1 or bidi character in the text
    done = run_cli("tasks", "show", task_id, "--json", *url, cwd=harness.dir)
    assert done.returncode == 0, done.stderr
    assert_no_raw_controls(done.stdout)
    assert json.loads(done.stdout)["name"] == "job" + HOSTILE


def test_keys_list_shows_a_pending_keys_escape_sequences_escaped(secured_harness):
    # Given a key nobody accepted, whose recorded host name holds control sequences
    harness = secured_harness
    harness.start_master()
    harness.client_curve("stranger")   # a fresh key
    public = load_certificate(harness.keys / "stranger.key_secret")[0]
    store = TaskStore(harness.db)
    try:
        key_store.stage_seen(store, public.decode(), "worker", time.time())
        key_store.stage_claim(store, public.decode(), "stranger", "host-" + HOSTILE)
        store.commit()
    finally:
        store.close()

    # When the operator lists the keys
    done = run_cli("keys", "list", "--db", str(harness.db), cwd=harness.dir)

    # Then the key is listed, its host name escaped
    assert done.returncode == 0, done.stderr
    assert public.decode() in done.stdout and "pending" in done.stdout
    assert_no_raw_controls(done.stdout)
    assert "host-\\x1b" in done.stdout


def run_cli_on_a_terminal(*args: str, cwd) -> bytes:
    """The CLI with its stdout on a pseudo-terminal in raw mode (no CR added to newlines): what a terminal receives."""
    import pty
    import tty
    controller, terminal = pty.openpty()
    tty.setraw(terminal)
    env = cli_env()
    try:
        proc = subprocess.Popen([sys.executable, "-m", "zmqgrid", *args], cwd=cwd, env=env, stdout=terminal,
                                stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        os.close(terminal)
        terminal = -1
        received = b""
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:   # EIO: the CLI exited and closed the terminal
                break
            if not chunk:
                break
            received += chunk
        assert proc.wait(30) == 0, proc.stderr.read() if proc.stderr else ""
        if proc.stderr:
            proc.stderr.close()
        return received
    finally:
        os.close(controller)
        if terminal >= 0:
            os.close(terminal)


def test_task_output_is_kept_for_a_pipe_and_escaped_for_a_terminal(cluster):
    # Given a task whose output holds a clear-screen sequence, a tab and a CR LF line end
    with cluster.client() as client:
        task_id = client.submit(build_spec(shell=r"printf 'a\033[2Jb\tc\r\nd\n'"))[0]
        assert client.wait([task_id], timeout_s=20)[task_id]["state"] == "done"

    # When its logs go to a pipe, they are the bytes it printed
    piped = run_cli("tasks", "logs", task_id, "--master", cluster.url, cwd=cluster.dir)
    assert piped.returncode == 0 and piped.stdout == "a\x1b[2Jb\tc\r\nd\n"

    # And on a terminal its escape sequence is shown, not obeyed; tabs and newlines stay
    shown = run_cli_on_a_terminal("tasks", "logs", task_id, "--master", cluster.url, cwd=cluster.dir)
    assert shown == b"a\\x1b[2Jb\tc\nd\n"
