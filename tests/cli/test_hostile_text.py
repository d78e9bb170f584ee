"""Text a peer chose (device names, host names, tags, task names, errors) reaches a person's terminal escaped.

A raw DEALER registers a device whose name, host, OS and tags hold ESC/OSC/CSI/CR/C1/bidi sequences, and a client
submits a task named and tagged the same way; the real CLI lists them from the real master. Its output must
hold no raw control character (each is shown as a visible escape), and `--json` must still decode to the values
as sent. `keys list` shows a pending CURVE key whose Register carried such a host name.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import zmq

from zmqgrid import protocol as p
from zmqgrid.client import Client, build_spec
from zmq.auth import load_certificate

from ..helpers import REPO, SUITE_KEYS, Harness, db_query, wait_until

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


def register_hostile_device(harness: Harness, ctx: zmq.Context, device_id: str, curve=None) -> None:
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    if curve is None:
        sock.setsockopt(zmq.IDENTITY, device_id.encode())   # open mode: the identity is the device id
    else:
        sock.curve_publickey, sock.curve_secretkey, sock.curve_serverkey = curve
    sock.connect(harness.url)
    sock.send_multipart(p.Register(device_id, HOSTILE, "host-" + HOSTILE, HOSTILE, "3.11.7", "/usr/bin/python3",
                                   ["gpu" + HOSTILE], 1, 0, [], [], 1, "0").encode())
    assert sock.poll(5000), "the master did not answer the Register"
    sock.recv_multipart()
    sock.close(0)


@pytest.fixture
def ctx():
    context = zmq.Context()
    yield context
    context.destroy(linger=0)


@pytest.mark.open_wire   # the raw DEALER registers without a key
def test_devices_and_tasks_with_escape_sequences_in_their_names_are_listed_escaped(harness, ctx):
    # Given a device and a task whose peer-chosen texts hold terminal control sequences
    harness.start_master()
    register_hostile_device(harness, ctx, "evil")
    with Client(harness.url, timeout_s=5) as client:
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


def test_keys_list_shows_a_pending_keys_escape_sequences_escaped(secured_harness, ctx):
    # Given a key nobody accepted, whose Register carries control sequences in its host name
    harness = secured_harness
    harness.start_master()
    harness.client_curve("stranger")   # a fresh key: pending
    public, secret = load_certificate(harness.keys / "stranger.key_secret")
    server = load_certificate(harness.keys / "master.key")[0]
    register_hostile_device(harness, ctx, "stranger", curve=(public, secret, server))
    wait_until(lambda: db_query(harness.db, "SELECT hostname FROM keys WHERE public_key = ?", (public.decode(),)),
               10, "the pending key's host recorded")

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
