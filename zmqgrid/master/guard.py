"""CURVE on the master: what each secured message may do (key state, role, device binding), checked before a
handler sees it; and, for a key nobody accepted, before the message is even decoded. Built only when `curve` is
on; the open master never touches this module. Which keys may connect at all is the KeyRing's (ZAP)."""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Hashable

import zmq

from ..protocol import KINDS, Control, Heartbeat, Message, Register
from ..security import is_z85_key
from ..text import printable
from .keyring import MAX_PENDING
from .refusals import RefusedConnections

if TYPE_CHECKING:
    from .handlers import Handlers
    from .keyring import KeyRing
    from .refusals import RefusalLog

logger = logging.getLogger(__name__)
# A key nobody accepted gets at most this many bytes of frames (after the routing id) decoded; a bigger message is
# answered and dropped unread. A genuine worker's first Register (no tasks yet, so no running or outbox) is far less.
PENDING_MAX_BYTES = 8 * 1024
CUT_OFF = frozenset({"rejected", "revoked"})   # key states an operator set: answered `revoked`, the worker stops
WORKER_REQUESTS = frozenset({"Register", "Results", "Output", "ProjectFetch"})
CLIENT_REQUESTS = frozenset({"Submit", "Query"})
CLIENT_ACTIONS = frozenset({"watch"})   # every other Control action needs an admin key
ADMIN_REQUESTS = frozenset({"ProjectPush", "ProjectChunk"})   # what an admin key pushes runs on the workers


def may(role: str, msg: Message) -> bool:
    """The role table of docs/architecture.md, Security."""
    kind = type(msg).__name__
    if kind in WORKER_REQUESTS:
        return role == "worker"
    if kind in CLIENT_REQUESTS:
        return role in ("client", "admin")
    if kind in ADMIN_REQUESTS:
        return role == "admin"
    if isinstance(msg, Control):
        return role == "admin" or (role == "client" and msg.action in CLIENT_ACTIONS)
    return False


class Guard:
    """Checks each secured message's User-Id before its handler: refusals are answered, counted and logged once
    per connection (within the RefusalLog's budget, shared with bad messages)."""

    def __init__(self, ring: KeyRing, handlers: Handlers, settings: dict, refusals: RefusalLog) -> None:
        self.ring, self.handlers, self.settings, self.refusals = ring, handlers, settings, refusals
        self.told = RefusedConnections()
        settings["refused_messages"] = 0

    def refuse(self, identity: bytes | None, key: str | None, what: str, req_id: int, code: str, why: str,
               connection: Hashable = None) -> bool:
        """Answer (on the ROUTER) and count a refusal; log it if it is the first of its connection (`connection`: a
        PULL message's; a ROUTER message's is its routing id). `why` holds only printable, short peer-provided
        text."""
        self.settings["refused_messages"] += 1
        if self.told.first(key or "-", identity if connection is None else connection):
            self.refusals.write(key or "-", logging.WARNING, "refused %s from key %s: %s; later refusals of this "
                                "connection are counted only", what, printable((key or "none")[:8], 8), why)
        if identity is not None:
            self.handlers.reply_error(identity, req_id, code, why)
        return False

    def screen(self, identity: bytes, key: str | None, frames: list[bytes], now: float) -> bool:
        """Before decoding: whether the ROUTER message `frames` ([identity, header, body...]) with ZAP User-Id `key`
        may be decoded. An accepted key's may; a pending or unknown key's only when small (a bigger one is
        answered `pending`, the key recorded, and dropped unread); a message with no valid key, or from a key
        rejected or revoked while connected, never."""
        state = self.ring.state(key)
        if state == "accepted":
            return True
        cls = KINDS.get(frames[1][1]) if len(frames) > 1 and len(frames[1]) == 2 else None
        what = cls.__name__ if cls is not None else "a message"
        if key is None or not is_z85_key(key):
            return self.refuse(identity, key, what, 0, "forbidden", "no CURVE key")
        if state in CUT_OFF:
            return self.refuse(identity, key, what, 0, "revoked", self.ring.cut_off(key))
        size = sum(len(frame) for frame in frames[1:])
        if size <= PENDING_MAX_BYTES:
            return True
        self._seen(identity, key, "worker" if cls is Register else "client", now)
        return self.refuse(identity, key, what, 0, "pending",
                           f"key {key} is pending; its message of {size} bytes was not read (at most "
                           f"{PENDING_MAX_BYTES} before the key is accepted); on the master run: "
                           f"{self.ring.accept_hint(key)}")

    def admit(self, identity: bytes, key: str | None, msg: Message, now: float) -> bool:
        """Whether the ROUTER message `msg`, sent with ZAP User-Id `key`, may reach its handler."""
        ring = self.ring
        state = ring.state(key)
        req_id = getattr(msg, "req_id", 0)
        if key is None or not is_z85_key(key):
            return self.refuse(identity, key, type(msg).__name__, req_id, "forbidden", "no CURVE key")
        if state in (None, "pending"):
            return self._pending(identity, key, msg, now)
        if state != "accepted":
            return self.refuse(identity, key, type(msg).__name__, req_id, "revoked", self.ring.cut_off(key))
        role = ring.rows[key]["role"]
        if not may(role, msg):
            what = f"Control {printable(msg.action, 32)}" if isinstance(msg, Control) else type(msg).__name__
            return self.refuse(identity, key, what, req_id, "forbidden", f"a {role} key may not send {what}")
        ring.peers[key] = identity
        self.handlers.account = key.encode()   # the submitter's cap counts per key, not per connection
        if isinstance(msg, Register):
            if not self._binding_ok(identity, key, msg):
                return False
            ring.bind(key, msg)
            peers = self.handlers.peers
            for stale in [i for i, d in peers.items() if d == msg.device_id and i != identity]:
                del peers[stale]
            peers[identity] = msg.device_id
        return True

    def _seen(self, identity: bytes, key: str, role: str, now: float) -> bool:
        """Record a key nobody accepted (evicting the least recently heard pending keys past MAX_PENDING)."""
        new = key not in self.ring.rows
        evicted = self.ring.seen(key, role, identity, now)
        if evicted:
            self.refusals.write(key, logging.INFO, "evicted %d pending key(s) (%s...), the least recently "
                                "heard: at most %d keys wait for acceptance", len(evicted), evicted[0][:8], MAX_PENDING)
        return new

    def _pending(self, identity: bytes, key: str, msg: Message, now: float) -> bool:
        """A key nobody accepted: recorded (a Register's claim too, which binds nothing), then refused."""
        new = self._seen(identity, key, "worker" if isinstance(msg, Register) else "client", now)
        if isinstance(msg, Register):
            why = self.ring.claim(key, msg)
            if why is not None:
                return self.refuse(identity, key, "Register", 0, "forbidden", why)
        hint = self.ring.accept_hint(key)
        if new:
            row = self.ring.rows[key]
            claim = f", claims device {printable(row['device_id'], 64)} on host {printable(row['hostname'], 64)}" \
                if row["device_id"] is not None else ""
            self.refusals.write(key, logging.INFO, "new key %s... pending (asks to be a %s%s); accept it "
                                "with: %s", key[:8], row["role"], claim, hint)
            self.settings["refused_messages"] += 1
            self.handlers.reply_error(identity, getattr(msg, "req_id", 0), "pending",
                                      f"key {key} is pending; on the master run: {hint}")
            return False
        return self.refuse(identity, key, type(msg).__name__, getattr(msg, "req_id", 0), "pending",
                           f"key {key} is pending; on the master run: {hint}")

    def _binding_ok(self, identity: bytes, key: str, msg: Register) -> bool:
        bound = self.ring.rows[key]["device_id"]
        if bound is not None and bound != msg.device_id:
            return self.refuse(identity, key, "Register", 0, "forbidden",
                               f"this key belongs to device {printable(bound, 64)}, not "
                               f"{printable(msg.device_id, 64)}")
        owner = self.ring.owner(msg.device_id)
        if owner is not None and owner != key:
            return self.refuse(identity, key, "Register", 0, "forbidden",
                               f"device {printable(msg.device_id, 64)} belongs to another key ({owner[:8]}...)")
        return True

    def screen_heartbeat(self, key: str | None, connection: Hashable) -> bool:
        """Before decoding a PULL message: only an accepted key's (ZAP lets no other in; this catches a key whose
        state changed while it stayed connected). `connection` tells the PULL's connections apart (its fd)."""
        if self.ring.state(key) == "accepted":
            return True
        return self.refuse(None, key, "Heartbeat", 0, "forbidden", f"heartbeat from a key that is "
                           f"{self.ring.state(key) or 'unknown'}", connection)

    def admit_heartbeat(self, key: str | None, msg: Heartbeat, connection: Hashable) -> bool:
        row = self.ring.rows.get(key) if key else None
        if row is None or row["state"] != "accepted" or row["role"] != "worker":
            return self.refuse(None, key, "Heartbeat", 0, "forbidden", f"heartbeat from a key that is "
                               f"{row['state'] + ' ' + row['role'] if row else 'unknown'}", connection)
        if row["device_id"] != msg.device_id:
            return self.refuse(None, key, "Heartbeat", 0, "forbidden",
                               f"heartbeat for device {printable(msg.device_id, 64)} from the key of device "
                               f"{printable(row['device_id'], 64)}", connection)
        return True


def user_id(frame: zmq.Frame) -> str | None:
    """The ZAP User-Id (the peer's z85 public key) a message arrived with."""
    try:
        return frame.get("User-Id")
    except zmq.ZMQError:
        return None


def pull_connection(frame: zmq.Frame) -> Hashable:
    """Which of the PULL's connections a message came by: its file descriptor (ZMQ_SRCFD), or None where libzmq
    does not say (then all of a key's PULL connections are one for the refusal log)."""
    try:
        return ("pull", frame.get(zmq.SRCFD))
    except (zmq.ZMQError, AttributeError):
        return ("pull", None)
