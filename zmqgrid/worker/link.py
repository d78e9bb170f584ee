"""The worker's link to its master: the DEALER, registering, the SUB and heartbeat sockets, the beacon watch."""
from __future__ import annotations

import logging
import os
import random
import threading
import time
from typing import Callable

import zmq

import zmqgrid

from ..config import Config, master_host_port
from ..errors import ProtocolError
from ..protocol import BEACON_TOPIC, Beacon, Command, Error, Message, Register, RegisterAck, decode
from ..transport import Curve, connect, make_socket, send_frames, zmtp_heartbeat_ms
from .allow import advertised_tags
from .pyenvs import advertised
from .cutoff import HandshakeWatch, refused_at_handshake, told_by_master
from .heartbeat import HeartbeatSender

logger = logging.getLogger(__name__)
REGISTER_SEND_WAIT_MS = 1000
PENDING_REGISTER_S = 2.0   # a pending worker asks again this often (one small Register, answered `pending`)


class MasterLink:
    """Connect and register, reconnect with backoff, and follow the master's beacon.

    It answers what concerns the link itself (RegisterAck, the master not knowing this device, the beacon) and hands
    every other message from the master to `deliver`. What it reports comes from its owner: `holdings()` (credit,
    running or held keys, outbox keys) for a Register, `owned()` for each heartbeat. On a RegisterAck it calls
    `new_incarnation()` first when the master is another one, then `on_registered(ack)` once it is registered.
    When the master cuts this worker's key off (`E revoked`, or ZAP's refusal at the handshake) it calls
    `cut_off(why)`."""

    def __init__(self, config: Config, *, curve: Curve | None, info: dict, watch: Callable[[object], None],
                 unwatch: Callable[[object], None], holdings: Callable[[], tuple[int, list, list]],
                 owned: Callable[[], tuple[list, list, list, list | None]], deliver: Callable[[Message, float], None],
                 new_incarnation: Callable[[], None], on_registered: Callable[[RegisterAck], None],
                 cut_off: Callable[[str], None], about: Callable[[], dict] | None = None) -> None:
        self.config = config
        self.device_id = config.device_id
        self.host, self.port = master_host_port(config.master_url)
        self.curve, self.info = curve, info
        self._watch, self._unwatch = watch, unwatch
        self._holdings, self._owned, self._deliver = holdings, owned, deliver
        self._new_incarnation, self._on_registered, self._cut_off = new_incarnation, on_registered, cut_off
        self._about = about   # what each heartbeat adds to its metrics (the prefetch)
        self.ctx = zmq.Context()
        self.dealer: zmq.Socket | None = None
        self.handshake: HandshakeWatch | None = None   # under CURVE: the DEALER's handshakes, watched for ZAP's refusal
        self.sub: zmq.Socket | None = None
        self.heartbeats: HeartbeatSender | None = None
        self.incarnation = ""                 # of the master we are registered with
        self.registered = threading.Event()   # set by a RegisterAck, cleared by each Register
        self.register_sent = 0.0
        self.register_backoff = 0.5
        self.pending = False                  # the master answered `pending`: our key waits for `keys accept`
        self.reregister_at = 0.0              # a new master incarnation was seen: register at this time (jittered)
        self.side_sockets_stale = False
        self.last_beacon = time.monotonic()
        self.device_timeout_s = float(config.device_timeout)
        self.zmtp_heartbeat_ms = zmtp_heartbeat_ms(config.heartbeat_interval)

    # ------------------------------------------------------------ sockets

    def connect(self) -> None:
        """(Re)open the DEALER: a fresh socket drops whatever was queued for a master that went away. Under CURVE
        its handshakes are watched: a key the master cut off is refused there, with nothing else to tell it."""
        if self.dealer is not None:
            self._close_dealer()
        self.dealer = make_socket(self.ctx, zmq.DEALER, max_message_bytes=self.config.max_message_bytes,
                                  identity=self.device_id.encode(), sndhwm=0, rcvhwm=0, curve=self.curve,
                                  zmtp_heartbeat_ms=self.zmtp_heartbeat_ms)
        if self.curve is not None:
            self.handshake = HandshakeWatch(self.dealer)
            self._watch(self.handshake.monitor)
        connect(self.dealer, f"tcp://{self.host}:{self.port}")
        self._watch(self.dealer)

    def _close_dealer(self) -> None:
        if self.handshake is not None:
            self._unwatch(self.handshake.monitor)
            self.handshake.close()
            self.handshake = None
        self._unwatch(self.dealer)
        self.dealer.close(0)
        self.dealer = None

    def send(self, msg: Message) -> None:
        send_frames(self.dealer, msg.encode())

    def stop_heartbeats(self) -> None:
        if self.heartbeats is not None:
            self.heartbeats.stop()

    def close(self) -> None:
        if self.handshake is not None:
            self.handshake.close()
        for sock in (self.dealer, self.sub):
            if sock is not None:
                sock.close(0)
        self.ctx.term()

    # ------------------------------------------------------------ registering

    def register(self, fresh_side_sockets: bool = False) -> None:
        """Send a Register. `fresh_side_sockets`: the SUB and PUSH are made anew when it is acknowledged."""
        if fresh_side_sockets:
            self.side_sockets_stale = True
        credit, owned, outbox = self._holdings()
        info, config = self.info, self.config
        msg = Register(device_id=self.device_id, name=config.device_name or self.device_id,
                       hostname=info["hostname"], os=info["os"], python_version=info["python_version"],
                       python_executable=info["python_executable"], tags=advertised_tags(config, info["python_envs"]),
                       concurrency=config.concurrent_tasks, credit=credit, running=owned, outbox=outbox,
                       pid=os.getpid(), version=zmqgrid.__version__, weight=float(config.weight),
                       python_envs=[[e.name, e.version, e.executable] for e in advertised(info["python_envs"])])
        self.register_sent = time.monotonic()
        self.registered.clear()
        # The DEALER queues nothing before its connection completes (IMMEDIATE): a send would block until then, for
        # ever if the master's ZAP refuses this key. Waiting a bounded time keeps the loop, and with it the handshake
        # watch that tells a refused key, running; this Register goes again after the backoff.
        # NOBLOCK even after POLLOUT: ZAP may refuse the handshake in between, and the pipe POLLOUT saw goes with it.
        try:
            if not self.dealer.poll(REGISTER_SEND_WAIT_MS, zmq.POLLOUT):
                raise zmq.Again()
            self.dealer.send_multipart(msg.encode(), zmq.NOBLOCK)
        except zmq.Again:
            logger.debug("register not sent: no connection to the master yet")
            return
        self.reregister_at = 0.0   # this is the Register a beacon may have scheduled
        logger.debug("register sent device=%s credit=%d", self.device_id, credit)

    def _acknowledged(self, msg: RegisterAck, now: float) -> None:
        if self.heartbeats is None or msg.incarnation != self.incarnation or self.side_sockets_stale:
            self.side_sockets_stale = False
            self._connect_side_sockets(msg)
        else:
            self._subscribe()   # again: one the master refused before (say, its key not bound yet) counts now
        if msg.incarnation != self.incarnation:
            self._new_incarnation()
        self.incarnation = msg.incarnation
        self.device_timeout_s = msg.device_timeout_s
        self.register_backoff = 0.5
        self.pending = False
        self.last_beacon = now
        self.heartbeats.incarnation = msg.incarnation
        self.registered.set()
        self._on_registered(msg)

    def _connect_side_sockets(self, msg: RegisterAck) -> None:
        if self.sub is not None:
            self._unwatch(self.sub)
            self.sub.close(0)
        # No ZMTP pings of its own: the beacon is the SUB's heartbeat (none for 2 x device_timeout reconnects it, see
        # watch_master) and the master's PUB pings it already. Its own pings were 1,000 more packets a second into
        # the master's I/O thread per 1,000 workers (tools/bench_fleet.py).
        self.sub = make_socket(self.ctx, zmq.SUB, max_message_bytes=self.config.max_message_bytes, curve=self.curve)
        self._subscribe()
        connect(self.sub, f"tcp://{self.host}:{msg.pub_port}")
        self._watch(self.sub)
        if self.heartbeats is not None:
            self.heartbeats.stop()
        self.heartbeats = HeartbeatSender(self.ctx, f"tcp://{self.host}:{msg.heartbeat_port}", self.device_id,
                                          msg.heartbeat_interval_s, self._owned, self.config.enable_monitoring,
                                          self.config.max_message_bytes, self.info, self.curve, self._about)
        self.heartbeats.start()

    def topics(self) -> list[bytes]:
        """The master publishes commands on `device.<id>` only, and allows nothing but these and `beacon`."""
        return [f"device.{self.device_id}".encode()]

    def _subscribe(self) -> None:
        """libzmq's SUB sends a repeated subscription again; the master holds it once."""
        for topic in (BEACON_TOPIC, *self.topics()):
            self.sub.setsockopt(zmq.SUBSCRIBE, topic)

    # ------------------------------------------------------------ receiving

    def receive(self, events: dict, now: float) -> None:
        """Everything readable on the DEALER, then on the SUB."""
        if self.dealer in events:
            self._drain_dealer(now)
        if self.handshake is not None and self.handshake.monitor in events and self.handshake.refused():
            self._cut_off(refused_at_handshake(self.curve.public.decode()))
        if self.sub is not None and self.sub in events:
            self._drain_sub(now)

    def receive_within(self, timeout_ms: int) -> None:
        """Wait up to `timeout_ms` for the DEALER, then take what came (the worker's last moments)."""
        if self.dealer.poll(timeout_ms):
            self._drain_dealer(time.monotonic())

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
            if isinstance(msg, RegisterAck):
                self._acknowledged(msg, now)
            elif isinstance(msg, Error):
                if msg.code == "revoked":
                    self._cut_off(told_by_master(msg.message))
                    return
                if msg.code == "not_registered":
                    # A pending worker hears it once, when its key is accepted ("key accepted: register"); else a
                    # reply to what was sent before the last Register went through, which that Register answers.
                    if self.pending or now - self.register_sent > 1.0:
                        logger.info("master does not know this device; registering again")
                        self.register()
                elif msg.code == "pending":
                    self._waiting_for_accept(msg)
                else:   # the answer to a request of the worker's (a project fetch), or news to log
                    self._deliver(msg, now)
            else:
                self._deliver(msg, now)

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
                self._deliver(msg, now)
            elif isinstance(msg, Beacon):
                self.last_beacon = now
                if msg.incarnation != self.incarnation and now - self.register_sent > 1.0 and not self.reregister_at:
                    # The whole fleet sees the same beacon at once: each worker waits a random part of a quarter of
                    # device_timeout, so a restarted master gets its Registers (and 2 connections per worker) spread
                    # out, not in one burst, and still well before it would judge the silent devices offline.
                    self.reregister_at = now + random.uniform(0, 0.25 * self.device_timeout_s)
                    logger.info("master restarted (incarnation %s -> %s); registering again in %.2fs",
                                self.incarnation or "-", msg.incarnation, self.reregister_at - now)

    def _waiting_for_accept(self, msg: Error) -> None:
        """Our key is pending: said once at WARNING. The Registers go on over this same connection at a fixed pace,
        so the master, which tells the connection it last heard from when the key is accepted, reaches us."""
        if not self.pending:
            logger.warning("master error pending: %s", msg.message)
        self.pending = True

    def watch_master(self, now: float) -> None:
        """Paranoid-pirate style: no RegisterAck or no beacon for too long means reconnect, with backoff."""
        if self.reregister_at and now >= self.reregister_at:
            self.register()
            return
        if not self.registered.is_set() and self.pending:
            if now - self.register_sent > PENDING_REGISTER_S:
                self.register()
        elif not self.registered.is_set():
            if now - self.register_sent > self.register_backoff:
                self.register_backoff = min(self.register_backoff * 2, 10.0) * random.uniform(0.8, 1.2)
                logger.debug("no answer to register; reconnecting (next wait %.1fs)", self.register_backoff)
                self.connect()
                self.register()
        elif now - self.last_beacon > 2 * self.device_timeout_s:
            # Twice the master's own patience: a master busy with one long commit must not make the fleet flap.
            logger.warning("no beacon from the master for %.1fs; reconnecting", now - self.last_beacon)
            self.register_backoff = 0.5
            self.side_sockets_stale = True   # the SUB and PUSH connections may be as dead as the DEALER's
            self.connect()
            self.register()
