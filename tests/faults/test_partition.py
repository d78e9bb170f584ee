"""A cut connection: one worker sits in its own network namespace, its veth link goes down for longer than the
device timeout and comes back. Its tasks finish elsewhere, it comes back online and takes new work, none lost."""
from __future__ import annotations

import itertools
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

import pytest

from zmqgrid.client import build_spec

from ..helpers import db_query, wait_until

pytestmark = pytest.mark.timeout(90)
_serial = itertools.count(1)


@dataclass
class Netns:
    """A network namespace joined to the host by a veth pair: host side HOST_IP/30, inner side INNER_IP/30."""
    name: str
    host_if: str
    inner_if: str
    host_ip: str
    inner_ip: str

    def cut(self) -> None:
        _ip("link", "set", self.host_if, "down")

    def restore(self) -> None:
        _ip("link", "set", self.host_if, "up")

    def exec_prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.name]


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=15)
    if check and done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: exit {done.returncode}: {done.stderr.strip()}")
    return done


def _free_subnet() -> int:
    """X of a 10.231.X.0/30 that no interface of the host uses yet (a start derived from the pid spreads runs)."""
    used = set(re.findall(r"10\.231\.(\d+)\.", _ip("-o", "-4", "addr", "show", check=False).stdout))
    used |= set(re.findall(r"10\.231\.(\d+)\.", _ip("-4", "route", "show", check=False).stdout))
    start = os.getpid() % 250
    for x in ((start + i) % 250 + 1 for i in range(250)):
        if str(x) not in used:
            return x
    raise RuntimeError("every 10.231.X.0/30 is in use")


def _teardown(ns: Netns) -> None:
    """Everything by name: our processes inside the namespace, the veth pair, the namespace."""
    pids = _ip("netns", "pids", ns.name, check=False).stdout.split()
    for pid in pids:
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass
    _ip("link", "del", ns.host_if, check=False)
    _ip("netns", "del", ns.name, check=False)


@pytest.fixture
def netns():
    n = next(_serial)
    pid = os.getpid()
    ns = Netns(name=f"zg-{pid}-{n}", host_if=f"zgh{pid:x}n{n}"[:15], inner_if=f"zgi{pid:x}n{n}"[:15],
               host_ip="", inner_ip="")
    try:
        x = _free_subnet()
        ns.host_ip, ns.inner_ip = f"10.231.{x}.1", f"10.231.{x}.2"
        _ip("netns", "add", ns.name)
        _ip("link", "add", ns.host_if, "type", "veth", "peer", "name", ns.inner_if, "netns", ns.name)
        _ip("addr", "add", f"{ns.host_ip}/30", "dev", ns.host_if)
        _ip("link", "set", ns.host_if, "up")
        _ip("netns", "exec", ns.name, "ip", "addr", "add", f"{ns.inner_ip}/30", "dev", ns.inner_if)
        _ip("netns", "exec", ns.name, "ip", "link", "set", ns.inner_if, "up")
        _ip("netns", "exec", ns.name, "ip", "link", "set", "lo", "up")
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
        _teardown(ns)
        reason = f"cannot build a network namespace (needs root and iproute2): {e}"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    try:
        yield ns
    finally:
        _teardown(ns)


def start_worker_in(harness, ns: Netns, device_id: str, concurrency: int = 2) -> subprocess.Popen:
    """A worker inside the namespace, reaching the master over the veth; `ip netns exec` execs, so the pid is
    the worker's own and the harness stops it like any other."""
    cmd = [*ns.exec_prefix(), sys.executable, "-m", "zmqgrid", "distribute", "--mode", "worker",
           "--master", f"tcp://{ns.host_ip}:{harness.port}", "--device-id", device_id,
           "--concurrency", str(concurrency), "--log-file", str(harness.dir / f"{device_id}.log")]
    with open(harness.dir / f"{device_id}.out", "ab") as log:
        proc = subprocess.Popen(cmd, cwd=harness.dir, env={**harness.env, **harness.worker_env(device_id)},
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    harness.workers[device_id] = proc
    return proc


def device_states(client) -> dict[str, str]:
    return {d["device_id"]: d["state"] for d in client.devices()}


def held_by(db, device_id: str) -> int:
    return db_query(db, "SELECT count(*) FROM tasks WHERE device_id=? AND state IN ('assigned', 'running')",
                    (device_id,))[0][0]


def test_a_worker_cut_off_past_the_device_timeout_loses_its_tasks_and_takes_work_again_when_restored(
        netns, harness):
    # Given a master on every interface, a worker "near" on loopback and a worker "far" behind a veth link
    harness.start_master("--host", "0.0.0.0", "--insecure")   # an open bind needs it (CURVE off)
    harness.start_worker("near", concurrency=2)
    far = start_worker_in(harness, netns, "far", concurrency=2)
    client = harness.client()
    harness.wait_online(client, "near", "far")
    assert far.poll() is None
    ids = client.submit([build_spec(python="tests.tasks:sleep", args=[0.05]) for _ in range(300)], notify=True)
    wait_until(lambda: held_by(harness.db, "far") >= 2, 20, "far to hold tasks")

    # When far's link goes down for longer than the device timeout
    netns.cut()
    cut_at = time.monotonic()
    try:
        # Then the master marks far offline and near finishes every task, while the link is still down
        wait_until(lambda: device_states(client).get("far") == "offline", 15, "the master to mark far offline")
        # silence counts from the last heartbeat before the cut (at most one interval, 0.2 s, earlier)
        assert time.monotonic() - cut_at >= 1.5 - 0.2 - 0.05, "offline only after the device timeout"
        results = client.wait(ids, timeout_s=45)
        assert {r["state"] for r in results.values()} == {"done"}
        assert device_states(client).get("far") == "offline", "still cut off while the others finished"
        lost = {t for (t,) in db_query(harness.db, "SELECT task_id FROM attempts WHERE device_id='far' "
                                                   "AND state='lost'")}
        assert lost, "far's attempts were ended as lost"
        for task_id in lost:
            assert results[task_id]["device_id"] == "near" and results[task_id]["attempt"] >= 2, results[task_id]
    finally:
        # When the link is restored
        netns.restore()

    # Then far registers again and takes new work addressed to it
    harness.wait_online(client, "far", timeout_s=30)
    assert far.poll() is None, "the worker process lived through the cut"
    again = client.submit([build_spec(python="tests.tasks:sleep", args=[0.05], device="far") for _ in range(10)],
                          notify=True)
    back = client.wait(again, timeout_s=30)
    assert {(r["state"], r["device_id"]) for r in back.values()} == {("done", "far")}

    # And the count balances: every task done once, none missing
    everything = ids + again
    states = dict(db_query(harness.db, "SELECT id, state FROM tasks"))
    missing = [i for i in everything if i not in states]
    not_done = {i: states[i] for i in everything if i in states and states[i] not in ("done", "failed", "quarantined")}
    twice = db_query(harness.db, "SELECT task_id FROM attempts WHERE state='done' GROUP BY task_id HAVING count(*)>1")
    assert (len(everything), missing, not_done, twice) == (310, [], {}, [])
    assert sum(1 for i in everything if states[i] == "done") == 310
