"""The `keys` table: CURVE public keys, their enrollment state, role and bound device.

The master stages what it learns (a key seen, a device bound) into its turn's commit and never writes a key's
state; the `keys` commands change states straight in the ledger file (see docs/architecture.md, Security)."""
from __future__ import annotations

import time

import sqlite_utils

from ..errors import UsageError

KEY_STATES = ("pending", "accepted", "rejected", "revoked")
KEY_ROLES = ("worker", "client", "admin")
# state -> the states a `keys` command may move it to
TRANSITIONS = {None: {"accepted"}, "pending": {"accepted", "rejected", "revoked"},
               "accepted": {"revoked"}, "rejected": {"accepted", "revoked"}, "revoked": set()}
COLUMNS = "public_key, state, role, name, device_id, hostname, first_seen_at, last_seen_at, changed_at"
_SEEN = ("INSERT INTO keys (public_key, state, role, first_seen_at, last_seen_at, changed_at) "
         "VALUES (?, 'pending', ?, ?, ?, ?) ON CONFLICT(public_key) DO UPDATE SET last_seen_at=excluded.last_seen_at")
_DEVICE = ("UPDATE keys SET device_id=coalesce(device_id, ?), name=coalesce(name, ?), hostname=? "
           "WHERE public_key=?")
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


def stage_authorized(store, key: str, role: str, name: str, now: float) -> None:
    """A certificate found in authorized_keys_dir: accepted, unless an operator already rejected or revoked it."""
    store.stage(_AUTHORIZED, (key, role, name, now, now))


def list_keys(db: sqlite_utils.Database, state: str | None = None) -> list[dict]:
    where, params = ("WHERE state = ?", (state,)) if state else ("", ())
    return list(db.query(f"SELECT {COLUMNS} FROM keys {where} ORDER BY first_seen_at, public_key", params))


def find_key(db: sqlite_utils.Database, ref: str) -> dict | None:
    """A key by its z85 text, a unique prefix of it (8+ characters), its name or its device id."""
    rows = list(db.query(f"SELECT {COLUMNS} FROM keys WHERE public_key = ?", (ref,)))
    if not rows and len(ref) >= 8:
        rows = list(db.query(f"SELECT {COLUMNS} FROM keys WHERE substr(public_key, 1, ?) = ?", (len(ref), ref)))
    if not rows:
        rows = list(db.query(f"SELECT {COLUMNS} FROM keys WHERE name = ? OR device_id = ?", (ref, ref)))
    if len(rows) > 1:
        live = [r for r in rows if r["state"] in ("pending", "accepted")]
        if len(live) == 1:
            return live[0]
        raise UsageError(f"{ref!r} matches {len(rows)} keys", "give the public key (keys list shows it)")
    return rows[0] if rows else None


def change_state(db: sqlite_utils.Database, key: str, row: dict | None, state: str, role: str | None = None,
                 name: str | None = None) -> dict:
    """Move one key to `state` (one transaction), checking TRANSITIONS; `row` None inserts a new accepted key."""
    current = row["state"] if row else None
    if state not in TRANSITIONS[current]:
        allowed = ", ".join(sorted(TRANSITIONS[current])) or "nothing (a revoked key stays revoked; generate a new one)"
        raise UsageError(f"key {key[:8]}... is {current or 'unknown'} and cannot become {state}",
                         f"from {current or 'unknown'} it can become: {allowed}")
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
    return next(iter(db.query(f"SELECT {COLUMNS} FROM keys WHERE public_key = ?", (key,))))


def data_version(db: sqlite_utils.Database) -> int:
    """Moves when another connection (a `keys` command) commits to the ledger."""
    return db.execute("PRAGMA data_version").fetchone()[0]
