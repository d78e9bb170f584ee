"""CURVE on the master: which keys may connect (ZAP), and what each secured message may do (key state, role,
device binding). Built only when `curve` is on; the open master never touches this module."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

import zmq

from ..protocol import Control, Heartbeat, Message, Register
from ..security import is_z85_key, load_keypair, read_metadata
from ..store import key_store

if TYPE_CHECKING:
    from ..store.task_store import TaskStore
    from .handlers import Handlers

logger = logging.getLogger(__name__)
MAX_PENDING = 1000
ROUTER_DOMAIN = "zmqgrid.router"
WORKER_REQUESTS = frozenset({"Register", "Credit", "Results", "Output"})
CLIENT_REQUESTS = frozenset({"Submit", "Query"})
CLIENT_ACTIONS = frozenset({"watch"})   # every other Control action needs an admin key
LIVE = ("pending", "accepted")          # the states whose device binding counts


def may(role: str, msg: Message) -> bool:
    """The role table of docs/architecture.md, Security."""
    kind = type(msg).__name__
    if kind in WORKER_REQUESTS:
        return role == "worker"
    if kind in CLIENT_REQUESTS:
        return role in ("client", "admin")
    if isinstance(msg, Control):
        return role == "admin" or (role == "client" and msg.action in CLIENT_ACTIONS)
    return False


class KeyRing:
    """The `keys` table in memory. `callback` runs in the ZAP thread and only reads `rows`; every change is made
    by the master's thread (rows are replaced whole or set one key at a time, both atomic under the GIL)."""

    def __init__(self, store: TaskStore, authorized_dir: str | None, now: float) -> None:
        self.store = store
        self.rows: dict[str, dict] = key_store.load_keys(store.db)
        self.version = key_store.data_version(store.db)
        self.peers: dict[str, bytes] = {}        # key -> ROUTER identity of its latest connection
        self._staged: dict[str, float] = {}      # key -> when its last_seen_at was last staged
        if authorized_dir:
            self.authorize(Path(authorized_dir), now)

    def authorize(self, folder: Path, now: float) -> None:
        """Accept the public certificates in `folder` (staged: the caller commits)."""
        if not folder.is_dir():
            logger.warning("authorized_keys_dir %s is not a directory; no key accepted from it", folder)
            return
        for path in sorted(folder.glob("*.key")):
            try:
                public = load_keypair(path, "authorized", need_secret=False)[0].decode()
                meta = read_metadata(path)
            except Exception as e:   # one bad file must not keep the master down
                logger.warning("authorized_keys_dir: skipping %s (%s)", path.name, e)
                continue
            role = meta.get("role") if meta.get("role") in key_store.KEY_ROLES else "worker"
            row = self.rows.get(public)
            if row is not None and row["state"] in ("accepted", "rejected", "revoked"):
                continue   # an operator's decision stands
            key_store.stage_authorized(self.store, public, role, meta.get("name") or path.stem, now)
            self.rows[public] = dict(row or {"public_key": public, "device_id": None, "first_seen_at": now},
                                     state="accepted", role=role, name=meta.get("name") or path.stem)
            logger.info("key %s accepted from %s (role %s)", public[:8], path, role)

    # ------------------------------------------------------------ ZAP thread

    def callback(self, domain: str, key: bytes) -> bool:
        """ZAP: accepted keys everywhere; pending and unknown ones on the ROUTER only (to be told `pending`)."""
        row = self.rows.get(key.decode("ascii", "replace"))
        state = row["state"] if row else None
        if state == "accepted":
            return True
        if domain != ROUTER_DOMAIN or state in ("rejected", "revoked"):
            return False
        return state == "pending" or self.pending_count() < MAX_PENDING

    def pending_count(self) -> int:
        return sum(1 for r in list(self.rows.values()) if r["state"] == "pending")

    # ------------------------------------------------------------ master thread

    def state(self, key: str | None) -> str | None:
        row = self.rows.get(key) if key else None
        return row["state"] if row else None

    def seen(self, key: str, role: str, now: float) -> None:
        """Record an unaccepted key as pending (first time) and its last-seen time (at most once a second)."""
        if key not in self.rows:
            self.rows[key] = {"public_key": key, "state": "pending", "role": role, "name": None, "device_id": None,
                              "hostname": None, "first_seen_at": now, "last_seen_at": now, "changed_at": now}
            logger.info("new key %s pending (asks to be a %s); accept it with: python main.py keys accept %s",
                        key[:8], role, key)
        if now - self._staged.get(key, 0.0) >= 1.0:
            self._staged[key] = now
            key_store.stage_seen(self.store, key, role, now)

    def owner(self, device_id: str) -> str | None:
        """The pending or accepted key the device id is bound to."""
        for key, row in list(self.rows.items()):
            if row["device_id"] == device_id and row["state"] in LIVE:
                return key
        return None

    def bind(self, key: str, msg: Register) -> None:
        row = self.rows[key]
        if row["device_id"] is None:
            row["device_id"] = msg.device_id
        row["name"] = row["name"] or msg.name
        row["hostname"] = msg.hostname
        key_store.stage_device(self.store, key, msg.device_id, msg.name, msg.hostname)

    def refresh(self) -> list[tuple[str, str | None, dict]]:
        """Re-read the table when another connection (a `keys` command) committed: [(key, old state, new row)]."""
        version = key_store.data_version(self.store.db)
        if version == self.version:
            return []
        self.version = version
        fresh = key_store.load_keys(self.store.db)
        changed = [(k, self.state(k), row) for k, row in fresh.items()
                   if self.state(k) != row["state"] or (self.rows.get(k) or {}).get("role") != row["role"]]
        # Keys staged this turn but not committed yet are kept.
        self.rows = {**{k: r for k, r in self.rows.items() if k not in fresh}, **fresh}
        return changed


class Guard:
    """Checks each secured message's User-Id before its handler: refusals are answered, logged and counted."""

    def __init__(self, ring: KeyRing, handlers: Handlers, settings: dict) -> None:
        self.ring, self.handlers, self.settings = ring, handlers, settings
        settings["refused_messages"] = 0
        self._logged: dict[str, float] = {}

    def refuse(self, identity: bytes | None, key: str | None, msg: Message, code: str, why: str) -> bool:
        self.settings["refused_messages"] += 1
        now = time.monotonic()
        if now - self._logged.get(key or "", 0.0) >= 5.0:   # a flood of refusals is one log line per key per 5 s
            self._logged[key or ""] = now
            logger.warning("refused %s from key %s: %s", type(msg).__name__, (key or "none")[:8], why)
        if identity is not None:
            self.handlers.reply_error(identity, getattr(msg, "req_id", 0), code, why)
        return False

    def admit(self, identity: bytes, key: str | None, msg: Message, now: float) -> bool:
        """Whether the ROUTER message `msg`, sent with ZAP User-Id `key`, may reach its handler."""
        ring = self.ring
        state = ring.state(key)
        if key is None or not is_z85_key(key):
            return self.refuse(identity, key, msg, "forbidden", "no CURVE key")
        if state in (None, "pending"):
            ring.seen(key, "worker" if isinstance(msg, Register) else "client", now)
            ring.peers[key] = identity
            if isinstance(msg, Register) and self._binding_ok(identity, key, msg):
                ring.bind(key, msg)
            ref = msg.device_id if isinstance(msg, Register) else f"'{key}'"
            return self.refuse(identity, key, msg, "pending",
                               f"key {key} is pending; on the master run: python main.py keys accept {ref}")
        if state != "accepted":
            return self.refuse(identity, key, msg, "forbidden", f"key {key[:8]}... is {state}")
        role = ring.rows[key]["role"]
        if not may(role, msg):
            what = f"Control {msg.action}" if isinstance(msg, Control) else type(msg).__name__
            return self.refuse(identity, key, msg, "forbidden", f"a {role} key may not send {what}")
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

    def _binding_ok(self, identity: bytes, key: str, msg: Register) -> bool:
        bound = self.ring.rows[key]["device_id"]
        if bound is not None and bound != msg.device_id:
            return self.refuse(identity, key, msg, "forbidden",
                               f"this key belongs to device {bound}, not {msg.device_id}")
        owner = self.ring.owner(msg.device_id)
        if owner is not None and owner != key:
            return self.refuse(identity, key, msg, "forbidden",
                               f"device {msg.device_id} belongs to another key ({owner[:8]}...)")
        return True

    def admit_heartbeat(self, key: str | None, msg: Heartbeat) -> bool:
        row = self.ring.rows.get(key) if key else None
        if row is None or row["state"] != "accepted" or row["role"] != "worker":
            return self.refuse(None, key, msg, "forbidden", f"heartbeat from a key that is "
                               f"{row['state'] + ' ' + row['role'] if row else 'unknown'}")
        if row["device_id"] != msg.device_id:
            return self.refuse(None, key, msg, "forbidden", f"heartbeat for device {msg.device_id!r} from the key "
                               f"of device {row['device_id']!r}")
        return True


def user_id(frame: zmq.Frame) -> str | None:
    """The ZAP User-Id (the peer's z85 public key) a message arrived with."""
    try:
        return frame.get("User-Id")
    except zmq.ZMQError:
        return None
