"""`keys generate|list|accept|reject|revoke`: CURVE certificates and their enrollment in the master's ledger.

Everything but `generate` works on the ledger file (`--db`), on the master's machine: whoever may write the
ledger is the administrator already. A running master applies a change within timeout_check_interval."""
from __future__ import annotations

from pathlib import Path

import click

from ..config import load_config
from ..errors import EXIT_OK, UsageError
from ..security import KEY_ROLES, ROLES, generate, is_z85_key, load_keypair, read_metadata
from ..store import key_store
from ..store.schema import open_database
from ..text import printable
from .common import config_option, db_option, json_option
from .render import emit_json, field, table, when

# Where the public file goes: the master's own key to every peer, a peer's key to the master.
SHARE_MASTER = "copy it into keys/ on every worker and client machine"
SHARE_PEER = ("copy it to the master's machine and run keys accept with it there, or put it in its "
              "authorized_keys_dir")

# A waiting worker asks again every 2 s over one connection, which the master tells of the accept at once.
WORKER_JOINS = "a waiting worker joins within a second or two; see it with: python main.py devices list"


def _ledger(db_path: str | None, config_path: str | None, create: bool = False):
    config = load_config("master", config_path, flags={"db_path": db_path})
    if not create and not Path(config.db_path).exists():
        raise UsageError(f"no ledger at {config.db_path}", "pass the master's --db, or run this on the master's machine")
    return open_database(config.db_path)


def _show(row: dict, as_json: bool, verb: str) -> None:
    if as_json:
        emit_json(row)
    else:
        click.echo(f"key {row['public_key']} {verb}: role {row['role']}"
                   f"{', device ' + field(row['device_id']) if row['device_id'] else ''}")


def _lookup(db, ref: str) -> dict | None:
    """key_store.find_key; when `ref` names several live keys, they are listed on stderr (key, state, device, host,
    first seen: what tells a genuine worker's key from a squatter's) before the one error line."""
    try:
        return key_store.find_key(db, ref)
    except key_store.AmbiguousKey as e:
        click.echo(f"{len(e.rows)} keys match {printable(ref, 64)!r}:", err=True)
        for r in e.rows:
            click.echo(f"  {r['public_key']}  {r['state']:<8}  device {printable(r['device_id'] or '-', 64)}  "
                       f"host {printable(r['hostname'] or '-', 64)}  first seen {when(r['first_seen_at'])}", err=True)
        raise


def _find(db, ref: str) -> dict:
    row = _lookup(db, ref)
    if row is None:
        raise UsageError(f"no key {ref!r} in the ledger", "see python main.py keys list")
    return row


class _KeyArgument(click.Command):
    """One z85 key in 85 begins with '-': as the KEY argument it is not an option, so it goes after a `--`."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if "--" not in args:
            dashed = [a for a in args if a.startswith("-") and is_z85_key(a)]
            if dashed:
                args = [a for a in args if a not in dashed] + ["--", *dashed]
        return super().parse_args(ctx, args)


@click.group()
def keys() -> None:
    """CURVE keys: generate certificates, and accept, reject or revoke the keys that reach the master."""


@keys.command("generate")
@click.option("--role", required=True, type=click.Choice(KEY_ROLES), help="Who will use the key.")
@click.option("--name", help="File name and label [the role].")
@click.option("--dir", "directory", help="Where to write NAME.key and NAME.key_secret [keys_dir, default keys].")
@json_option
def generate_key(role: str, name: str | None, directory: str | None, as_json: bool) -> int:
    """Write a new certificate pair: NAME.key (public, to share) and NAME.key_secret (owner-only, keep it here).

    \b
    python main.py keys generate --role master            on the master's machine
    python main.py keys generate --role worker --name crawler-01
    """
    folder = directory or load_config("master", None).keys_dir
    made = generate(role, name, folder)
    if as_json:
        emit_json(made)
    else:
        click.echo(f"{role} key {made['public_key']}")
        click.echo(f"public: {made['public_file']}  ({SHARE_MASTER if role == 'master' else SHARE_PEER})")
        click.echo(f"secret: {made['secret_file']}  (keep it on this machine only)")
    return EXIT_OK


@keys.command("list")
@click.option("--state", type=click.Choice(key_store.KEY_STATES), help="Only keys in this state.")
@db_option
@config_option
@json_option
def list_keys(state: str | None, db_path: str | None, config_path: str | None, as_json: bool) -> int:
    """Keys the master knows: state (pending, accepted, rejected, revoked), role, device, first seen.

    \b
    python main.py keys list --state pending     keys waiting to be accepted
    python main.py keys list --json --db /srv/zmqgrid/zmqgrid.db
    """
    db = _ledger(db_path, config_path)
    try:
        rows = key_store.list_keys(db, state)
    finally:
        db.close()
    if as_json:
        emit_json(rows)
        return EXIT_OK
    table([(r["public_key"], r["state"], r["role"], r["device_id"] or "-", r["name"] or "-", r["hostname"] or "-",
            when(r["first_seen_at"]), when(r["last_seen_at"])) for r in rows],
          ["KEY", "STATE", "ROLE", "DEVICE", "NAME", "HOST", "FIRST SEEN", "LAST SEEN"])
    return EXIT_OK


@keys.command("accept", cls=_KeyArgument)
@click.argument("ref", metavar="KEY|NAME|FILE")
@click.option("--role", type=click.Choice(ROLES), help="The key's role [what it asked for; a file's metadata].")
@db_option
@config_option
@json_option
def accept_key(ref: str, role: str | None, db_path: str | None, config_path: str | None, as_json: bool) -> int:
    """Accept a pending key (by key, name or device id), or enroll a new one (by z85 key or public certificate).

    A pending key's device id is only a claim: accepting binds it. When several keys claim the device id, nothing
    is accepted and they are listed (key, host, first seen): accept the right one by its key.

    \b
    python main.py keys accept crawler-01                  a pending worker, by its device id
    python main.py keys accept keys/admin.key              a certificate made by keys generate
    python main.py keys accept 'rq:A4...' --role client    a key given as text
    """
    name = None
    if Path(ref).is_file():
        public = load_keypair(ref, "public", need_secret=False)[0].decode()
        meta = read_metadata(ref)
        role = role or (meta.get("role") if meta.get("role") in ROLES else None)
        ref, name = public, meta.get("name")
    db = _ledger(db_path, config_path, create=True)
    try:
        row = _lookup(db, ref)
        if row is None and not is_z85_key(ref):
            raise UsageError(f"no key {ref!r} in the ledger, and it is not a 40-character z85 key or a certificate file",
                             "see python main.py keys list")
        key = row["public_key"] if row else ref
        accepted = key_store.change_state(db, key, row, "accepted", role, name)
        _show(accepted, as_json, "accepted")
        if accepted["role"] == "worker" and not as_json:
            click.echo(WORKER_JOINS)
    finally:
        db.close()
    return EXIT_OK


def _change(ref: str, state: str, db_path: str | None, config_path: str | None, as_json: bool) -> int:
    db = _ledger(db_path, config_path)
    try:
        row = _find(db, ref)
        _show(key_store.change_state(db, row["public_key"], row, state), as_json, state)
    finally:
        db.close()
    return EXIT_OK


@keys.command("reject", cls=_KeyArgument)
@click.argument("ref", metavar="KEY|NAME")
@db_option
@config_option
@json_option
def reject_key(ref: str, db_path: str | None, config_path: str | None, as_json: bool) -> int:
    """Refuse a pending key: its connections are refused from now on (it may be accepted later).

    \b
    python main.py keys reject crawler-07                  a pending key, by its device id
    python main.py keys reject 'rq:A4...'                  by the key itself (quoted: z85 holds < > & ! $)
    """
    return _change(ref, "rejected", db_path, config_path, as_json)


@keys.command("revoke", cls=_KeyArgument)
@click.argument("ref", metavar="KEY|NAME")
@db_option
@config_option
@json_option
def revoke_key(ref: str, db_path: str | None, config_path: str | None, as_json: bool) -> int:
    """Revoke a key for good: its device goes offline at once and its tasks run elsewhere; nothing it sends is taken.

    \b
    python main.py keys revoke crawler-01                  an accepted worker's key, by its device id
    python main.py keys revoke 'rq:A4...'                  by the key itself (quoted: z85 holds < > & ! $)
    """
    return _change(ref, "revoked", db_path, config_path, as_json)
