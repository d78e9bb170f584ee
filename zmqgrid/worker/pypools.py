"""A python pool per interpreter (docs/architecture.md, "A pool per interpreter"): calls of a project with an
environment run in children of that environment's interpreter, calls that chose one of the worker's `python_envs`
in children of that one, the others in the default pool of the worker's own interpreter. The pools share the
worker's slots: their children together stay within `size`, and a pool of another interpreter that ran nothing
for IDLE_POOL_S is stopped.

PyPools answers what the worker's Slots asks of one PySlots; each call goes to the pool of its interpreter, and a
batch holds calls of one interpreter only.
"""
from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Mapping
from typing import Callable

from ..model import TaskError, TaskState
from .projects import copy_of
from .pycalls import Call, OutputCallback
from .pyenvs import PythonEnv
from .pyslots import PySlots
from .pyspawn import Launch
from .results import AttemptResult

logger = logging.getLogger(__name__)
IDLE_POOL_S = 60.0     # a pool of another interpreter with no call for this long is stopped
SWEEP_S = 1.0          # how often idle pools are looked for


class PyPools:
    """The default pool, made at once (it starts no child before the first call), and one per other interpreter,
    made at its first call. `by_key`, `watched` and the functions' durations are one for all pools."""

    def __init__(self, *, size: int, watch: Callable[[int], None], unwatch: Callable[[int], None],
                 python_envs: Mapping[str, PythonEnv] | None = None, **options) -> None:
        self._size, self._watch, self._unwatch = size, watch, unwatch
        self.python_envs = python_envs or {}
        self.options = options   # what each PySlots is made with (timeouts, recycling, requeue, record)
        self.by_key: dict[tuple[str, int], Call] = {}
        self.watched: set[int] = set()
        self.durations: dict[str, float] = {}
        self.owner: dict[int, PySlots] = {}   # a watched fd -> the pool of its child
        self.pools: dict[str | None, PySlots] = {}
        self.default = self._pool(None, None)
        self.swept = time.monotonic()

    # ------------------------------------------------------------ the pools

    def _pool(self, key: str | None, launch: Launch | None) -> PySlots:
        pool = self.pools.get(key)
        if pool is None:
            def watch(fd: int) -> None:
                self.owner[fd] = pool
                self._watch(fd)

            def unwatch(fd: int) -> None:
                self.owner.pop(fd, None)
                self._unwatch(fd)

            pool = PySlots(size=self._size, watch=watch, unwatch=unwatch, launch=launch, room=self._room,
                           **self.options)
            pool.by_key, pool.watched, pool.durations = self.by_key, self.watched, self.durations   # shared
            self.pools[key] = pool
            if key is not None:
                logger.info("python pool started for %s", key)
        return pool

    def _room(self) -> int:
        return self._size - self.children()

    def children(self) -> int:
        return sum(len(p.idle) + p.busy_children for p in self.pools.values())

    def route(self, task: dict) -> tuple[str | None, Launch | None, str]:
        """(pool key, how its children start, why they cannot) for a call: its project's environment, else the
        python env it chose, else the worker's own interpreter (key None)."""
        copy = copy_of(task)
        env = copy.env if copy is not None else None
        if env is not None and env.env_dir is not None and env.python is not None:
            why = "" if env.zmqgrid_importable else (
                f"the environment {env.key} of project {task.get('project')} cannot start a python pool child: its "
                "interpreter cannot import zmqgrid.worker.pypool (see the worker's log)")
            return str(env.python), Launch(str(env.python), env.sys_path), why
        name = task.get("python_env")
        if name:
            pyenv = self.python_envs.get(name)
            if pyenv is None or not pyenv.version:
                return name, None, f"this worker has no python env {name!r}"
            return pyenv.executable, pyenv.launch, pyenv.call_error
        return None, None, ""

    @property
    def size(self) -> int:
        return self._size

    @size.setter
    def size(self, size: int) -> None:
        self._size = size
        for pool in self.pools.values():
            pool.size = size

    @property
    def busy_children(self) -> int:
        return sum(p.busy_children for p in self.pools.values())

    # ------------------------------------------------------------ starting

    def observe(self, function: str, duration: float) -> None:
        self.default.observe(function, duration)

    def observed(self, task: dict) -> float:
        return self.default.observed(task)

    def batch_size(self, waiting: deque[dict], free_children: int) -> int:
        """As PySlots.batch_size, and only calls of the first one's interpreter."""
        most = self.default.batch_size(waiting, free_children)
        if most <= 1:
            return most
        key = _key(waiting[0], self.route)
        n = 1
        while n < most and _key(waiting[n], self.route) == key:
            n += 1
        return n

    def start_batch(self, items: list[tuple[dict, OutputCallback | None]]) -> list[AttemptResult]:
        key, launch, why = self.route(items[0][0])
        if why:
            return [AttemptResult(task["id"], task["attempt"], TaskState.FAILED,
                                  error=TaskError("StartError", why, permanent=True)) for task, _ in items]
        pool = self._pool(key, launch)
        if not pool.idle and self._room() <= 0:
            self._make_room(pool)
        return pool.start_batch(items)

    def _make_room(self, needy: PySlots) -> None:
        """Retire an idle child of the pool used longest ago, so `needy` may start one."""
        for pool in sorted(self.pools.values(), key=lambda p: p.last_used):
            if pool is not needy and pool.retire_idle():
                return

    def reply_due(self) -> bool:
        return self.busy_children == 1 and any(p.reply_due() for p in self.pools.values())

    # ------------------------------------------------------------ replies, deadlines, cancels

    def handle(self, fd: int) -> list[AttemptResult]:
        pool = self.owner.get(fd)
        return pool.handle(fd) if pool is not None else []

    def expire(self, now: float) -> list[AttemptResult]:
        results = []
        for pool in list(self.pools.values()):
            if pool.batches:
                results += pool.expire(now)
        if now - self.swept >= SWEEP_S:
            self.swept = now
            self._stop_idle(now)
        return results

    def _stop_idle(self, now: float) -> None:
        for key, pool in list(self.pools.items()):
            if key is not None and not pool.batches and now - pool.last_used >= IDLE_POOL_S:
                pool.close()
                del self.pools[key]
                logger.info("python pool for %s stopped: no call for %.0f s", key, IDLE_POOL_S)

    def next_deadline(self) -> float | None:
        deadlines = [d for p in self.pools.values() if p.batches and (d := p.next_deadline()) is not None]
        return min(deadlines) if deadlines else None

    def kill(self, key: tuple[str, int], reason: str) -> list[AttemptResult]:
        call = self.by_key.get(key)
        if call is None or call.batch is None:
            return []
        fd = call.batch.child.conn.fileno()
        pool = next((p for p in self.pools.values() if fd in p.batches), None)
        return pool.kill(key, reason) if pool is not None else []

    def cancel_all(self, reason: str) -> list[AttemptResult]:
        return [result for pool in list(self.pools.values()) for result in pool.cancel_all(reason)]

    def close(self) -> None:
        for pool in list(self.pools.values()):
            pool.close()


def _key(task: dict, route: Callable[[dict], tuple]) -> str | None:
    """The pool a call goes to; at once for the usual call, of no project and no python env (it runs per call)."""
    if "_project" not in task and not task.get("python_env"):
        return None
    return route(task)[0]
