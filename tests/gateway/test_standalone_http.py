"""`distribute --mode standalone --http PORT`: the gateway beside a standalone cluster, in a process of its own."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import psutil
import pytest

from ..helpers import REPO, free_port_block, wait_until
from .web import Gateway

pytestmark = pytest.mark.timeout(120)


def standalone(tmp_path, port: int, http_port: int) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZMQGRID_")}
    env["PYTHONPATH"] = str(REPO)
    with open(tmp_path / "s.out", "wb") as out:
        return subprocess.Popen([sys.executable, "-m", "zmqgrid", "distribute", "--mode", "standalone", "--port",
                                 str(port), "--http", str(http_port), "--no-dashboard", "--db", str(tmp_path / "s.db"),
                                 "--log-file", str(tmp_path / "s.log")], cwd=tmp_path, env=env,
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def answering(base: str):
    """A Gateway handle for a gateway started by someone else (no process of ours to stop)."""
    gateway = Gateway.__new__(Gateway)
    gateway.base, gateway.tls = base, None
    return gateway


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_standalone_serves_the_gateway_and_takes_it_down_with_it(tmp_path, sig):
    port = free_port_block(4)   # the master's three and the gateway's, found free together
    http_port = port + 3
    proc = standalone(tmp_path, port, http_port)
    family: list[psutil.Process] = []
    try:
        gateway = answering(f"http://127.0.0.1:{http_port}")
        wait_until(lambda: b"http gateway: http://127.0.0.1" in (tmp_path / "s.out").read_bytes(), 40,
                   "the standalone to say where its gateway is")
        wait_until(lambda: gateway.call("GET", "/readyz").status == 200, 30, "two workers online")
        (task_id,) = gateway.call("POST", "/api/distribution/tasks", body={"shell": "echo via-standalone"}).json["ids"]
        wait_until(lambda: gateway.call("GET", f"/api/distribution/tasks/{task_id}").json["state"] == "done", 30, "done")
        family = psutil.Process(proc.pid).children(recursive=True)
        served_by = [p for p in family if "http" in p.cmdline()]
        assert len(served_by) == 1 and served_by[0].pid != proc.pid   # its own process, not the master's

        proc.send_signal(sig)

        proc.wait(30)
        gone, alive = psutil.wait_procs(family, timeout=20)
        assert not alive, f"left behind: {alive}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        for child in family:   # what the standalone started, should the test fail before they were gone
            try:
                child.kill()
            except psutil.NoSuchProcess:
                pass
