"""The master's XPUB: which subscriptions it applies, and how much any connection may leave in libzmq.

libzmq keeps every topic a connection subscribes to (about 48 bytes per topic byte), applied or not, until that
connection closes; so besides applying only the topics workers need, the master counts what each connection holds
and closes one that goes past its bound (docs/architecture.md, Security, Subscriptions)."""
from __future__ import annotations

import logging
import os
import re
import socket
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import zmq
from zmq.utils.monitor import parse_monitor_message

from ..fields import ID_PATTERN
from ..protocol import BEACON_TOPIC
from ..transport import make_socket
from .guard import user_id

if TYPE_CHECKING:
    from .guard import KeyRing

logger = logging.getLogger(__name__)
# The XPUB's MAXMSGSIZE: a subscription is one ZMTP SUBSCRIBE frame (10 bytes + topic), so 96 admits topics of up to
# 86 bytes, the longest allowed being 71 (device. + 64). CURVE's handshake needs frames of about 280 bytes.
SUBSCRIPTION_MAX_BYTES = 96
SUBSCRIPTION_MAX_BYTES_CURVE = 320
PER_CONNECTION = 4       # topics one connection may hold (a worker holds 2: beacon, device.<id>)
PER_KEY = 8              # over all the connections of one CURVE key (a reconnected worker's stale one included)
TOTAL = 20_000           # over all connections: 10,000 workers
READ_PER_TURN = 1000     # subscription messages read in one loop turn
LOG_EVERY_S = 5.0
_DEVICE_TOPIC = re.compile(rb"device\." + ID_PATTERN.encode())   # a device id, as the Register takes it
_MONITOR_EVENTS = zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED


def allowed_topic(topic: bytes) -> bool:
    """The only topics the master publishes on."""
    return topic == BEACON_TOPIC or _DEVICE_TOPIC.fullmatch(topic) is not None


def worker_key(ring: KeyRing, key: str | None) -> dict | None:
    """The key's row if it is an accepted worker key."""
    row = ring.rows.get(key) if key else None
    return row if row is not None and row["state"] == "accepted" and row["role"] == "worker" else None


class PubAdmission:
    """ZAP for the PUB's domain: accepted worker keys only (clients and admins have nothing to receive there).
    Runs in the ZAP thread and only reads the KeyRing's rows, as KeyRing.callback does."""

    def __init__(self, ring: KeyRing) -> None:
        self.ring = ring

    def callback(self, domain: str, key: bytes) -> bool:
        return worker_key(self.ring, key.decode("ascii", "replace")) is not None


@dataclass
class Connection:
    """One subscriber connection, known by its file descriptor while the monitor says it is open."""

    fd: int
    peer: tuple | None   # its remote address, None where a descriptor cannot be duplicated: it is never closed then
    order: int
    key: str | None = None
    held: set[bytes] = field(default_factory=set)      # topics libzmq keeps for it (applied or refused)
    applied: set[bytes] = field(default_factory=set)
    closed: bool = False                               # the master closed it; its later messages are ignored


class Subscriptions:
    """Reads the XPUB's subscription messages (`drain`, each loop turn the XPUB or the monitor has input) and applies
    the allowed ones; `recheck` closes the connections of keys that are no longer accepted worker keys."""

    def __init__(self, ctx: zmq.Context, pub: zmq.Socket, ring: KeyRing | None) -> None:
        self.pub, self.ring = pub, ring
        self.port = 0                      # the PUB's port, set once bound (`bound`)
        endpoint = f"inproc://zmqgrid.pub-monitor-{id(self)}"
        pub.monitor(endpoint, _MONITOR_EVENTS)
        # Unbounded receive queue: libzmq's I/O thread blocks on a full monitor pipe, and events are small.
        self.monitor = make_socket(ctx, zmq.PAIR, rcvhwm=0)
        self.monitor.connect(endpoint)
        self.conns: dict[int, Connection] = {}
        self.by_key: dict[str, set[int]] = {}
        self.order = 0
        # Live (the status query shows this dict): topics applied and held now; refusals and closings since start.
        self.counts = {"applied": 0, "held": 0, "refused": 0, "closed": 0}
        self._refusals: dict[str, int] = {}
        self._logged_at = 0.0

    def bound(self, port: int) -> None:
        self.port = port

    def close(self) -> None:
        try:
            self.pub.disable_monitor()
        except zmq.ZMQError:
            pass
        self.monitor.close(0)

    # ------------------------------------------------------------ reading

    def drain(self) -> None:
        self._read_monitor()
        for _ in range(READ_PER_TURN):
            try:
                frame = self.pub.recv(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            self._on_message(frame)
        self._log_refusals()

    def _read_monitor(self) -> None:
        while True:
            try:
                event = parse_monitor_message(self.monitor.recv_multipart(zmq.NOBLOCK))
            except zmq.Again:
                return
            fd = int(event["value"])
            old = self.conns.pop(fd, None)
            if old is not None:
                self._forget(old)
            if event["event"] == zmq.EVENT_ACCEPTED:   # (its DISCONNECTED, if it is gone already, comes next)
                self.order += 1
                self.conns[fd] = Connection(fd, _peer(fd), self.order)

    def _on_message(self, frame: zmq.Frame) -> None:
        data = frame.bytes
        if not data or data[0] > 1:
            return   # a message, not a subscription (only an XSUB can send one): dropped
        try:
            fd = frame.get(zmq.SRCFD)
        except zmq.ZMQError:
            return   # libzmq's unsubscribes for a connection that closed carry no metadata: the monitor ends it
        conn = self.conns.get(fd)
        if conn is None:
            self._read_monitor()       # its ACCEPTED was sent before this message: it is there now, if open
            conn = self.conns.get(fd)
        if conn is None or conn.closed:
            return
        topic = data[1:]
        if data[0] == 0:
            self._unsubscribe(conn, topic)
        else:
            self._subscribe(conn, topic, user_id(frame) if self.ring is not None else None)

    def _unsubscribe(self, conn: Connection, topic: bytes) -> None:
        if topic in conn.held:
            conn.held.discard(topic)
            self.counts["held"] -= 1
        if topic in conn.applied:
            conn.applied.discard(topic)
            self.counts["applied"] -= 1
            self.pub.setsockopt(zmq.UNSUBSCRIBE, topic)   # applies to the connection of the message just read

    def _subscribe(self, conn: Connection, topic: bytes, key: str | None) -> None:
        if key is not None and conn.key is None:
            conn.key = key
            self.by_key.setdefault(key, set()).add(conn.fd)
        if topic not in conn.held:
            conn.held.add(topic)
            self.counts["held"] += 1
            if len(conn.held) > PER_CONNECTION:
                self._close(conn, f"more than {PER_CONNECTION} topics on one connection")
                return
            if self.counts["held"] > TOTAL:
                self._close(conn, f"more than {TOTAL} topics held in all")
                return
            if conn.key is not None and self._key_held(conn.key) > PER_KEY:
                oldest = min((self.conns[fd] for fd in self.by_key[conn.key]), key=lambda c: c.order)
                self._close(oldest, f"more than {PER_KEY} topics for key {conn.key[:8]}")
                if oldest is conn:
                    return
        if topic in conn.applied:
            return
        why = self._refusal(conn.key, topic)
        if why:
            self.counts["refused"] += 1
            self._refusals[why] = self._refusals.get(why, 0) + 1
            return
        self.pub.setsockopt(zmq.SUBSCRIBE, topic)   # libzmq applies it to the connection of the message just read
        conn.applied.add(topic)
        self.counts["applied"] += 1

    def _refusal(self, key: str | None, topic: bytes) -> str:
        """Why `topic` may not be applied for `key` (CURVE) or anyone (open); empty if it may."""
        if not allowed_topic(topic):
            return "a topic the master never publishes on"
        if self.ring is None or topic == BEACON_TOPIC:
            return ""
        row = worker_key(self.ring, key)
        if row is None:
            return "a key that is not an accepted worker key"
        if topic != b"device." + (row["device_id"] or "").encode():
            return "another device's topic"
        return ""

    def _key_held(self, key: str) -> int:
        return sum(len(self.conns[fd].held) for fd in self.by_key.get(key, ()))

    # ------------------------------------------------------------ closing

    def recheck(self) -> None:
        """After a key change: connections of keys no longer accepted worker keys are closed."""
        if self.ring is None:
            return
        for key in [k for k in self.by_key if worker_key(self.ring, k) is None]:
            for fd in list(self.by_key.get(key, ())):
                self._close(self.conns[fd], f"key {key[:8]} is no longer an accepted worker key")
        self._log_refusals()

    def _close(self, conn: Connection, why: str) -> None:
        """Shut the connection's TCP socket down (libzmq sees the peer go and frees what it held), after checking
        that its descriptor still is that connection: a socket on the PUB's port with the recorded peer."""
        self._forget(conn)
        conn.closed = True
        self.counts["closed"] += 1
        self._refusals[f"connection closed: {why}"] = self._refusals.get(f"connection closed: {why}", 0) + 1
        sock = _duplicate(conn.fd)
        if sock is None:
            return
        try:
            if conn.peer is not None and sock.getsockname()[1] == self.port and sock.getpeername() == conn.peer:
                sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass   # closed meanwhile: nothing left to cut
        finally:
            sock.close()

    def _forget(self, conn: Connection) -> None:
        if conn.closed:
            return
        self.counts["held"] -= len(conn.held)
        self.counts["applied"] -= len(conn.applied)
        if conn.key is not None:
            fds = self.by_key.get(conn.key, set())
            fds.discard(conn.fd)
            if not fds:
                self.by_key.pop(conn.key, None)

    def _log_refusals(self) -> None:
        now = time.monotonic()
        if self._refusals and now - self._logged_at >= LOG_EVERY_S:
            self._logged_at = now
            logger.warning("subscriptions refused: %s", "; ".join(f"{n} x {why}" for why, n in self._refusals.items()))
            self._refusals = {}


def _peer(fd: int) -> tuple | None:
    """The remote address of the TCP socket `fd`, read from a duplicate of it (libzmq keeps the original)."""
    sock = _duplicate(fd)
    if sock is None:
        return None
    try:
        return sock.getpeername()
    except OSError:
        return None
    finally:
        sock.close()


def _duplicate(fd: int) -> socket.socket | None:
    """A Python socket on a duplicate of `fd` (closing it leaves `fd` open), or None if `fd` is no socket now."""
    try:
        dup = os.dup(fd)
    except OSError:
        return None
    try:
        return socket.socket(fileno=dup)
    except OSError:
        os.close(dup)
        return None
