"""The worker daemon: registers, takes tasks within its credit, runs them, keeps results until acked."""
from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections import deque
from typing import Callable

import zmq

from ..config import Config, master_host_port
from ..errors import EXIT_KEY_REFUSED, EXIT_OK, ProtocolError
from ..protocol import Command, Error, Output, RegisterAck, ResultAck, Results, Tasks, decode
from ..security import worker_curve
from ..transport import send_frames, zmtp_heartbeat_ms
from .allow import admit
from .executors import Executor, Run
from .heartbeat import HeartbeatSender
from .metrics import system_info
from .commands import CommandsMixin
from .cutoff import HandshakeWatch, refused_at_handshake, told_by_master
from .outbox import Outbox, cancelled_result, failed_result
from .inline import InlineCalls
from .link import MasterLinkMixin
from .pyslots import FAST_CALL_S, PyRun, PySlots

logger = logging.getLogger(__name__)


class Worker(MasterLinkMixin, CommandsMixin):
    """Run with `serve()`; `stop()` (any thread or a signal handler) drains: running tasks are stopped and
    reported as cancelled so the master re-queues them at once."""

    def __init__(self, config: Config, reload_config: Callable[[], Config] | None = None) -> None:
        self.config = config
        self.reload_config = reload_config
        self.device_id = config.device_id
        self.capacity = config.concurrent_tasks + config.prefetch
        self.host, self.port = master_host_port(config.master_url)
        self.curve = worker_curve(config)     # None unless `curve` is on; a missing key file stops us here
        self.info = system_info(config.python_executable)
        self.executor = Executor(python_executable=config.python_executable, concurrency=config.concurrent_tasks,
                                 max_output_bytes=config.max_output_bytes,
                                 default_timeout_s=config.task_timeout or None, nice=config.task_nice,
                                 flood_mb_per_s=config.flood_output_mb_per_s)
        self.poller = zmq.Poller()
        self.pyslots = PySlots(size=config.concurrent_tasks, max_output_bytes=config.max_output_bytes,
                               default_timeout_s=config.task_timeout or None,
                               watch=lambda fd: self.poller.register(fd, zmq.POLLIN), unwatch=self.poller.unregister,
                               requeue=self._rehold, nice=config.task_nice,
                               max_tasks_per_child=config.max_tasks_per_child,
                               max_child_memory_mb=config.max_child_memory_mb)
        # Inline calls need the loop's thread for their timer: a worker is made in the thread that serves it.
        self.inline = InlineCalls(config.max_output_bytes, config.task_timeout or None) \
            if config.python_pool == "inline" else None
        self.ctx = zmq.Context()
        self.dealer: zmq.Socket | None = None
        self.handshake: HandshakeWatch | None = None   # under CURVE: the DEALER's handshakes, watched for ZAP's refusal
        self.exit_code = EXIT_OK              # EXIT_KEY_REFUSED once the master cut this worker's key off
        self.sub: zmq.Socket | None = None
        self.heartbeats: HeartbeatSender | None = None
        self.incarnation = ""                 # of the master we are registered with
        self.held: deque[dict] = deque()      # received, waiting for a free slot
        self.running: dict[str, Run] = {}     # task id -> its run
        self.outbox = Outbox(config.max_message_bytes)
        self.finished: queue.SimpleQueue = queue.SimpleQueue()
        self.lock = threading.Lock()          # guards held/running for the heartbeat thread's snapshot
        self._wake_r, self._wake_w = os.pipe()
        self._halt = threading.Event()
        self.registered = threading.Event()
        self.register_sent = 0.0
        self.register_backoff = 0.5
        self.reregister_at = 0.0              # a new master incarnation was seen: register at this time (jittered)
        self.side_sockets_stale = False
        self.last_beacon = time.monotonic()
        self.device_timeout_s = float(config.device_timeout)
        self.zmtp_heartbeat_ms = zmtp_heartbeat_ms(config.heartbeat_interval)
        self.draining = False                 # an operator drained this device: the master sends nothing new
        self.shutting_down = False            # drain, then exit once nothing is running or unacknowledged
        self.applied: deque[int] = deque(maxlen=64)   # seqs of commands applied under this incarnation
        self.live: dict[tuple[str, int], list] = {}   # (id, attempt) -> [[stream, text], ...] not sent yet
        self.live_lock = threading.Lock()
        self.live_flushed = 0.0
        self.started: list[list] = []         # [id, attempt] begun this turn, told with the next Results

    # ------------------------------------------------------------ lifecycle

    def stop(self) -> None:
        self._halt.set()
        os.write(self._wake_w, b"x")

    def owned(self) -> tuple[list, list, list]:
        """([id, attempt] running, [id, attempt] held: waiting for a slot or in the outbox, applied command
        seqs) — what every heartbeat reports."""
        with self.lock:
            return ([[tid, r.attempt] for tid, r in self.running.items()],
                    [[t["id"], t["attempt"]] for t in self.held] + self.outbox.keys(),
                    list(self.applied))

    def serve(self) -> int:
        """Run until stopped; returns the exit code (EXIT_KEY_REFUSED when the master cut this worker's key off)."""
        self.poller.register(self._wake_r, zmq.POLLIN)
        if self.inline is None:
            self.pyslots.prestart()
        elif not self.inline.enforces_timeouts:
            logger.warning("python_pool = inline: timeouts of python tasks are not enforced here (they need the "
                           "main thread of a POSIX process); an overrunning call still ends timed_out")
        self._connect()
        self._register()
        logger.info("worker device=%s connecting to tcp://%s:%d concurrency=%d python_pool=%s", self.device_id,
                    self.host, self.port, self.config.concurrent_tasks, self.config.python_pool)
        try:
            while not self._halt.is_set():
                deadline = self.pyslots.next_deadline()
                wait_ms = 100 if deadline is None else max(0, min(100, (deadline - time.monotonic()) * 1000))
                awake = (self.pyslots.reply_due() and not self.held) or self._inline_ready()
                events = dict(self.poller.poll(0 if awake else wait_ms))
                now = time.monotonic()
                if events.get(self._wake_r):
                    os.read(self._wake_r, 4096)
                for fd in [fd for fd in events if isinstance(fd, int) and fd in self.pyslots.watched]:
                    self._ended(self.pyslots.handle(fd))
                self._ended(self.pyslots.expire(now))
                if self.dealer in events:
                    self._drain_dealer(now)
                if self.handshake is not None and self.handshake.monitor in events and self.handshake.refused():
                    self._cut_off(refused_at_handshake(self.curve.public.decode()))
                if self.exit_code != EXIT_OK:
                    break
                if self.sub is not None and self.sub in events:
                    self._drain_sub(now)
                self._flush_output(now)
                self._collect_finished()
                self._start_held()
                self._flush_results(now)
                self._watch_master(now)
                if self.shutting_down and not (self.held or self.running or self.outbox):
                    logger.info("drained and idle: shutting down as the master asked")
                    self._halt.set()
            if self.exit_code == EXIT_OK:
                self._shutdown()
            else:
                self._abandon()
        finally:
            self.close()
        return self.exit_code

    def close(self) -> None:
        if self.heartbeats is not None:
            self.heartbeats.stop()
        self.pyslots.close()
        self.executor.close()
        if self.handshake is not None:
            self.handshake.close()
        for sock in (self.dealer, self.sub):
            if sock is not None:
                sock.close(0)
        self.ctx.term()
        os.close(self._wake_r)
        os.close(self._wake_w)
        logger.info("worker stopped device=%s", self.device_id)

    def _shutdown(self) -> None:
        """Stop every attempt, report them as cancelled (the master re-queues), wait briefly for the acks."""
        with self.lock:
            keys = [(t["id"], t["attempt"]) for t in self.held] + [(i, r.attempt) for i, r in self.running.items()]
        self._ended(self.pyslots.cancel_all("worker shutting down"))
        self._kill(keys, "worker shutting down")
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline and (self.running or self.outbox):
            self._collect_finished()
            self._flush_results(time.monotonic(), force=True)
            if self.dealer.poll(50):
                self._drain_dealer(time.monotonic())

    def _cut_off(self, why: str) -> None:
        """The master cut this worker's key off: say so once, with what to do, and stop."""
        if self.exit_code == EXIT_OK:
            logger.error("stopping (exit %d): %s", EXIT_KEY_REFUSED, why)
            self.exit_code = EXIT_KEY_REFUSED
            self._halt.set()

    def _abandon(self) -> None:
        """Stop with the key cut off: the master re-queued this worker's tasks already and reads nothing from it, so
        nothing more is sent (no heartbeats, no results, no waiting for acks); close() kills what still runs."""
        if self.heartbeats is not None:
            self.heartbeats.stop()
            self.heartbeats = None
        with self.lock:
            self.held.clear()

    # ------------------------------------------------------------ master -> worker

    def _drain_dealer(self, now: float) -> None:
        while True:
            try:
                frames = self.dealer.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                msg = decode(frames)
            except ProtocolError as e:
                logger.warning("bad message from master: %s", e)
                continue
            if isinstance(msg, Tasks):
                self.outbox.ack(msg.acks)
                with self.lock:
                    self.held.extend(admit(msg.tasks, self.config, self.outbox.add))   # refused: failed, Forbidden
            elif isinstance(msg, ResultAck):
                self.outbox.ack(msg.keys)
            elif isinstance(msg, RegisterAck):
                self._registered(msg, now)
            elif isinstance(msg, Command):
                self._apply(msg)
            elif isinstance(msg, Error):
                if msg.code == "revoked":
                    self._cut_off(told_by_master(msg.message))
                    return
                if msg.code == "not_registered":
                    if now - self.register_sent > 1.0:
                        logger.info("master does not know this device; registering again")
                        self._register()
                else:
                    logger.warning("master error %s: %s", msg.code, msg.message)

    # ------------------------------------------------------------ running tasks

    def _inline_ready(self) -> bool:
        """Inline, tasks wait in `held` with a slot free (the rest of a batch, or a shell task behind it): the loop
        must not sleep before it starts them."""
        return self.inline is not None and bool(self.held) and self._executing() < self.config.concurrent_tasks

    def _start_held(self) -> None:
        started, inline = [], []
        with self.lock:
            while self.held and (free := self.config.concurrent_tasks - self._executing()) > 0:
                if self.held[0].get("kind") == "python":
                    # Inline, calls of functions seen to be fast run together (as in one child), others alone.
                    count = self.pyslots.batch_size(self.held, free if self.inline is None else 1)
                    tasks = [self.held.popleft() for _ in range(count)]
                    for task in tasks:
                        self.running[task["id"]] = PyRun(task["id"], task["attempt"])
                    keys = [[t["id"], t["attempt"]] for t in tasks]
                    if self.inline is not None:
                        inline = tasks
                        if self.pyslots.observed(tasks[0]) < FAST_CALL_S:
                            started += keys   # calls seen to return quickly: told with their results
                        else:   # told before the call, with the results waiting: one that kills this worker is
                            self.started += started + keys   # then known to have started
                            started = []
                            self._flush_results(time.monotonic())
                        break   # run below, without the lock: the heartbeat thread reads `running` meanwhile
                    if self.outbox.freed or not self.registered.is_set():
                        started += keys   # they ride on this turn's Results
                    else:   # alone: sent before the child can begin, and read by the master while they run
                        send_frames(self.dealer, Results([], 0, keys).encode())
                    for failed in self.pyslots.start_batch([(t, self._output_to(t)) for t in tasks]):
                        self.finished.put(failed)
                    continue
                task = self.held.popleft()
                started.append([task["id"], task["attempt"]])
                run = self.executor.start(task, on_output=self._output_to(task))
                self.running[task["id"]] = run
                threading.Thread(target=self._wait_run, args=(run,), daemon=True,
                                 name=f"task-{task['id']}").start()
        # Told in this very turn (with the results, or alone), so a task that kills this worker is known to
        # have run, not merely to have been handed over.
        self.started.extend(started)
        if inline:
            results, rest = self.inline.run(inline)
            for task, result in zip(inline, results):
                self.pyslots.observe(task["function"], result["duration_s"])
            self._ended(results)
            self._rehold(rest)   # the turn's budget is spent: results go out, then the rest run

    def _executing(self) -> int:
        """Slots in use: shell and script runs, and python children busy with a batch."""
        return len(self.running) - len(self.pyslots.by_key) + self.pyslots.busy_children

    def _output_to(self, task: dict) -> Callable[[str, str], None]:
        key = (task["id"], task["attempt"])
        return lambda stream, text: self._on_output(key, stream, text)

    def _rehold(self, tasks: list[dict]) -> None:
        """Calls a python child did not finish before it was killed: first in line again."""
        with self.lock:
            for task in tasks:
                self.running.pop(task["id"], None)
            self.held.extendleft(reversed(tasks))

    def _wait_run(self, run: Run) -> None:
        try:
            result = run.wait()
        except Exception as e:  # an executor bug must still end the attempt, or the slot leaks forever
            logger.exception("executor failed task=%s", run.task_id)
            result = failed_result(run.task_id, run.attempt, e)
        self.finished.put(result)
        os.write(self._wake_w, b"r")

    def _ended(self, results: list[dict]) -> None:
        for result in results:
            with self.lock:
                self.running.pop(result["id"], None)
            self.outbox.add(result)

    def _on_output(self, key: tuple[str, int], stream: str, text: str) -> None:
        with self.live_lock:
            self.live.setdefault(key, []).append([stream, text])

    def _flush_output(self, now: float) -> None:
        """Live output goes to the master at most every quarter second, batched across tasks."""
        if not self.live or now - self.live_flushed < 0.25 or not self.registered.is_set():
            return
        self.live_flushed = now
        with self.live_lock:
            live, self.live = self.live, {}
        # One chunk per task and stream (Output.chunks is bounded; a chatty task writes thousands of pieces).
        chunks = [[key[0], key[1], stream, text] for key, parts in live.items() for stream in ("stdout", "stderr")
                  if (text := "".join(t for s, t in parts if s == stream))]
        send_frames(self.dealer, Output(chunks).encode())

    def _collect_finished(self) -> None:
        """Results of shell and script runs, put by their waiting threads (this loop is the only reader)."""
        while not self.finished.empty():
            self._ended([self.finished.get_nowait()])

    def _kill(self, keys: list[tuple], reason: str) -> None:
        wanted = {k for k in keys if len(k) == 2}
        with self.lock:
            runs = [r for tid, r in self.running.items() if (tid, r.attempt) in wanted]
        for run in runs:
            if isinstance(run, PyRun):
                self._ended(self.pyslots.kill((run.task_id, run.attempt), reason))
            else:
                run.kill(reason)
        with self.lock:   # after the runs: a killed python batch gives its unfinished calls back to `held`
            dropped = [t for t in self.held if (t["id"], t["attempt"]) in wanted]
            self.held = deque(t for t in self.held if (t["id"], t["attempt"]) not in wanted)
        for task in dropped:
            self.outbox.add(cancelled_result(task, reason))

    def _flush_results(self, now: float, force: bool = False) -> None:
        if self.registered.is_set() or force:
            started, self.started = self.started, []
            for msg in self.outbox.messages(now, started):
                send_frames(self.dealer, msg.encode())
