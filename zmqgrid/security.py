"""Safe by default: a master binds a non-loopback address only when its sockets are secured (CURVE) or the user said
`--insecure` (and is warned at every start). Key files: generating them and finding each process's own."""
from __future__ import annotations

import ipaddress
import logging
import os
import re
from datetime import datetime
from pathlib import Path

import zmq
import zmq.auth

from .config import Config
from .errors import ConfigError, UsageError
from .transport import Curve

logger = logging.getLogger(__name__)
ROLES = ("worker", "client", "admin")
KEY_ROLES = ("master", *ROLES)
_Z85_KEY = re.compile(rb"[0-9a-zA-Z.\-:+=^!/*?&<>()\[\]{}@%$#]{40}")
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and `localhost`: reachable from this machine only. Anything else (0.0.0.0, *, a host
    name, a LAN address) may be reached from the network."""
    host = host.strip().strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def secured(config: Config) -> bool:
    """Whether the master's sockets are encrypted and authenticated: the `curve` setting."""
    return bool(getattr(config, "curve", False))


def require_safe_bind(config: Config) -> None:
    """Refuse (UsageError, exit 3) to bind a non-loopback address open unless `insecure`; warn when it is."""
    if is_loopback(config.host) or secured(config):
        return
    ports = f"{config.port}, {config.pub_port}, {config.heartbeat_port}"
    if not config.insecure:
        raise UsageError(f"refusing to bind {config.host} without CURVE encryption",
                         f"anyone who reaches ports {ports} could make the workers run any command; bind 127.0.0.1, "
                         "set curve: true (see README, Security), or pass --insecure to run open on a trusted network")
    logger.warning("INSECURE: binding %s without encryption or authentication (--insecure); anyone who reaches "
                   "ports %s can submit tasks that the workers run, and read every result", config.host, ports)


# ------------------------------------------------------------ key files

def is_z85_key(value: str | bytes) -> bool:
    raw = value.encode() if isinstance(value, str) else value
    return _Z85_KEY.fullmatch(raw) is not None


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The `metadata` section of a certificate (role, name), as text."""
    meta: dict[str, str] = {}
    section = ""
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if not line[0].isspace():
            section = line.strip()
        elif section == "metadata" and "=" in line:
            key, value = line.split("=", 1)
            meta[key.strip()] = value.strip().strip("\"'")
    return meta


class CertificateMissing(ConfigError):
    """Raised when a certificate file is missing or cannot be read; `role` is the key role to generate one for, or
    None when generating one is not what to do (another machine's key, to be copied)."""

    def __init__(self, message: str, hint: str, role: str | None) -> None:
        super().__init__(message, hint)
        self.role = role


def load_keypair(path: str | os.PathLike, what: str, need_secret: bool = True,
                 missing_hint: str | None = None) -> tuple[bytes, bytes | None]:
    """(public, secret) z85 keys from a pyzmq certificate; ConfigError naming `what` if it is missing or bad
    (`missing_hint` says what to do when it cannot be read; default: generate one, for the role `what` names)."""
    role = what.split()[0] if missing_hint is None and what.split()[0] in KEY_ROLES else None
    hint = missing_hint or ("generate one" if role else f"give a {'.key_secret' if need_secret else '.key'} file "
                                                         "written by keys generate")

    def missing(why: str) -> CertificateMissing:
        return CertificateMissing(f"{what} certificate {path} {why}", hint, role)

    if not Path(path).is_file():   # pyzmq says "Invalid certificate file" for a file that is not there
        raise missing("does not exist")
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as e:
        raise missing(f"cannot be read ({e})") from None
    if not is_z85_key(public) or (need_secret and (secret is None or not is_z85_key(secret))):
        raise ConfigError(f"{what} certificate {path} holds no valid {'secret ' if need_secret else ''}key",
                          f"use the {'.key_secret' if need_secret else '.key'} file written by keys generate")
    return public, secret


def generate(role: str, name: str | None, directory: str | os.PathLike) -> dict:
    """Write NAME.key (public) and NAME.key_secret (owner-only), with the role and name as metadata."""
    if role not in KEY_ROLES:
        raise UsageError(f"unknown role {role!r}", "choose one of " + ", ".join(KEY_ROLES))
    name = name or role
    if not _NAME.fullmatch(name):
        raise UsageError(f"key name {name!r} is not allowed", "use 1-64 characters from A-Z a-z 0-9 _ . -")
    folder = Path(directory)
    public_path, secret_path = folder / f"{name}.key", folder / f"{name}.key_secret"
    if public_path.exists() or secret_path.exists():
        raise UsageError(f"{secret_path} already exists", "choose another --name or --dir, or remove the old files")
    folder.mkdir(parents=True, exist_ok=True)
    meta = {"role": role, "name": name, "created": datetime.now().isoformat(timespec="seconds")}
    old_umask = os.umask(0o077)   # the secret file is never readable by others, not even for a moment
    try:
        zmq.auth.create_certificates(folder, name, metadata=meta)
    finally:
        os.umask(old_umask)
    os.chmod(secret_path, 0o600)
    public, _ = zmq.auth.load_certificate(public_path)
    # pyzmq writes metadata only into the secret file; the public one carries the role too, for authorized_keys_dir.
    lines = [f"#   ZeroMQ CURVE public certificate of zmqgrid {role} {name}", "metadata",
             *(f'    {k} = "{v}"' for k, v in meta.items()), "curve", f'    public-key = "{public.decode()}"', ""]
    public_path.write_text("\n".join(lines), encoding="utf-8")
    os.chmod(public_path, 0o644)
    return {"role": role, "name": name, "public_key": public.decode(), "public_file": str(public_path),
            "secret_file": str(secret_path)}


def master_public_key(config: Config) -> bytes:
    """`master_key` as z85 text, or the certificate it names; default <keys_dir>/master.key."""
    value = config.master_key or str(Path(config.keys_dir) / "master.key")
    # A file first: a 40-character path of z85 characters (e.g. /tmp/...-keys-24592/master.key) is not a key.
    if is_z85_key(value) and not Path(value).is_file():
        return value.encode()
    # Never "generate one" here: a key made on this machine is another master's, whose handshake this master refuses.
    copy = (f"copy master.key (the public one, never master.key_secret) from the keys folder on the master's machine "
            f"to {value}, or set master_key (ZMQGRID_MASTER_KEY) to it (README, Security)")
    return load_keypair(value, "master public", need_secret=False, missing_hint=copy)[0]


def master_curve(config: Config) -> Curve | None:
    """The master's server keys when `curve` is on, else None (the open default costs nothing)."""
    if not secured(config):
        return None
    public, secret = load_keypair(config.key_file or Path(config.keys_dir) / "master.key_secret", "master")
    return Curve(public, secret)


def worker_curve(config: Config) -> Curve | None:
    if not secured(config):
        return None
    public, secret = load_keypair(config.key_file or Path(config.keys_dir) / "worker.key_secret", "worker")
    return Curve(public, secret, master_public_key(config))


def client_curve(config: Config) -> Curve | None:
    """A client's keys: client_key_file, else the admin certificate in keys_dir if there is one, else the client's."""
    if not secured(config):
        return None
    path = config.client_key_file
    if path is None:
        admin = Path(config.keys_dir) / "admin.key_secret"
        path = admin if admin.exists() else Path(config.keys_dir) / "client.key_secret"
    public, secret = load_keypair(path, "client")
    return Curve(public, secret, master_public_key(config))


INHERITED_CURVE_ENV = "ZMQGRID_INHERITED_CURVE"
"""A process's client keys handed down by the process that started it (the gateway to its browser dashboards), so
that it uses exactly its parent's key: `public,secret,server` (z85 keys, whose alphabet has no comma), in the
environment only (never on a command line)."""


def curve_to_env(curve: Curve) -> str:
    return b",".join((curve.public, curve.secret, curve.server_key or b"")).decode()


def inherited_curve() -> Curve | None:
    """The keys a parent handed down (and removed from this process's environment, so no child of it inherits them);
    None when there are none. Raises ConfigError when the value is not three z85 keys."""
    value = os.environ.pop(INHERITED_CURVE_ENV, "")
    if not value:
        return None
    parts = value.split(",")
    if len(parts) != 3 or not all(is_z85_key(p) for p in parts):
        raise ConfigError(f"{INHERITED_CURVE_ENV} is not public,secret,server (z85 keys)",
                          "it is set by the gateway for its dashboards; unset it")
    public, secret, server = (p.encode() for p in parts)
    return Curve(public, secret, server)
