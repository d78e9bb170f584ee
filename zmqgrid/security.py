"""Safe by default: a master binds a non-loopback address only when its sockets are secured or the user said
`--insecure` (and is warned at every start). The CURVE setting, when it lands, satisfies `require_safe_bind`."""
from __future__ import annotations

import ipaddress
import logging

from .config import Config
from .errors import UsageError

logger = logging.getLogger(__name__)


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
    """Whether the master's sockets are encrypted and authenticated. Always False until CURVE exists; then a
    `curve` setting that is on makes it True."""
    return bool(getattr(config, "curve", False))


def require_safe_bind(config: Config) -> None:
    """Refuse (UsageError, exit 3) to bind a non-loopback address open unless `insecure`; warn when it is."""
    if is_loopback(config.host) or secured(config):
        return
    ports = f"{config.port}, {config.pub_port}, {config.heartbeat_port}"
    if not config.insecure:
        raise UsageError(f"refusing to bind {config.host} without CURVE encryption",
                         f"anyone who reaches ports {ports} could make the workers run any command; bind 127.0.0.1, "
                         "or pass --insecure to run open on a trusted network")
    logger.warning("INSECURE: binding %s without encryption or authentication (--insecure); anyone who reaches "
                   "ports %s can submit tasks that the workers run, and read every result", config.host, ports)
