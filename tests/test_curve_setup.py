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


# --- 15. keys generate says where each public key goes -----------------------------------------------------------

def test_keys_generate_says_where_each_public_key_goes(tmp_path):
    master = cli("keys", "generate", "--role", "master", "--dir", "k", cwd=tmp_path)
    assert master.returncode == 0, master
    assert "copy it into keys/ on every worker and client machine" in master.stdout, master.stdout
    assert "give it to the master" not in master.stdout and "keys accept" not in master.stdout, master.stdout
    worker = cli("keys", "generate", "--role", "worker", "--dir", "k", cwd=tmp_path)
    assert worker.returncode == 0 and "keys accept" in worker.stdout, worker
