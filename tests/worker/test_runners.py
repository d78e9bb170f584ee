"""The threads that wait for shell and script runs: kept for the next run, never shared by two runs at once."""
from __future__ import annotations

import threading

import pytest

from zmqgrid.worker.runners import Runners

from ..helpers import wait_until

pytestmark = pytest.mark.timeout(30)


def named(name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == name]


def test_a_thread_is_kept_for_the_next_run_and_ends_at_close():
    runners = Runners(name="test-runners-kept")
    seen: list[int] = []
    for _ in range(5):
        done = threading.Event()
        runners.submit(lambda: (seen.append(threading.get_ident()), done.set()))
        done.wait(10)
        wait_until(lambda: runners._idle == 1, 10, "the thread to wait for the next run")
    assert len(set(seen)) == 1 and len(named("test-runners-kept")) == 1
    runners.close()
    wait_until(lambda: not named("test-runners-kept"), 10, "the idle thread to end")


def test_runs_at_once_each_get_a_thread():
    runners = Runners(name="test-runners-many")
    release = threading.Event()
    started = threading.Semaphore(0)
    for _ in range(4):
        runners.submit(lambda: (started.release(), release.wait(10)))
    for _ in range(4):
        assert started.acquire(timeout=10)   # all four run at once: none waits for another's end
    release.set()
    runners.close()
    wait_until(lambda: not named("test-runners-many"), 10, "the threads to end")


def test_a_thread_left_at_a_tasks_niceness_is_not_used_again():
    lowered = threading.local()
    runners = Runners(lambda: getattr(lowered, "yes", False), name="test-runners-lowered")
    seen: list[int] = []

    def job(lower: bool) -> None:
        seen.append(threading.get_ident())
        lowered.yes = lower

    runners.submit(job, True)
    wait_until(lambda: seen and not named("test-runners-lowered"), 10, "the lowered thread to end")
    runners.submit(job, False)
    wait_until(lambda: len(seen) == 2, 10, "the second run")
    assert runners._idle in (0, 1)
    wait_until(lambda: runners._idle == 1, 10, "a fresh thread to wait for the next run")
    runners.close()
