"""A worker whose wall clock is hours off is never marked offline (Crawlab's failure): liveness is judged on the
master's monotonic clock; the worker's skew is only reported, as clock_offset_s."""
from __future__ import annotations

import glob
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from zmqgrid.client import build_spec

from ..helpers import db_query, stays, wait_until

pytestmark = pytest.mark.timeout(90)
DEVICE_TIMEOUT_S = 1.5     # tests.helpers.FAST
SKEW_S = {"+5h": 5 * 3600, "-5h": -5 * 3600}


def libfaketime() -> str:
    found = sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1") + glob.glob("/usr/lib/faketime/libfaketime.so.1")
                   + glob.glob("/usr/local/lib/faketime/libfaketime.so.1"))
    if not found:
        reason = "libfaketime is not installed (apt-get install faketime)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return found[0]


# libfaketime 0.9.10 (Debian 12, Ubuntu 24.04) with FAKETIME_DONT_FAKE_MONOTONIC still shifts the absolute deadline
# of clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME), which Python 3.11's time.sleep uses: every sleep fails with
# EINVAL (wolfcw/libfaketime#426). The skewed processes get a time.sleep on select() instead, with a relative
# timeout libfaketime passes through; every wall-clock read stays faked by libfaketime itself.
SLEEP_SHIM = """\
import select
import time


def _sleep(seconds):
    if seconds < 0:
        raise ValueError("sleep length must be non-negative")
    deadline = time.monotonic() + seconds
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return
        select.select([], [], [], left)


time.sleep = _sleep
"""


def skewed_env(base: dict, skew: str, shim_dir: Path) -> dict:
    """Only the wall clock moves: monotonic time (zmq's timers, the worker's own timeouts) stays true."""
    shim_dir.mkdir(exist_ok=True)
    (shim_dir / "sitecustomize.py").write_text(SLEEP_SHIM)
    python_path = os.pathsep.join(p for p in (str(shim_dir), base.get("PYTHONPATH")) if p)
    return dict(base, LD_PRELOAD=libfaketime(), FAKETIME=skew, FAKETIME_DONT_FAKE_MONOTONIC="1",
                PYTHONPATH=python_path)


def start_skewed_worker(harness, device_id: str, env: dict, concurrency: int = 4) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "zmqgrid", "distribute", "--mode", "worker", "--master", harness.url,
           "--device-id", device_id, "--concurrency", str(concurrency),
           "--log-file", str(harness.dir / f"{device_id}.log")]
    with open(harness.dir / f"{device_id}.out", "ab") as log:
        proc = subprocess.Popen(cmd, cwd=harness.dir, env={**env, **harness.worker_env(device_id)}, stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    harness.workers[device_id] = proc
    return proc


def drifted(client) -> dict:
    return {d["device_id"]: d for d in client.devices()}["drifted"]


@pytest.mark.parametrize("skew", ["+5h", "-5h"])
def test_a_worker_whose_wall_clock_is_hours_off_stays_online_and_runs_tasks(harness, skew):
    # Given a child process under libfaketime really sees its wall clock moved by the skew, and nothing else
    env = skewed_env(harness.env, skew, harness.dir / "skew_shim")
    # (the probe sleeps so that it also shows the shim's time.sleep works under libfaketime)
    clocks = "import time; time.sleep(0.01); print(time.time(), time.monotonic())"
    probe = subprocess.run([sys.executable, "-c", clocks], env=env, capture_output=True, text=True, timeout=20)
    assert probe.returncode == 0, probe.stderr
    child_wall, child_mono = map(float, probe.stdout.split())
    assert abs(child_wall - time.time() - SKEW_S[skew]) < 60, "libfaketime did not skew the child's clock"
    assert abs(child_mono - time.monotonic()) < 60, "the monotonic clock must stay true"

    # And a master, with that skewed worker registered
    harness.start_master()
    start_skewed_worker(harness, "drifted", env)
    client = harness.client()
    harness.wait_online(client, "drifted")

    # When it is watched for four device timeouts
    states: list[str] = []

    def online() -> bool:
        states.append(drifted(client)["state"])
        return states[-1] == "online"
    stays(online, 4 * DEVICE_TIMEOUT_S, "the drifted worker online", interval_s=0.1)

    # Then it was online throughout
    assert len(states) >= 30 and set(states) == {"online"}, states

    # And it runs tasks to done
    ids = client.submit([build_spec(python="tests.tasks:sleep", args=[0.05]) for _ in range(50)], notify=True)
    results = client.wait(ids, timeout_s=45)
    assert {(r["state"], r["device_id"]) for r in results.values()} == {("done", "drifted")}
    assert db_query(harness.db, "SELECT count(*) FROM attempts WHERE state='done'") == [(50,)]
    assert db_query(harness.db, "SELECT count(*) FROM attempts WHERE state!='done'") == [(0,)], "no attempt lost"

    # And its skew is reported (not acted on), and it is still online
    offset = wait_until(lambda: drifted(client)["metrics"].get("clock_offset_s"), 10, "a clock offset")
    assert abs(offset - SKEW_S[skew]) <= 60, offset
    assert drifted(client)["state"] == "online"
