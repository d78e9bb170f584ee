"""The worker daemon: registers, takes tasks within its credit, runs them, keeps results until acked."""
from __future__ import annotations

import logging
import os
import queue
import random
import threading
import time
from collections import deque
from typing import Callable

import zmq

from ..config import Config, master_host_port
from ..errors import ProtocolError
from ..protocol import (BEACON_TOPIC, Beacon, Command, Error, Output, Register, RegisterAck, ResultAck, Results,
                        Tasks, decode)
from ..security import worker_curve
from ..transport import make_socket, zmtp_heartbeat_ms
from .allow import admit, advertised_tags
from .executors import Executor, Run
from .heartbeat import HeartbeatSender
from .metrics import system_info
from .commands import CommandsMixin
from .outbox import Outbox, cancelled_result, failed_result
from .pyslots import PyRun, PySlots

logger = logging.getLogger(__name__)
VERSION = "0.1.0"


class Worker(CommandsMixin):
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
                                 default_timeout_s=config.task_timeout or None, nice=config.task_nice)
        self.poller = zmq.Poller()
        self.pyslots = PySlots(size=config.concurrent_tasks, max_output_bytes=config.max_output_bytes,
                               default_timeout_s=config.task_timeout or None,
                               watch=lambda fd: self.poller.register(fd, zmq.POLLIN), unwatch=self.poller.unregister,
                               requeue=self._rehold, nice=config.task_nice,
                               max_tasks_per_child=config.max_tasks_per_child,
                               max_child_memory_mb=config.max_child_memory_mb)
        self.ctx = zmq.Context()
        self.dealer: zmq.Socket | None = None
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

    def _connect(self) -> None:
        """(Re)open the DEALER: a fresh socket drops whatever was queued for a master that went away."""
        if self.dealer is not None:
            self.poller.unregister(self.dealer)
            self.dealer.close(0)
        self.dealer = make_socket(self.ctx, zmq.DEALER, max_message_bytes=self.config.max_message_bytes,
                                  identity=self.device_id.encode(), sndhwm=0, rcvhwm=0, curve=self.curve,
                                  zmtp_heartbeat_ms=self.zmtp_heartbeat_ms)
        self.dealer.connect(f"tcp://{self.host}:{self.port}")
        self.poller.register(self.dealer, zmq.POLLIN)

    def _register(self) -> None:
        with self.lock:
            running = [[tid, r.attempt] for tid, r in self.running.items()]
            held = [[t["id"], t["attempt"]] for t in self.held]
        credit = max(0, self.capacity - len(running) - len(held))
        self.outbox.freed = 0   # Register states the credit absolutely
        info = self.info
        msg = Register(self.device_id, self.config.device_name or self.device_id, info["hostname"], info["os"],
                       info["python_version"], info["python_executable"], advertised_tags(self.config),
                       self.config.concurrent_tasks, credit, running + held, self.outbox.keys(),
                       os.getpid(), VERSION, float(self.config.weight))
        self.dealer.send_multipart(msg.encode())
        self.register_sent = time.monotonic()
        self.registered.clear()
        self.reregister_at = 0.0   # this is the Register a beacon may have scheduled
        logger.debug("register sent device=%s credit=%d", self.device_id, credit)

    def serve(self) -> None:
        self.poller.register(self._wake_r, zmq.POLLIN)
        self.pyslots.prestart()
        self._connect()
        self._register()
        logger.info("worker device=%s connecting to tcp://%s:%d concurrency=%d", self.device_id, self.host,
                    self.port, self.config.concurrent_tasks)
        try:
            while not self._halt.is_set():
                deadline = self.pyslots.next_deadline()
                wait_ms = 100 if deadline is None else max(0, min(100, (deadline - time.monotonic()) * 1000))
                events = dict(self.poller.poll(0 if self.pyslots.reply_due() and not self.held else wait_ms))
                now = time.monotonic()
                if events.get(self._wake_r):
                    os.read(self._wake_r, 4096)
                for fd in [fd for fd in events if isinstance(fd, int) and fd in self.pyslots.watched]:
                    self._ended(self.pyslots.handle(fd))
                self._ended(self.pyslots.expire(now))
                if self.dealer in events:
                    self._drain_dealer(now)
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
            self._shutdown()
        finally:
            self.close()

    def close(self) -> None:
        if self.heartbeats is not None:
            self.heartbeats.stop()
        self.pyslots.close()
        self.executor.close()
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
                if msg.code == "not_registered":
                    if now - self.register_sent > 1.0:
                        logger.info("master does not know this device; registering again")
                        self._register()
                else:
                    logger.warning("master error %s: %s", msg.code, msg.message)

    def _registered(self, msg: RegisterAck, now: float) -> None:
        if self.heartbeats is None or msg.incarnation != self.incarnation or self.side_sockets_stale:
            self.side_sockets_stale = False
            self._connect_side_sockets(msg)
        if msg.incarnation != self.incarnation:
            self.applied.clear()    # command seqs start again with each master incarnation
        self.incarnation = msg.incarnation
        self.device_timeout_s = msg.device_timeout_s
        self.register_backoff = 0.5
        self.last_beacon = now
        self.heartbeats.incarnation = msg.incarnation
        self.registered.set()
        if msg.cancel:
            self._kill([tuple(k) for k in msg.cancel], "the master gave this task to another worker")
        self.outbox.resend_all()   # everything not yet acknowledged goes to this master
        logger.info("registered with master incarnation=%s outbox=%d running=%d", msg.incarnation,
                    len(self.outbox), len(self.running))

    def _connect_side_sockets(self, msg: RegisterAck) -> None:
        if self.sub is not None:
            self.poller.unregister(self.sub)
            self.sub.close(0)
        # No ZMTP pings of its own: the beacon is the SUB's heartbeat (none for 2 x device_timeout reconnects it, see
        # _watch_master) and the master's PUB pings it already. Its own pings were 1,000 more packets a second into
        # the master's I/O thread per 1,000 workers (tools/bench_fleet.py).
        self.sub = make_socket(self.ctx, zmq.SUB, max_message_bytes=self.config.max_message_bytes, curve=self.curve)
        for topic in (BEACON_TOPIC, *self.topics()):
            self.sub.setsockopt(zmq.SUBSCRIBE, topic)
        self.sub.connect(f"tcp://{self.host}:{msg.pub_port}")
        self.poller.register(self.sub, zmq.POLLIN)
        if self.heartbeats is not None:
            self.heartbeats.stop()
        self.heartbeats = HeartbeatSender(self.ctx, f"tcp://{self.host}:{msg.heartbeat_port}", self.device_id,
                                          msg.heartbeat_interval_s, self.owned, self.config.enable_monitoring,
                                          self.config.max_message_bytes, self.info, self.curve)
        self.heartbeats.start()

    def topics(self) -> list[bytes]:
        return [b"all", f"device.{self.device_id}".encode(), *(f"tag.{t}".encode() for t in self.config.tags)]

    def _drain_sub(self, now: float) -> None:
        mine = set(self.topics())
        while True:
            try:
                frames = self.sub.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            if frames[0] != BEACON_TOPIC and frames[0] not in mine:
                continue    # SUBSCRIBE matches prefixes: device.w1 also receives device.w10
            try:
                msg = decode(frames[1:])
            except ProtocolError as e:
                logger.warning("bad broadcast from master: %s", e)
                continue
            if isinstance(msg, Command):
                self._apply(msg)
            elif isinstance(msg, Beacon):
                self.last_beacon = now
                if msg.incarnation != self.incarnation and now - self.register_sent > 1.0 and not self.reregister_at:
                    # The whole fleet sees the same beacon at once: each worker waits a random part of a quarter of
                    # device_timeout, so a restarted master gets its Registers (and 2 connections per worker) spread
                    # out, not in one burst, and still well before it would judge the silent devices offline.
                    self.reregister_at = now + random.uniform(0, 0.25 * self.device_timeout_s)
                    logger.info("master restarted (incarnation %s -> %s); registering again in %.2fs",
                                self.incarnation or "-", msg.incarnation, self.reregister_at - now)

    def _watch_master(self, now: float) -> None:
        """Paranoid-pirate style: no RegisterAck or no beacon for too long means reconnect, with backoff."""
        if self.reregister_at and now >= self.reregister_at:
            self._register()
            return
        if not self.registered.is_set():
            if now - self.register_sent > self.register_backoff:
                self.register_backoff = min(self.register_backoff * 2, 10.0) * random.uniform(0.8, 1.2)
                logger.debug("no answer to register; reconnecting (next wait %.1fs)", self.register_backoff)
                self._connect()
                self._register()
        elif now - self.last_beacon > 2 * self.device_timeout_s:
            # Twice the master's own patience: a master busy with one long commit must not make the fleet flap.
            logger.warning("no beacon from the master for %.1fs; reconnecting", now - self.last_beacon)
            self.register_backoff = 0.5
            self.side_sockets_stale = True   # the SUB and PUSH connections may be as dead as the DEALER's
            self._connect()
            self._register()

    # ------------------------------------------------------------ running tasks

    def _start_held(self) -> None:
        started = []
        with self.lock:
            while self.held and (free := self.config.concurrent_tasks - self._executing()) > 0:
                if self.held[0].get("kind") == "python":
                    tasks = [self.held.popleft() for _ in range(self.pyslots.batch_size(self.held, free))]
                    for task in tasks:
                        self.running[task["id"]] = PyRun(task["id"], task["attempt"])
                    keys = [[t["id"], t["attempt"]] for t in tasks]
                    if self.outbox.freed or not self.registered.is_set():
                        started += keys   # they ride on this turn's Results
                    else:   # alone: sent before the child can begin, and read by the master while they run
                        self.dealer.send_multipart(Results([], 0, keys).encode())
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
        chunks = [[key[0], key[1], stream, text] for key, parts in live.items() for stream, text in parts]
        self.dealer.send_multipart(Output(chunks).encode())

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
                self.dealer.send_multipart(msg.encode())
