"""The `keys` table: CURVE public keys, their enrollment state, role and device.

For an accepted key `device_id` is the device bound to it; for a pending one it is only the device the key claims,
which binds nothing until the key is accepted. The master stages what it learns (a key seen, a device claimed or
bound, a pending key evicted) into its turn's commit and never writes a key's state; the `keys` commands change
states straight in the ledger file (see docs/architecture.md, Security)."""
from __future__ import annotations

import shlex
import time

import sqlite_utils

from ..errors import UsageError
from ..text import printable

KEY_STATES = ("pending", "accepted", "rejected", "revoked")
LIVE = ("pending", "accepted")          # the states that may hold (accepted) or claim (pending) a device
KEY_ROLES = ("worker", "client", "admin")
# state -> the states a `keys` command may move it to
TRANSITIONS = {None: {"accepted"}, "pending": {"accepted", "rejected", "revoked"},
               "accepted": {"revoked"}, "rejected": {"accepted", "revoked"}, "revoked": set()}
COLUMNS = "public_key, state, role, name, device_id, hostname, first_seen_at, last_seen_at, changed_at"
_SEEN = ("INSERT INTO keys (public_key, state, role, first_seen_at, last_seen_at, changed_at) "
         "VALUES (?, 'pending', ?, ?, ?, ?) ON CONFLICT(public_key) DO UPDATE SET last_seen_at=excluded.last_seen_at")
_DEVICE = ("UPDATE keys SET device_id=coalesce(device_id, ?), name=coalesce(name, ?), hostname=? "
           "WHERE public_key=?")
# A pending key's claim is written once; `state = 'pending'` so a key accepted meanwhile keeps what it has.
_CLAIM = ("UPDATE keys SET device_id=coalesce(device_id, ?), hostname=coalesce(hostname, ?) "
          "WHERE public_key=? AND state='pending'")
_UNCLAIM = "UPDATE keys SET device_id=NULL WHERE public_key=? AND state='accepted'"
# Eviction deletes only a key still pending: one an operator accepted or rejected meanwhile stays.
_EVICT = "DELETE FROM keys WHERE public_key=? AND state='pending'"
_AUTHORIZED = ("INSERT INTO keys (public_key, state, role, name, first_seen_at, changed_at) "
               "VALUES (?, 'accepted', ?, ?, ?, ?) ON CONFLICT(public_key) DO UPDATE SET "
               "state='accepted', role=excluded.role, changed_at=excluded.changed_at WHERE state='pending'")


def load_keys(db: sqlite_utils.Database) -> dict[str, dict]:
    """public key -> its row."""
    return {row["public_key"]: row for row in db.query(f"SELECT {COLUMNS} FROM keys")}


def stage_seen(store, key: str, role: str, now: float) -> None:
    """A key reached the master: a new one is pending (asking for `role`); a known one only gets last_seen_at."""
    store.stage(_SEEN, (key, role, now, now, now))


def stage_device(store, key: str, device_id: str, name: str, hostname: str) -> None:
    """Bind the key to the device it registered (kept if already bound) and note the device's name and host."""
    store.stage(_DEVICE, (device_id, name, hostname, key))


def stage_claim(store, key: str, device_id: str | None, hostname: str) -> None:
    """A pending key's first Register: the device it claims (None: too long or not printable) and its host."""
    store.stage(_CLAIM, (device_id, hostname, key))


def stage_unclaim(store, key: str) -> None:
    """An accepted key whose pending claim names a device another accepted key holds binds at its next Register."""
    store.stage(_UNCLAIM, (key,))


def stage_evicted(store, key: str) -> None:
    store.stage(_EVICT, (key,))


def stage_authorized(store, key: str, role: str, name: str, now: float) -> None:
    """A certificate found in authorized_keys_dir: accepted, unless an operator already rejected or revoked it."""
    store.stage(_AUTHORIZED, (key, role, name, now, now))


def list_keys(db: sqlite_utils.Database, state: str | None = None) -> list[dict]:
    where, params = ("WHERE state = ?", (state,)) if state else ("", ())
    return list(db.query(f"SELECT {COLUMNS} FROM keys {where} ORDER BY first_seen_at, public_key", params))


class AmbiguousKey(UsageError):
    """Raised when a name or device id matches several keys (pending ones claiming one device id, say); `rows`
    holds them, for the command to list so the operator can choose by key."""

    def __init__(self, ref: str, rows: list[dict]) -> None:
        super().__init__(f"{printable(ref, 64)!r} matches {len(rows)} keys "
                         f"({', '.join(sorted({r['state'] for r in rows}))}); nothing changed",
                         "give the one you mean by its key (listed above), quoted for the shell, e.g. "
                         + shlex.quote(rows[0]["public_key"]))
        self.rows = rows


class KeyHeld(UsageError):
    """Raised when a key would be accepted for a device that another accepted key holds; `holder` is that key."""

    def __init__(self, message: str, holder: str) -> None:
        super().__init__(message, "if that device's key changed, revoke the old one first")
        self.holder = holder


class KeyGone(UsageError):
    """Raised when the key to change left the ledger between reading and writing it (the master evicted it)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "list the keys and try again")


def find_key(db: sqlite_utils.Database, ref: str) -> dict | None:
    """A key by its z85 text, a unique prefix of it (8+ characters), its name or its device id.

    By name or device id, one live key (pending or accepted) is taken over keys rejected or revoked; several live
    ones raise AmbiguousKey: a device id claimed by two pending keys names neither."""
    rows = list(db.query(f"SELECT {COLUMNS} FROM keys WHERE public_key = ?", (ref,)))
    if not rows and len(ref) >= 8:
        rows = list(db.query(f"SELECT {COLUMNS} FROM keys WHERE substr(public_key, 1, ?) = ?", (len(ref), ref)))
    if not rows:
        rows = list(db.query(f"SELECT {COLUMNS} FROM keys WHERE name = ? OR device_id = ? "
                             "ORDER BY first_seen_at, public_key", (ref, ref)))
    if len(rows) > 1:
        live = [r for r in rows if r["state"] in LIVE]
        if len(live) == 1:
            return live[0]
        raise AmbiguousKey(ref, live or rows)
    return rows[0] if rows else None


def holder(db: sqlite_utils.Database, row: dict) -> dict | None:
    """The other accepted key that holds the device `row` claims, if any: accepting `row` then would give one
    device two keys, so the holder must be revoked first."""
    if not row.get("device_id"):
        return None
    rows = list(db.query(f"SELECT {COLUMNS} FROM keys WHERE device_id = ? AND state = 'accepted' "
                         "AND public_key != ?", (row["device_id"], row["public_key"])))
    return rows[0] if rows else None


def change_state(db: sqlite_utils.Database, key: str, row: dict | None, state: str, role: str | None = None,
                 name: str | None = None) -> dict:
    """Move one key to `state` (one transaction), checking TRANSITIONS; `row` None inserts a new accepted key."""
    current = row["state"] if row else None
    if state not in TRANSITIONS[current]:
        allowed = ", ".join(sorted(TRANSITIONS[current])) or "nothing (a revoked key stays revoked; generate a new one)"
        raise UsageError(f"key {key[:8]}... is {current or 'unknown'} and cannot become {state}",
                         f"from {current or 'unknown'} it can become: {allowed}")
    if state == "accepted" and row is not None:
        held = holder(db, row)
        if held is not None:
            raise KeyHeld(f"key {key[:8]}... claims device {printable(row['device_id'], 64)!r}, which the accepted "
                          f"key {held['public_key'][:8]}... holds; nothing changed", held["public_key"])
    role = role or (row["role"] if row else "worker")
    if role not in KEY_ROLES:
        raise UsageError(f"unknown role {role!r}", "choose one of " + ", ".join(KEY_ROLES))
    now = time.time()
    with db.atomic():
        if row is None:
            db.execute("INSERT INTO keys (public_key, state, role, name, first_seen_at, changed_at) "
                       "VALUES (?, ?, ?, ?, ?, ?)", (key, state, role, name, now, now))
        else:
            db.execute("UPDATE keys SET state = ?, role = ?, name = coalesce(?, name), changed_at = ? "
                       "WHERE public_key = ?", (state, role, name, now, key))
    changed = list(db.query(f"SELECT {COLUMNS} FROM keys WHERE public_key = ?", (key,)))
    if not changed:   # the master evicted the pending key between our read and our write
        raise KeyGone(f"key {key[:8]}... is no longer in the ledger (the master evicts the oldest pending keys "
                      "when more than 1,000 wait)")
    return changed[0]


def data_version(db: sqlite_utils.Database) -> int:
    """Moves when another connection (a `keys` command) commits to the ledger."""
    return db.execute("PRAGMA data_version").fetchone()[0]
