"""The one place that creates ZeroMQ sockets and sets their options."""
from __future__ import annotations

from dataclasses import dataclass

import zmq

from .errors import UsageError
from .protocol import DEFAULT_MAX_MESSAGE_BYTES

ZAP_DOMAINS = {zmq.ROUTER: b"zmqgrid.router", zmq.PUB: b"zmqgrid.pub", zmq.XPUB: b"zmqgrid.pub",
               zmq.PULL: b"zmqgrid.pull"}
_MORE = int(zmq.SNDMORE)


@dataclass(frozen=True)
class Curve:
    """CURVE keys for one process (z85 bytes). With `server_key` (the master's public key) its sockets are CURVE
    clients; without, CURVE servers that ask ZAP (domain `zmqgrid.<socket>`) about every peer."""

    public: bytes
    secret: bytes = b""
    server_key: bytes | None = None

    def __repr__(self) -> str:   # a secret key never reaches a log
        return f"Curve(public={self.public.decode()!r}, server={self.server_key is None})"


def zmtp_heartbeat_ms(heartbeat_interval_s: float) -> int:
    """ZMTP ping interval of the master's PUB and the worker's DEALER: three heartbeat intervals (a peer silent for
    three pings, 9 s at the defaults, is dropped). Each ping wakes the master's libzmq I/O thread, so with a big
    fleet pings at every heartbeat interval would cost it a share of a core. A vanished master is
    found sooner by the worker's beacon watchdog (twice device_timeout, 5 s)."""
    return max(100, int(3000 * heartbeat_interval_s))


def make_socket(ctx: zmq.Context, kind: int, *, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
                linger_ms: int = 0, identity: bytes | None = None, sndhwm: int | None = None,
                rcvhwm: int | None = None, zmtp_heartbeat_ms: int | None = None,
                curve: Curve | None = None) -> zmq.Socket:
    """A socket with the options every zmqgrid socket needs (LINGER, MAXMSGSIZE, CURVE when given) plus those of
    its role. A CURVE client never sets its routing id (`identity` is ignored): the master's ROUTER then gives the
    connection one no peer can choose, so nobody takes over another device's pipe by naming it."""
    sock = ctx.socket(kind)
    sock.setsockopt(zmq.LINGER, linger_ms)
    sock.setsockopt(zmq.MAXMSGSIZE, max_message_bytes)
    if curve is not None:
        if curve.server_key is None:
            sock.setsockopt(zmq.CURVE_SERVER, 1)
            sock.setsockopt(zmq.CURVE_SECRETKEY, curve.secret)
            sock.setsockopt(zmq.ZAP_DOMAIN, ZAP_DOMAINS.get(kind, b"zmqgrid"))
        else:
            sock.setsockopt(zmq.CURVE_SERVERKEY, curve.server_key)
            sock.setsockopt(zmq.CURVE_PUBLICKEY, curve.public)
            sock.setsockopt(zmq.CURVE_SECRETKEY, curve.secret)
            identity = None
    if identity is not None:
        sock.setsockopt(zmq.IDENTITY, identity)
    if sndhwm is not None:
        sock.setsockopt(zmq.SNDHWM, sndhwm)
    if rcvhwm is not None:
        sock.setsockopt(zmq.RCVHWM, rcvhwm)
    if zmtp_heartbeat_ms:
        # ZMTP PINGs drop a connection whose peer vanished without a FIN (cable cut, frozen host), so it is
        # re-established instead of hanging for the minutes TCP retransmission can take.
        sock.setsockopt(zmq.HEARTBEAT_IVL, zmtp_heartbeat_ms)
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 3 * zmtp_heartbeat_ms)
        sock.setsockopt(zmq.HEARTBEAT_TTL, 3 * zmtp_heartbeat_ms)
    if kind == zmq.ROUTER:
        # A send to a vanished peer must raise (so dispatch re-queues), and a worker that reconnects
        # with its identity must take over the stale pipe instead of being refused.
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        sock.setsockopt(zmq.ROUTER_HANDOVER, 1)
    elif kind == zmq.XPUB:
        # Every subscription goes to the application, which applies the allowed ones (master/subscriptions.py).
        sock.setsockopt(zmq.XPUB_MANUAL, 1)
    elif kind == zmq.PUSH:
        # Heartbeats are only useful fresh: never queue them for a master that is not there.
        sock.setsockopt(zmq.IMMEDIATE, 1)
    return sock


def _ipv6(endpoint: str) -> bool:
    """Whether the host of a tcp:// endpoint is an IPv6 address ("tcp://[::1]:8000", or libzmq's "tcp://::1:8000")."""
    return ":" in endpoint.partition("://")[2].rpartition(":")[0]


def _allow_ipv6(sock: zmq.Socket, endpoint: str) -> None:
    # libzmq speaks IPv4 only unless told; told for every endpoint, it would also resolve a host name such as
    # localhost to ::1 where the master may listen on 127.0.0.1 only. So: on for an IPv6 address, and only then.
    if _ipv6(endpoint):
        sock.setsockopt(zmq.IPV6, 1)


def connect(sock: zmq.Socket, endpoint: str) -> None:
    """Connect to a tcp:// endpoint, IPv6 addresses included."""
    _allow_ipv6(sock, endpoint)
    sock.connect(endpoint)


def bind(sock: zmq.Socket, endpoint: str) -> None:
    """Bind (IPv6 addresses included), turning the common failure (port taken) into a sentence."""
    _allow_ipv6(sock, endpoint)
    try:
        sock.bind(endpoint)
    except zmq.ZMQError as e:
        raise UsageError(f"cannot bind {endpoint}: {e.strerror}",
                         "choose another --port or stop what is using it") from e


def send_frames(sock: zmq.Socket, frames: list[bytes], flags: int = 0) -> None:
    """`sock.send_multipart(frames, flags)` for the hot paths: plain sends with int flags (pass `flags` as an int),
    since send_multipart's IntFlag arithmetic per frame costs more than the sends."""
    send, more = sock.send, _MORE | flags
    for frame in frames[:-1]:
        send(frame, more)
    send(frames[-1], flags)
