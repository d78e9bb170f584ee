"""The worker daemon: registers, takes tasks within its credit, runs them, keeps results until acked.

`Worker` composes three objects, each owning its data: the link to the master (sockets, registering, the beacon
watch), the slots (held, running, the outbox) and the commands (applied once each). It runs the loop and wires
them together through the callbacks it gives each.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from typing import Callable

import zmq

from ..config import Config
from ..errors import EXIT_KEY_REFUSED, EXIT_OK
from ..projects.messages import ProjectData
from ..protocol import Command, Error, Message, RegisterAck, ResultAck, Results, Tasks
from ..security import worker_curve
from .commands import Commands
from .link import MasterLink
from .metrics import system_info
from .orphans import ProcessGuard
from .projects import ProjectGate
from .pyenvs import probe_all
from .slots import Slots

logger = logging.getLogger(__name__)

SHUTTING_DOWN = "worker shutting down"   # the reason a stopping worker's attempts are cancelled with


class Worker:
    """Run with `serve()`; `stop()` (any thread or a signal handler) ends it: the master is told this worker is
    leaving, and running tasks are stopped and reported as cancelled, so the master re-queues them elsewhere."""

    def __init__(self, config: Config, reload_config: Callable[[], Config] | None = None) -> None:
        self.config = config
        self.device_id = config.device_id
        curve = worker_curve(config)          # None unless `curve` is on; a missing key file stops us here
        info = system_info(config.python_executable)
        # Asked once: a reload does not change them (the tasks routed by their tags are already on their way).
        info["python_envs"] = self.pyenvs = probe_all(config.python_envs)
        # First of all: kill what a killed predecessor of this device left running, then record and guard our own
        # task processes (orphans.py). Windows has neither sessions nor a reaper here (Job Objects would be it).
        self.guard = ProcessGuard(config.state_dir, self.device_id) if os.name == "posix" else None
        self.poller = zmq.Poller()
        self._wake_r, self._wake_w = os.pipe()
        self._halt = threading.Event()
        self.exit_code = EXIT_OK              # EXIT_KEY_REFUSED once the master cut this worker's key off
        watch, unwatch = (lambda sock: self.poller.register(sock, zmq.POLLIN)), self.poller.unregister
        # The link reads the slots' holdings only once serving: the two are made one after the other.
        self.link = MasterLink(config, curve=curve, info=info, watch=watch, unwatch=unwatch,
                               holdings=lambda: self.slots.holdings(), owned=self.owned, deliver=self._deliver,
                               new_incarnation=self._new_incarnation,
                               on_registered=self._registered, cut_off=self._cut_off,
                               about=lambda: self.slots.about())
        self.projects = ProjectGate(config, send=self.link.send, connected=self.link.registered.is_set,
                                    wake=self._wake, release=lambda tasks: self.slots.release(tasks),
                                    fail=lambda results: self.slots.ended(results),
                                    active_ids=lambda: self.slots.active_ids())
        self.slots = Slots(config, record=self.guard.record if self.guard is not None else None, watch=watch,
                           unwatch=unwatch, send=self.link.send, connected=self.link.registered.is_set,
                           wake=self._wake, gate=self.projects, pyenvs=self.pyenvs)
        self.commands = Commands(config, reload_config, cancel=self.slots.kill, reloaded=self._reloaded,
                                 sync=self._sync)

    # ------------------------------------------------------------ lifecycle

    def stop(self) -> None:
        self._halt.set()
        os.write(self._wake_w, b"x")

    def _wake(self) -> None:
        os.write(self._wake_w, b"r")

    def owned(self) -> tuple[list, list, list, list | None]:
        """([id, attempt] running, [id, attempt] held: waiting for a slot or in the outbox, applied command
        seqs, what the project cache holds) — what every heartbeat reports."""
        running, held = self.slots.owned()
        return running, held, self.commands.applied_seqs(), self.projects.states.snapshot()

    def serve(self) -> int:
        """Run until stopped; returns the exit code (EXIT_KEY_REFUSED when the master cut this worker's key off)."""
        self.poller.register(self._wake_r, zmq.POLLIN)
        self.slots.prepare()
        self.projects.start()   # a download or unpacking a killed predecessor left half done goes first
        self.link.connect()
        self.link.register()
        logger.info("worker device=%s connecting to tcp://%s:%d concurrency=%d python_pool=%s", self.device_id,
                    self.link.host, self.link.port, self.config.concurrent_tasks, self.config.python_pool)
        slots, link = self.slots, self.link
        try:
            while not self._halt.is_set():
                events = dict(self.poller.poll(slots.poll_timeout_ms()))
                now = time.monotonic()
                if events.get(self._wake_r):
                    os.read(self._wake_r, 4096)
                slots.handle(events, now)
                link.receive(events, now)
                if self.exit_code != EXIT_OK:
                    break
                slots.flush_output(now)
                slots.collect_finished()
                self.projects.tick(now)
                slots.start_held()
                slots.flush_results(now)
                link.watch_master(now)
                if self.commands.shutting_down and slots.idle():
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
        self.link.stop_heartbeats()
        self.slots.close()
        self.projects.close()
        if self.guard is not None:   # after the attempts stopped: the reaper then finds nothing to kill
            self.guard.close()
        self.link.close()
        os.close(self._wake_r)
        os.close(self._wake_w)
        logger.info("worker stopped device=%s", self.device_id)

    def _shutdown(self) -> None:
        """Tell the master this worker is leaving (it dispatches nothing more here), stop every attempt, report them
        as cancelled (the master re-queues them elsewhere), wait briefly for the acks. docs/architecture.md, "When
        the worker stops"."""
        if self.link.registered.is_set():
            self.link.send(Results([], 0, [], leaving=True))
        self.slots.stop_all(SHUTTING_DOWN)
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline and self.slots.unsettled():
            self.slots.collect_finished()
            self.slots.flush_results(time.monotonic(), force=True)
            self.link.receive_within(50)
            self.slots.cancel_held(SHUTTING_DOWN)   # tasks the master sent before it read the notice

    def _cut_off(self, why: str) -> None:
        """The master cut this worker's key off: say so once, with what to do, and stop."""
        if self.exit_code == EXIT_OK:
            logger.error("stopping (exit %d): %s", EXIT_KEY_REFUSED, why)
            self.exit_code = EXIT_KEY_REFUSED
            self._halt.set()

    def _abandon(self) -> None:
        """Stop with the key cut off: the master re-queued this worker's tasks already and reads nothing from it, so
        nothing more is sent (no heartbeats, no results, no waiting for acks); close() kills what still runs."""
        self.link.stop_heartbeats()
        self.slots.drop_held()

    # ------------------------------------------------------------ wiring

    def _deliver(self, msg: Message, now: float) -> None:
        """What the link does not answer itself: tasks, result acks, commands, project data and errors."""
        if isinstance(msg, Tasks):
            self.slots.take(msg)
        elif isinstance(msg, ResultAck):
            self.slots.ack(msg.keys)
        elif isinstance(msg, Command):
            self.commands.apply(msg)
        elif isinstance(msg, ProjectData):
            self.projects.on_data(msg)
        elif isinstance(msg, Error) and not self.projects.on_error(msg):
            logger.warning("master error %s: %s", msg.code, msg.message)

    def _registered(self, msg: RegisterAck) -> None:
        if msg.cancel:
            self.slots.kill(msg.cancel, "the master gave this task to another worker")
        self.slots.resend_all()   # everything not yet acknowledged goes to this master
        self.projects.registered()   # and the project fetches it has not answered
        logger.info("registered with master incarnation=%s outbox=%d running=%d", msg.incarnation,
                    len(self.slots.outbox), len(self.slots.running))

    def _new_incarnation(self) -> None:
        self.commands.forget_applied()
        self.projects.states.forget_syncs()

    def _sync(self, seq: int, params: dict) -> None:
        """A project sync command (docs/architecture.md, Projects, "Sync and what workers hold")."""
        self.projects.sync(str(params.get("project", "")), str(params.get("version", "")), seq,
                           params.get("rebuild") is True)

    def _reloaded(self, fresh: Config) -> None:
        self.slots.resize(fresh)
        self.link.register(fresh_side_sockets=True)   # the SUB and PUSH are made anew for the next registration
