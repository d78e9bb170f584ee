"""Setting up CURVE as a new operator does (issue 26 items 13-16): every mistake on the way gets a line that says
what is wrong and what to do, and the README's Python snippet runs as written.

Real master processes with real CURVE keys, the CLI as its own process (`python -m zmqgrid`) from a client's
folder of its own, real sockets on 127.0.0.1."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from zmqgrid.security import generate

from .helpers import REPO, Harness, run_cli, wait_until

pytestmark = pytest.mark.timeout(120)

README = REPO / "README.md"


def cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`python -m zmqgrid ARGS` from `cwd` with no ZMQGRID_* variable but those of `env` (what the user set)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ZMQGRID_")}
    clean.update(PYTHONPATH=str(REPO), **(env or {}))
    return subprocess.run([sys.executable, "-m", "zmqgrid", *args], cwd=cwd, env=clean, capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL)


def one_error_line(done: subprocess.CompletedProcess) -> str:
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    return lines[0]


def client_machine(folder: Path, h: Harness, key: str, master_key: str | None) -> Path:
    """A client's folder: keys/admin.key_secret is the harness's keys/KEY.key_secret; keys/master.key is the
    master's own (`master_key="copied"`), one generated on the client (`"generated"`, as the old hint said), or
    missing (None)."""
    (folder / "keys").mkdir(parents=True)
    shutil.copy(h.keys / f"{key}.key_secret", folder / "keys" / "admin.key_secret")
    if master_key == "copied":
        shutil.copy(h.keys / "master.key", folder / "keys" / "master.key")
    elif master_key == "generated":
        generate("master", "master", folder / "keys")
    return folder


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    """A master with CURVE on; its admin key accepted, the key `gone` accepted and then revoked."""
    h = Harness(tmp_path_factory.mktemp("curve-setup"), secured=True)
    try:
        h.start_master()
        gone = h.client_curve("gone").public.decode()
        for verb, ref in (("accept", str(h.keys / "gone.key")), ("revoke", gone)):
            done = run_cli("keys", verb, ref, "--db", str(h.db), cwd=h.dir)
            assert done.returncode == 0, done
        wait_until(lambda: f"key {gone[:8]}: accepted -> revoked" in (h.dir / "master.log").read_text(), 10,
                   "the revocation applied by the master")
        yield h
    finally:
        h.stop()


# --- 13. a client without the master's public key ----------------------------------------------------------------

def test_a_client_missing_the_masters_key_is_told_to_copy_it_and_then_reaches_the_master(secured, tmp_path):
    # Given a client machine with an accepted admin key but no keys/master.key
    folder = client_machine(tmp_path, secured, "admin", master_key=None)
    curve_on = {"ZMQGRID_CURVE": "true", "ZMQGRID_MASTER": secured.url}
    # When it lists tasks
    done = cli("tasks", "list", cwd=folder, env=curve_on)
    # Then it is told to copy the master's public key, not to generate a master key of its own
    assert done.returncode == 3, done
    line = one_error_line(done)
    assert "keys/master.key" in line and "copy master.key" in line and "master's machine" in line, line
    assert "generate" not in line, line
    # And once it did as told, the same command works
    shutil.copy(secured.keys / "master.key", folder / "keys" / "master.key")
    again = cli("tasks", "list", cwd=folder, env=curve_on)
    assert again.returncode == 0, again


# --- 14. a master that does not answer: the client says why ------------------------------------------------------

@pytest.mark.parametrize("key, master_key, curve, words", [
    ("admin", None, False, ["requires CURVE", "ZMQGRID_CURVE=true", "master.key"]),
    ("admin", "generated", True, ["is not this master's", "copy master.key again"]),
    ("gone", "copied", True, ["refused this client's key", "rejected or revoked"]),
], ids=["client without curve", "another master's key", "revoked key"])
def test_a_client_the_secured_master_cannot_answer_is_told_why(secured, tmp_path, key, master_key, curve, words):
    folder = client_machine(tmp_path, secured, key, master_key)
    env = {"ZMQGRID_CURVE": "true"} if curve else {}
    for args in (("tasks", "list"), ("submit", "--shell", "true")):
        done = cli(*args, "--master", secured.url, "--master-timeout", "1", cwd=folder, env=env)
        assert done.returncode == 2, done
        line = one_error_line(done)
        assert all(w in line for w in words) and "start it" not in line, line
    status = cli("distribute", "--status", "--master", secured.url, "--timeout", "1", cwd=folder, env=env)
    assert status.returncode == 2 and all(w in status.stdout for w in words), status


def test_a_curve_client_is_told_when_the_master_runs_open(tmp_path):
    (tmp_path / "master").mkdir()
    h = Harness(tmp_path / "master")
    h.env["ZMQGRID_CURVE"] = "false"   # open even in the secured suite (TEST_WITH_CURVE=1)
    h.curve = None
    try:
        h.start_master()
        folder = tmp_path / "client"
        (folder / "keys").mkdir(parents=True)
        generate("admin", "admin", folder / "keys")
        generate("master", "master", folder / "keys")
        done = cli("tasks", "list", "--master", h.url, "--timeout", "1", cwd=folder, env={"ZMQGRID_CURVE": "true"})
        assert done.returncode == 2, done
        line = one_error_line(done)
        assert "runs without CURVE" in line and "turn curve off" in line, line
    finally:
        h.stop()


def test_a_client_with_nothing_listening_is_told_to_start_the_master(tmp_path):
    h = Harness(tmp_path)   # its ports are free: no master started
    done = cli("tasks", "list", "--master", h.url, "--timeout", "1", cwd=tmp_path)
    assert done.returncode == 2, done
    line = one_error_line(done)
    assert "did not answer within 1s: nothing accepts connections there" in line and "start it" in line, line


# --- 15. keys generate says where each public key goes -----------------------------------------------------------

def test_keys_generate_says_where_each_public_key_goes(tmp_path):
    master = cli("keys", "generate", "--role", "master", "--dir", "k", cwd=tmp_path)
    assert master.returncode == 0, master
    assert "copy it into keys/ on every worker and client machine" in master.stdout, master.stdout
    assert "give it to the master" not in master.stdout and "keys accept" not in master.stdout, master.stdout
    worker = cli("keys", "generate", "--role", "worker", "--dir", "k", cwd=tmp_path)
    assert worker.returncode == 0 and "keys accept" in worker.stdout, worker



def test_keys_accept_of_a_worker_says_when_the_worker_joins(tmp_path):
    # The operator who watches `devices list` right after the accept is told the worker is coming, and where to
    # see it.
    assert cli("keys", "generate", "--role", "worker", "--dir", "k", cwd=tmp_path).returncode == 0
    done = cli("keys", "accept", "k/worker.key", "--db", "ledger.db", cwd=tmp_path)
    assert done.returncode == 0, done
    first, hint = done.stdout.strip().splitlines()
    assert first.endswith(" accepted: role worker"), first
    assert "joins within a second or two" in hint and "devices list" in hint, hint
    admin = cli("keys", "generate", "--role", "admin", "--dir", "k", cwd=tmp_path)
    assert admin.returncode == 0, admin
    done = cli("keys", "accept", "k/admin.key", "--db", "ledger.db", cwd=tmp_path)
    assert done.stdout.strip().endswith(" accepted: role admin"), done.stdout   # a client's next command is let in

# --- 16. the README's Python snippet for a secured cluster runs as written ---------------------------------------

def security_step_4() -> str:
    text = README.read_text(encoding="utf-8")
    return text[text.index("4. **Clients**"):text.index("**Standalone with CURVE**")]


def test_readme_step_4_says_to_copy_the_masters_public_key():
    step = security_step_4()
    assert "copy the master's public `master.key`" in step and "never `master.key_secret`" in step, step


def test_the_readme_python_snippet_for_clients_runs_against_a_secured_master(secured, tmp_path):
    blocks = re.findall(r"```python\n(.*?)```", security_step_4(), re.S)
    assert len(blocks) == 1, blocks
    snippet = "\n".join(line.removeprefix("   ") for line in blocks[0].splitlines())
    folder = client_machine(tmp_path, secured, "admin", master_key="copied")
    (folder / "snippet.py").write_text(snippet, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZMQGRID_")}
    env.update(PYTHONPATH=str(REPO), ZMQGRID_CURVE="true", ZMQGRID_MASTER=secured.url)
    done = subprocess.run([sys.executable, "snippet.py"], cwd=folder, env=env, capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 0 and done.stdout.startswith("{"), done
