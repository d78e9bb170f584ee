"""The master's copy of the `keys` table: which keys ZAP lets in, which device each accepted key holds, what each
pending key claims, and the bound on pending keys (the least recently heard one is evicted past MAX_PENDING)."""
from __future__ import annotations

import logging
import shlex
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..protocol import Register
from ..security import load_keypair, read_metadata
from ..store import key_store
from ..text import printable

if TYPE_CHECKING:
    from ..store.task_store import TaskStore

logger = logging.getLogger(__name__)
MAX_PENDING = 1000
CLAIM_CHARS = 128            # the longest device id a pending key may claim, and where its host name is cut
ROUTER_DOMAIN = "zmqgrid.router"
ACCEPT = "python main.py keys accept"


@dataclass(frozen=True, slots=True)
class KeyClaim:
    """What a pending key's Register may leave in the ledger: the device id it claims (None when it is longer
    than CLAIM_CHARS or not printable: such a key can only be accepted by key) and its host name, cut short."""
    device_id: str | None
    hostname: str

    @classmethod
    def of(cls, msg: Register) -> KeyClaim:
        device = msg.device_id
        fits = 0 < len(device) <= CLAIM_CHARS and printable(device, CLAIM_CHARS) == device
        return cls(device if fits else None, printable(msg.hostname, CLAIM_CHARS))


class KeyRing:
    """The `keys` table in memory. `callback` runs in the ZAP thread and only reads `rows`; every change is made
    by the master's thread (rows are replaced whole or set one key at a time, both atomic under the GIL)."""

    def __init__(self, store: TaskStore, authorized_dir: str | None, now: float) -> None:
        self.store = store
        self.rows: dict[str, dict] = key_store.load_keys(store.db)
        self.version = key_store.data_version(store.db)
        self.peers: dict[str, bytes] = {}        # key -> ROUTER identity of its latest connection
        self._staged: dict[str, float] = {}      # key -> when its last_seen_at was last staged
        self.pending: OrderedDict[str, None] = OrderedDict()   # pending keys, least recently heard first
        self._order_pending()
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
            self.pending.pop(public, None)
            claimed = self.rows[public]["device_id"]
            if claimed is not None and self.owner(claimed) not in (None, public):
                self.rows[public]["device_id"] = None   # it binds whatever device nobody holds at its next Register
                key_store.stage_unclaim(self.store, public)
            logger.info("key %s accepted from %s (role %s)", public[:8], path, role)

    # ------------------------------------------------------------ ZAP thread

    def callback(self, domain: str, key: bytes) -> bool:
        """ZAP: accepted keys everywhere; pending and unknown ones on the ROUTER only (to be told `pending`). An
        unknown key is never denied for being one too many: the master evicts old pending keys instead."""
        row = self.rows.get(key.decode("ascii", "replace"))
        state = row["state"] if row else None
        if state == "accepted":
            return True
        return domain == ROUTER_DOMAIN and state not in ("rejected", "revoked")

    # ------------------------------------------------------------ master thread

    def state(self, key: str | None) -> str | None:
        row = self.rows.get(key) if key else None
        return row["state"] if row else None

    def pending_count_for(self, key: str | None) -> int | None:
        """How many keys are pending, told to an accepted admin key only (None for any other: a client key may not
        manage keys and learns nothing of who is enrolling)."""
        row = self.rows.get(key) if key else None
        if row is None or row["state"] != "accepted" or row["role"] != "admin":
            return None
        return len(self.pending)

    def seen(self, key: str, role: str, identity: bytes, now: float) -> list[str]:
        """Record an unaccepted key as pending (first time) and when it was last heard from (staged at most once a
        second); returns the keys evicted to make room (the least recently heard pending ones)."""
        evicted: list[str] = []
        if key not in self.rows:
            while len(self.pending) >= MAX_PENDING:
                evicted.append(self._evict(next(iter(self.pending))))
            self.rows[key] = {"public_key": key, "state": "pending", "role": role, "name": None, "device_id": None,
                              "hostname": None, "first_seen_at": now, "last_seen_at": now, "changed_at": now}
        self.pending[key] = None
        self.pending.move_to_end(key)
        self.peers[key] = identity
        if now - self._staged.get(key, 0.0) >= 1.0:
            self._staged[key] = now
            key_store.stage_seen(self.store, key, role, now)
        return evicted

    def _evict(self, key: str) -> str:
        self.pending.pop(key, None)
        self.rows.pop(key, None)
        self.peers.pop(key, None)
        self._staged.pop(key, None)
        key_store.stage_evicted(self.store, key)
        return key

    def claim(self, key: str, msg: Register) -> str | None:
        """A pending key's Register: note the device it claims (the first one, written once), which binds nothing.
        Returns why it is refused beyond being pending (another device claimed, or a device an accepted key holds)."""
        row = self.rows[key]
        claim = KeyClaim.of(msg)
        if row["device_id"] is None and row["hostname"] is None:
            row["device_id"], row["hostname"] = claim.device_id, claim.hostname
            key_store.stage_claim(self.store, key, claim.device_id, claim.hostname)
        if row["device_id"] is not None and row["device_id"] != msg.device_id:
            return f"this key claims device {printable(row['device_id'], 64)}, not {printable(msg.device_id, 64)}"
        holder = self.owner(msg.device_id)
        if holder is not None and holder != key:
            return f"device {printable(msg.device_id, 64)} belongs to another key ({holder[:8]}...)"
        return None

    def owner(self, device_id: str) -> str | None:
        """The accepted key that holds the device id: a pending key's claim holds nothing."""
        for key, row in list(self.rows.items()):
            if row["device_id"] == device_id and row["state"] == "accepted":
                return key
        return None

    def bind(self, key: str, msg: Register) -> None:
        """An accepted key's Register: it holds the device from now on (if it held none yet)."""
        row = self.rows[key]
        if row["device_id"] is None:
            row["device_id"] = msg.device_id
        row["name"] = row["name"] or msg.name
        row["hostname"] = printable(msg.hostname, CLAIM_CHARS)
        key_store.stage_device(self.store, key, msg.device_id, msg.name, row["hostname"])

    def accept_hint(self, key: str) -> str:
        """`keys accept REF`, ready to paste: the claimed device id when only this live key has it, else the key."""
        device = self.rows[key]["device_id"]
        if device is not None:
            others = [k for k, r in list(self.rows.items())
                      if k != key and r["device_id"] == device and r["state"] in key_store.LIVE]
            if not others:
                return f"{ACCEPT} {shlex.quote(device)}"
        return f"{ACCEPT} {shlex.quote(key)}"

    def cut_off(self, key: str) -> str:
        """What a rejected or revoked key is told (`E revoked`), with what to do: a rejected key may still be accepted
        (by key: a rejected one is no live claim of its device), a revoked one never again."""
        state = self.state(key)
        if state == "rejected":
            return (f"key {key[:8]}... is rejected: the master reads nothing from it; to let it in, on the master "
                    f"run: {ACCEPT} {shlex.quote(key)}")
        return (f"key {key[:8]}... is revoked: the master never reads from it again; on the worker's machine run "
                f"python main.py keys generate --role worker --name NEW and set key_file to NEW.key_secret, then "
                f"on the master: {ACCEPT} NEW.key")

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
        self._order_pending()
        return changed

    def _order_pending(self) -> None:
        """`pending` from `rows`: the keys already in it keep their order, the others go first by last seen."""
        rows = self.rows
        known = [k for k in self.pending if (rows.get(k) or {}).get("state") == "pending"]
        others = sorted((k for k, r in rows.items() if r["state"] == "pending" and k not in self.pending),
                        key=lambda k: rows[k]["last_seen_at"] or 0.0)
        self.pending = OrderedDict.fromkeys([*others, *known])
        self._staged = {k: t for k, t in self._staged.items() if k in self.pending}
