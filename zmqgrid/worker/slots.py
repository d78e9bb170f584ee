"""A worker's slots: the tasks held for a free slot, the attempts running, and the outbox of their results.

The worker's loop thread drives it; the heartbeat thread reads `owned()`, and the threads waiting for shell and
script runs hand their results in through `finished`. What goes to the master is given to `send`, only while
`connected()` says the worker is registered (the outbox keeps results until then).
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Mapping
from typing import Callable

from ..config import Config
from ..protocol import Message, Results, Tasks
from .allow import admit
from .executors import Executor, Run
from .inline import InlineCalls
from .live import LiveOutput
from .outbox import Outbox
from .procrecord import ProcessRecord
from .projects import ProjectGate
from .prefetch import Prefetch
from .pycalls import PyRun
from .pyenvs import PythonEnv
from .pypools import PyPools
from .pyslots import FAST_CALL_S
from .results import AttemptResult

logger = logging.getLogger(__name__)


class Slots:
    """`take` tasks from the master, `start_held` them as slots free up, `ended` results go to the outbox and are
    sent by `flush_results`; `kill` stops attempts wherever they are (held, running)."""

    def __init__(self, config: Config, *, record: ProcessRecord | None, watch: Callable[[int], None],
                 unwatch: Callable[[int], None], send: Callable[[Message], None], connected: Callable[[], bool],
                 wake: Callable[[], None], gate: ProjectGate, pyenvs: Mapping[str, PythonEnv] | None = None) -> None:
        self.config = config
        self.gate = gate   # tasks of a project wait there, holding no slot, until their copy is ready
        self.prefetch = Prefetch(config.concurrent_tasks, config.prefetch)   # held beyond the slots: fixed or adaptive
        self.granted = 0   # credit the master holds for this worker, by its count (docs/architecture.md, "credit")
        self.executor = Executor(python_executable=config.python_executable, concurrency=config.concurrent_tasks,
                                 max_output_bytes=config.max_output_bytes,
                                 default_timeout_s=config.task_timeout or None, nice=config.task_nice,
                                 flood_mb_per_s=config.flood_output_mb_per_s, use_cgroups=config.task_cgroups,
                                 record=record, python_envs=pyenvs)
        self.pyenvs = pyenvs or {}
        # a pool per interpreter: the worker's own, a project environment's, a python env's
        self.pypools = PyPools(python_envs=pyenvs, size=config.concurrent_tasks,
                               max_output_bytes=config.max_output_bytes, default_timeout_s=config.task_timeout or None,
                               watch=watch, unwatch=unwatch,
                               requeue=self.rehold, nice=config.task_nice,
                               max_tasks_per_child=config.max_tasks_per_child,
                               max_child_memory_mb=config.max_child_memory_mb, record=record)
        # Inline calls need the loop's thread for their timer: a worker is made in the thread that serves it.
        self.inline = InlineCalls(config.max_output_bytes, config.task_timeout or None) \
            if config.python_pool == "inline" else None
        self.held: deque[dict] = deque()      # received, waiting for a free slot
        self.running: dict[str, Run | PyRun] = {}   # task id -> its run
        self.outbox = Outbox(config.max_message_bytes)
        self.live = LiveOutput()
        self.finished: queue.SimpleQueue = queue.SimpleQueue()
        self.lock = threading.Lock()          # guards held/running for the heartbeat thread's snapshot
        self.started: list[list] = []         # [id, attempt] begun this turn, told with the next Results
        self.returned: list[dict] = []        # held tasks handed back this turn, told with it too
        self.begun: set[str] = set()          # held again after they started (a python child died): never returned
        self._send, self._connected, self._wake = send, connected, wake

    # ------------------------------------------------------------ what the master is told

    def owned(self) -> tuple[list, list]:
        """([id, attempt] running, [id, attempt] held: waiting for a slot or in the outbox), for a heartbeat."""
        with self.lock:
            return ([[tid, r.attempt] for tid, r in self.running.items()],
                    [[t["id"], t["attempt"]] for t in self.held] + self.gate.keys() + self.outbox.keys())

    def holdings(self) -> tuple[int, list, list]:
        """(credit, [id, attempt] running or held, [id, attempt] in the outbox) for a Register, which states the
        credit absolutely: the slots freed since the last Results are counted in it."""
        with self.lock:
            # Returns that never went out (no connection since) are still this worker's as the master sees them:
            # held again and reported, or the master would count them lost
            self.held.extendleft(reversed(self.returned))
            self.returned = []
            owned = [[tid, r.attempt] for tid, r in self.running.items()] + [[t["id"], t["attempt"]] for t in self.held]
            owned += self.gate.keys()
        self.outbox.freed = 0
        self.granted = max(0, self.config.concurrent_tasks + self.prefetch.size(time.monotonic()) - len(owned))
        return self.granted, owned, self.outbox.keys()

    def about(self) -> dict:
        """What a heartbeat tells of the prefetch: the tasks held beyond the slots now, and whether adaptive."""
        return {"prefetch": self.prefetch.current, "prefetch_adaptive": self.prefetch.adaptive}

    def drop_held(self) -> None:
        """Forget the tasks waiting for a slot (the master re-queued them already)."""
        with self.lock:
            self.held.clear()

    def resize(self, fresh: Config) -> None:
        """A reloaded config's concurrency (the shared Config holds its other fields already)."""
        self.prefetch.resize(fresh.concurrent_tasks, fresh.prefetch)
        self.pypools.size = fresh.concurrent_tasks

    def idle(self) -> bool:
        """Nothing held, running or unacknowledged."""
        return not (self.held or self.running or self.outbox or self.gate.count())

    def unsettled(self) -> bool:
        """Something still runs or waits for the master's acknowledgement."""
        return bool(self.running or self.outbox)

    # ------------------------------------------------------------ the loop's turn

    def prepare(self) -> None:
        if self.inline is not None and not self.inline.enforces_timeouts:
            logger.warning("python_pool = inline: timeouts of python tasks are not enforced here (they need the "
                           "main thread of a POSIX process); an overrunning call still ends timed_out")

    def poll_timeout_ms(self) -> float:
        """How long the loop may sleep: until the next python call's deadline (at most 100 ms), or not at all when
        a reply is due at once or inline calls wait for a free slot."""
        deadline = self.pypools.next_deadline()
        wait_ms = 100 if deadline is None else max(0, min(100, (deadline - time.monotonic()) * 1000))
        awake = (self.pypools.reply_due() and not self.held) or self._inline_ready()
        return 0 if awake else wait_ms

    def handle(self, events: dict, now: float) -> None:
        """Python children whose pipe or sentinel is readable, and calls past their deadline."""
        for fd in [fd for fd in events if isinstance(fd, int) and fd in self.pypools.watched]:
            self.ended(self.pypools.handle(fd))
        self.ended(self.pypools.expire(now))

    def take(self, msg: Tasks) -> None:
        if msg.acks:
            self.prefetch.answered(time.monotonic())
        self.granted = max(0, self.granted - len(msg.tasks))
        self.outbox.ack(msg.acks)
        # refused: failed, Forbidden
        runnable = self.gate.admit(admit(msg.tasks, self.config, self.outbox.add, self.pyenvs))
        with self.lock:
            self.held.extend(runnable)

    def release(self, tasks: list[dict]) -> None:
        """Tasks whose project copy became ready: they wait for a slot as any other."""
        with self.lock:
            self.held.extend(tasks)

    def active_ids(self) -> set[str]:
        """Ids of the tasks held for a slot or running."""
        with self.lock:
            return {t["id"] for t in self.held} | set(self.running)

    def ack(self, keys: list) -> None:
        self.prefetch.answered(time.monotonic())
        self.outbox.ack(keys)

    def resend_all(self) -> None:
        """Everything not yet acknowledged goes to the master at the next flush (a new registration)."""
        self.outbox.resend_all()

    def close(self) -> None:
        self.pypools.close()
        self.executor.close()

    # ------------------------------------------------------------ running tasks

    def _inline_ready(self) -> bool:
        """Inline, tasks wait in `held` with a slot free (the rest of a batch, or a shell task behind it): the loop
        must not sleep before it starts them."""
        return self.inline is not None and bool(self.held) and self._executing() < self.config.concurrent_tasks

    def start_held(self) -> None:
        started, inline = [], []
        began, now = self.prefetch.began, time.monotonic()
        with self.lock:
            while self.held and (free := self.config.concurrent_tasks - self._executing()) > 0:
                if self.held[0].get("kind") == "python":
                    # Inline, calls of functions seen to be fast run together (as in one child), others alone.
                    count = self.pypools.batch_size(self.held, free if self.inline is None else 1)
                    tasks = [self.held.popleft() for _ in range(count)]
                    for task in tasks:
                        self.running[task["id"]] = PyRun(task["id"], task["attempt"])
                        began(task["id"], now)
                    keys = [[t["id"], t["attempt"]] for t in tasks]
                    if self.inline is not None:
                        inline = tasks
                        if self.pypools.observed(tasks[0]) < FAST_CALL_S:
                            started += keys   # calls seen to return quickly: told with their results
                        else:   # told before the call, with the results waiting: one that kills this worker is
                            self.started += started + keys   # then known to have started
                            started = []
                            self.flush_results(time.monotonic())
                        break   # run below, without the lock: the heartbeat thread reads `running` meanwhile
                    if self.outbox.freed or not self._connected():
                        started += keys   # they ride on this turn's Results
                    else:   # alone: sent before the child can begin, and read by the master while they run
                        self._send(Results([], 0, keys))
                    for failed in self.pypools.start_batch([(t, self._output_to(t)) for t in tasks]):
                        self.finished.put(failed)
                    continue
                task = self.held.popleft()
                started.append([task["id"], task["attempt"]])
                run = self.executor.start(task, on_output=self._output_to(task))
                self.running[task["id"]] = run
                began(task["id"], now)
                self.executor.runners.submit(self._wait_run, run)
        # Told in this very turn (with the results, or alone), so a task that kills this worker is known to
        # have run, not merely to have been handed over.
        self.started.extend(started)
        if inline:
            results, rest = self.inline.run(inline)
            for task, result in zip(inline, results):
                self.pypools.observe(task["function"], result.duration_s)
            self.ended(results)
            self.rehold(rest)   # the turn's budget is spent: results go out, then the rest run
        if self.held and self._connected() and self._executing() >= self.config.concurrent_tasks \
                and self.prefetch.give_back(now):
            self._give_back()

    def _executing(self) -> int:
        """Slots in use: shell and script runs, and python children busy with a batch."""
        return len(self.running) - len(self.pypools.by_key) + self.pypools.busy_children

    def _output_to(self, task: dict) -> Callable[[str, str], None]:
        key = (task["id"], task["attempt"])
        return lambda stream, text: self.live.add(key, stream, text)

    def rehold(self, tasks: list[dict]) -> None:
        """Calls a python child did not finish before it was killed: first in line again."""
        with self.lock:
            for task in tasks:
                self.running.pop(task["id"], None)
                self.prefetch.ended(task["id"], None)
                self.begun.add(task["id"])   # the master knows it started: it must run here
            self.held.extendleft(reversed(tasks))

    def _wait_run(self, run: Run) -> None:
        try:
            result = run.wait()
        except Exception as e:  # an executor bug must still end the attempt, or the slot leaks forever
            logger.exception("executor failed task=%s", run.task_id)
            result = AttemptResult.crashed(run.task_id, run.attempt, e)
        self.finished.put(result)
        self._wake()

    def ended(self, results: list[AttemptResult]) -> None:
        ended = self.prefetch.ended
        for result in results:
            with self.lock:
                self.running.pop(result.id, None)
            ended(result.id, result.duration_s if result.started_at is not None else None)
            self.begun.discard(result.id)
            self.outbox.add(result)

    def collect_finished(self) -> None:
        """Results of shell and script runs, put by their waiting threads (this loop is the only reader)."""
        while not self.finished.empty():
            self.ended([self.finished.get_nowait()])

    def kill(self, keys: list[tuple], reason: str) -> None:
        wanted = {k for k in keys if len(k) == 2}
        with self.lock:
            runs = [r for tid, r in self.running.items() if (tid, r.attempt) in wanted]
        for run in runs:
            if isinstance(run, PyRun):
                self.ended(self.pypools.kill((run.task_id, run.attempt), reason))
            else:
                run.kill(reason)
        with self.lock:   # after the runs: a killed python batch gives its unfinished calls back to `held`
            dropped = [t for t in self.held if (t["id"], t["attempt"]) in wanted]
            self.held = deque(t for t in self.held if (t["id"], t["attempt"]) not in wanted)
        dropped += self.gate.drop(wanted)
        for task in dropped:
            self.begun.discard(task["id"])   # it ends here: a later attempt of it starts unmarked
            self.outbox.add(AttemptResult.cancelled_before_start(task["id"], task["attempt"], reason))

    def cancel_held(self, reason: str) -> None:
        """Report every task held but not started as cancelled: a stopping worker starts nothing more."""
        with self.lock:
            keys = [(t["id"], t["attempt"]) for t in self.held]
        if keys:
            self.kill(keys, reason)

    def stop_all(self, reason: str) -> None:
        """Stop every attempt, held or running: each is reported as cancelled, so the master re-queues it."""
        with self.lock:
            keys = [(t["id"], t["attempt"]) for t in self.held] + [(i, r.attempt) for i, r in self.running.items()]
        keys += [tuple(key) for key in self.gate.keys()]
        self.ended(self.pypools.cancel_all(reason))
        self.kill(keys, reason)

    # ------------------------------------------------------------ sending

    def flush_output(self, now: float) -> None:
        """Live output goes to the master at most every quarter second, batched across tasks."""
        if self._connected() and (output := self.live.take(now)) is not None:
            self._send(output)

    def flush_results(self, now: float, force: bool = False) -> None:
        """Results, the credit this worker adds (its target less what it holds and what the master holds for it),
        and the keys started or handed back this turn."""
        if self._connected() or force:
            started, self.started = self.started, []
            returned = [[t["id"], t["attempt"]] for t in self.returned]
            self.returned = []
            holding = len(self.running) + len(self.held) + self.gate.count()   # this thread is their only writer
            credit = max(0, self.config.concurrent_tasks + self.prefetch.size(now) - holding - self.granted)
            sent = False
            for msg in self.outbox.messages(now, started, credit, returned):
                self._send(msg)
                sent = sent or bool(msg.results)
            if sent:
                self.prefetch.sent(now)
            self.granted += credit

    def _give_back(self) -> None:
        """Every slot runs a long attempt: what waits for one goes back to the master, for another worker's free
        slot (docs/architecture.md, "Returns"). Tasks that started once stay: the master knows them running."""
        with self.lock:
            back = [t for t in self.held if t["id"] not in self.begun]
            if not back:
                return
            self.held = deque(t for t in self.held if t["id"] in self.begun)
        self.returned += back
        logger.debug("every slot runs a long task: %d held tasks handed back to the master", len(back))
