"""The worker's link to its master: the DEALER, registering, the SUB and heartbeat sockets, the beacon watch."""
from __future__ import annotations

import logging
import os
import random
import time
from typing import TYPE_CHECKING

import zmq

from ..errors import ProtocolError
from ..protocol import BEACON_TOPIC, Beacon, Command, Register, RegisterAck, decode
from ..transport import make_socket
from .allow import advertised_tags
from .cutoff import HandshakeWatch
from .heartbeat import HeartbeatSender

if TYPE_CHECKING:
    from .worker import Worker

logger = logging.getLogger(__name__)
VERSION = "0.1.0"


class MasterLinkMixin:
    """Mixed into Worker: connect and register, reconnect with backoff, and follow the master's beacon."""

    def _connect(self: Worker) -> None:
        """(Re)open the DEALER: a fresh socket drops whatever was queued for a master that went away. Under CURVE
        its handshakes are watched: a key the master cut off is refused there, with nothing else to tell it."""
        if self.dealer is not None:
            self._close_dealer()
        self.dealer = make_socket(self.ctx, zmq.DEALER, max_message_bytes=self.config.max_message_bytes,
                                  identity=self.device_id.encode(), sndhwm=0, rcvhwm=0, curve=self.curve,
                                  zmtp_heartbeat_ms=self.zmtp_heartbeat_ms)
        if self.curve is not None:
            self.handshake = HandshakeWatch(self.dealer)
            self.poller.register(self.handshake.monitor, zmq.POLLIN)
        self.dealer.connect(f"tcp://{self.host}:{self.port}")
        self.poller.register(self.dealer, zmq.POLLIN)

    def _close_dealer(self: Worker) -> None:
        if self.handshake is not None:
            self.poller.unregister(self.handshake.monitor)
            self.handshake.close()
            self.handshake = None
        self.poller.unregister(self.dealer)
        self.dealer.close(0)
        self.dealer = None

    def _register(self: Worker) -> None:
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

    def _registered(self: Worker, msg: RegisterAck, now: float) -> None:
        if self.heartbeats is None or msg.incarnation != self.incarnation or self.side_sockets_stale:
            self.side_sockets_stale = False
            self._connect_side_sockets(msg)
        else:
            self._subscribe()   # again: one the master refused before (say, its key not bound yet) counts now
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

    def _connect_side_sockets(self: Worker, msg: RegisterAck) -> None:
        if self.sub is not None:
            self.poller.unregister(self.sub)
            self.sub.close(0)
        # No ZMTP pings of its own: the beacon is the SUB's heartbeat (none for 2 x device_timeout reconnects it, see
        # _watch_master) and the master's PUB pings it already. Its own pings were 1,000 more packets a second into
        # the master's I/O thread per 1,000 workers (tools/bench_fleet.py).
        self.sub = make_socket(self.ctx, zmq.SUB, max_message_bytes=self.config.max_message_bytes, curve=self.curve)
        self._subscribe()
        self.sub.connect(f"tcp://{self.host}:{msg.pub_port}")
        self.poller.register(self.sub, zmq.POLLIN)
        if self.heartbeats is not None:
            self.heartbeats.stop()
        self.heartbeats = HeartbeatSender(self.ctx, f"tcp://{self.host}:{msg.heartbeat_port}", self.device_id,
                                          msg.heartbeat_interval_s, self.owned, self.config.enable_monitoring,
                                          self.config.max_message_bytes, self.info, self.curve)
        self.heartbeats.start()

    def topics(self: Worker) -> list[bytes]:
        """The master publishes commands on `device.<id>` only, and allows nothing but these and `beacon`."""
        return [f"device.{self.device_id}".encode()]

    def _subscribe(self: Worker) -> None:
        """libzmq's SUB sends a repeated subscription again; the master holds it once."""
        for topic in (BEACON_TOPIC, *self.topics()):
            self.sub.setsockopt(zmq.SUBSCRIBE, topic)

    def _drain_sub(self: Worker, now: float) -> None:
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

    def _watch_master(self: Worker, now: float) -> None:
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
