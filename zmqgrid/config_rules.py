"""The settings derived from others (pub_port, heartbeat_port, master_url, device_id, device_name) and the rules
that span several keys, each broken rule blamed on the key from the source the user set last."""
from __future__ import annotations

import re
import socket
from itertools import combinations
from typing import TYPE_CHECKING, Any

from .errors import ConfigError

MAX_ADVERTISED = 61   # Register.tags takes 64; a worker adds a no-kind: tag per kind it refuses (two) and `runs projects`

if TYPE_CHECKING:
    from .config import Config


def resolve(config: Config, layers: dict[str, tuple[Any, str, int]]) -> None:
    """Fill the settings derived from others and check the rules that span several keys."""
    def origin(key: str) -> tuple[str, int]:
        return layers.get(key, (None, "default", 0))[1:]

    def clash(a: str, b: str, a_must: str, b_must: str, why: str) -> ConfigError:
        # Blame the key from the stronger source: it is the one the user set last.
        (blame, must), other = ((a, a_must), b) if origin(a)[1] >= origin(b)[1] else ((b, b_must), a)
        return ConfigError(f"{origin(blame)[0]}: {blame} = {getattr(config, blame)} is not allowed",
                           f"expected {must} {other} ({getattr(config, other)}, from {origin(other)[0]}): {why}")

    for key, offset in (("pub_port", 1), ("heartbeat_port", 2)):
        if getattr(config, key) is None:
            if config.port + offset > 65535:  # the derived port overflows, so port is what to change
                raise ConfigError(f"{origin('port')[0]}: port = {config.port} is not allowed",
                                  f"expected at most {65535 - offset} unless {key} is set ({key} = port + {offset})")
            setattr(config, key, config.port + offset)
            layers[key] = (config.port + offset, f"default (port + {offset})", 0)
    for a, b in combinations(("port", "pub_port", "heartbeat_port"), 2):
        if getattr(config, a) == getattr(config, b):
            raise clash(a, b, "a port different from", "a port different from",
                        "port, pub_port and heartbeat_port must all differ")
    if config.device_timeout <= config.heartbeat_interval:
        raise clash("device_timeout", "heartbeat_interval", "more than", "less than",
                    "device_timeout must be greater than heartbeat_interval, or live devices are marked offline")
    if len(config.tags) + len(config.python_envs) > MAX_ADVERTISED:
        raise clash("python_envs", "tags", "fewer entries with", "fewer tags with",
                    f"a worker advertises a tag per python env: tags and python_envs hold at most {MAX_ADVERTISED} "
                    "together")
    if "master_url" not in layers:
        # Nobody said where the master is, so it is this config's own ROUTER: standalone and `--status`
        # then follow a single --port change. A wildcard bind is reached over loopback.
        config.master_url = tcp_url({"0.0.0.0": "127.0.0.1", "*": "127.0.0.1", "::": "::1"}.get(config.host, config.host),
                                 config.port)
    if config.device_id is None and config.mode == "worker":
        # A worker's identity must survive restarts (ROUTER_HANDOVER, outbox), so use the host name.
        config.device_id = re.sub(r"[^A-Za-z0-9_.:-]", "-", socket.gethostname())[:64] or "worker"
    if config.device_name is None:
        config.device_name = config.device_id


def tcp_url(host: str, port: int) -> str:
    """A ZeroMQ tcp endpoint for host and port."""
    return f"tcp://[{host}]:{port}" if ":" in host else f"tcp://{host}:{port}"  # IPv6 literals need brackets
