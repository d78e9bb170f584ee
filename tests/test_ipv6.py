"""A master bound on the IPv6 loopback (`--host ::1`): its three sockets, a client and the CLI over tcp://[::1]."""
from __future__ import annotations

import socket

import pytest

from zmqgrid.client import Client, build_spec

from .helpers import Harness, run_cli, wait_until

pytestmark = pytest.mark.timeout(90)


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


needs_ipv6 = pytest.mark.skipif(not _has_ipv6_loopback(), reason="this machine has no IPv6 loopback (::1)")


@pytest.fixture
def master_on_ipv6(tmp_path):
    harness = Harness(tmp_path)
    harness.url = f"tcp://[::1]:{harness.port}"   # what the harness's clients use to reach it
    try:
        harness.start_master("--host", "::1")
        yield harness
    finally:
        harness.stop()


@needs_ipv6
def test_a_master_bound_on_the_ipv6_loopback_answers_clients_and_the_cli_there(master_on_ipv6, tmp_path):
    harness = master_on_ipv6
    with harness.client() as client:
        status = client.status()
        assert status["router"] == f"tcp://[::1]:{harness.port}", status
        task_id = client.submit(build_spec(shell="echo hi"))[0]
        assert client.task(task_id)["state"] == "queued"
    done = run_cli("distribute", "--status", "--json", "--master", harness.url, cwd=tmp_path)
    assert done.returncode in (0, 1) and f'"router": "tcp://[::1]:{harness.port}"' in done.stdout, done
    # The other two sockets are bound there too: nothing answers on 127.0.0.1
    with Client(f"tcp://127.0.0.1:{harness.port}", timeout_s=0.5) as v4:
        with pytest.raises(Exception):
            v4.status()


@needs_ipv6
def test_a_worker_reaches_a_master_on_the_ipv6_loopback_and_runs_a_task(master_on_ipv6):
    harness = master_on_ipv6
    harness.start_worker("w1")
    client = harness.client()
    task_id = client.submit(build_spec(shell="echo over-ipv6"))[0]
    wait_until(lambda: client.task(task_id)["state"] == "done", 15, "the task to run on w1 over IPv6")
