"""PyPools on real processes: a python call that chose another interpreter runs in a child of that interpreter, the
children of all pools stay within the worker's slots, and a pool of another interpreter left idle is stopped."""
from __future__ import annotations

import time
from typing import Any, Callable

import pytest
import zmq

from zmqgrid.worker.pyenvs import probe_all
from zmqgrid.worker.pypools import IDLE_POOL_S, PyPools
from zmqgrid.worker.results import AttemptResult

from ..pyenv_helpers import make_venv
from .test_executors import task

pytestmark = pytest.mark.timeout(60)


class Driver:
    """The worker's loop in miniature over PyPools: a poller over every pool's children."""

    def __init__(self, size: int, python_envs: dict) -> None:
        self.poller = zmq.Poller()
        self.pools = PyPools(size=size, python_envs=python_envs, max_output_bytes=1 << 20, default_timeout_s=None,
                             kill_grace_s=1.0, watch=lambda fd: self.poller.register(fd, zmq.POLLIN),
                             unwatch=self.poller.unregister)
        self.results: dict[str, AttemptResult] = {}

    def until(self, predicate: Callable[[], Any], timeout_s: float = 30) -> Any:
        deadline = time.monotonic() + timeout_s
        while not (value := predicate()):
            assert time.monotonic() < deadline, "timed out driving the children"
            for fd, _ in self.poller.poll(50):
                if fd in self.pools.watched:
                    self.results.update((r.id, r) for r in self.pools.handle(fd))
            self.results.update((r.id, r) for r in self.pools.expire(time.monotonic()))
        return value

    def run(self, spec: dict) -> AttemptResult:
        assert self.pools.start_batch([(spec, None)]) == []
        return self.until(lambda: self.results.pop(spec["id"], None))


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    return make_venv(tmp_path_factory.mktemp("pools") / "venv")


def test_calls_run_in_the_interpreter_they_chose_and_the_pools_share_the_slots(venv):
    # Given a worker of one slot with one python env
    d = Driver(1, probe_all({"other": str(venv)}))
    try:
        # When a call of the worker's own interpreter runs, then one of the env
        plain = d.run(task("python", function="tests.tasks:add", args=[2, 3]))
        chosen = d.run(task("python", function="zgprobe:where", python_env="other"))

        # Then each ran where it should, and the env's child took the only slot's room: the idle child of the
        # default pool was retired for it
        assert plain.value == 5
        assert chosen.state == "done", chosen.error
        assert chosen.value["whose"] == "venv" and chosen.value["prefix"] == str(venv.parent.parent)
        assert d.pools.children() == 1 and len(d.pools.default.idle) == 0
        # And the default pool gets its room back the same way
        assert d.run(task("python", function="tests.tasks:add", args=[1, 1])).value == 2
        assert d.pools.children() == 1

        # When the env's pool has had no call for IDLE_POOL_S
        assert str(venv) in d.pools.pools
        d.pools.swept = 0.0
        d.pools.expire(time.monotonic() + IDLE_POOL_S)

        # Then it is stopped; the default pool stays
        assert str(venv) not in d.pools.pools and None in d.pools.pools
    finally:
        d.pools.close()


def test_a_call_for_an_interpreter_that_cannot_start_a_child_fails_at_once_with_one_line(tmp_path):
    # Given a python env whose interpreter answers that it cannot import the worker's modules
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\necho '{\"version\": \"3.9.99\", \"sys_path\": [], \"prefix\": \"/x\", "
                    "\"venv\": false, \"error\": \"SyntaxError: invalid syntax\"}'\n")
    fake.chmod(0o755)
    envs = probe_all({"old": str(fake)})
    assert envs["old"].version == "3.9.99"
    d = Driver(1, envs)
    try:
        # When a python call chooses it
        [result] = d.pools.start_batch([(task("python", function="zgprobe:where", python_env="old"), None)])

        # Then it fails at once, permanently, naming the interpreter and why; no child was started
        assert (result.state, result.error.type, result.error.permanent) == ("failed", "StartError", True)
        assert "python env old" in result.error.message and "SyntaxError" in result.error.message
        assert "\n" not in result.error.message and d.pools.children() == 0
    finally:
        d.pools.close()
