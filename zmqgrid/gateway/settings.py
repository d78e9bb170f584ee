"""What a gateway is started with: where it listens, the master it speaks for, its limits and its token store."""
from __future__ import annotations

from dataclasses import dataclass

from ..transport import Curve

DEFAULT_PORT = 8080
DEFAULT_MAX_BODY_KB = 4096


@dataclass(frozen=True)
class GatewaySettings:
    master_url: str
    """The master's ROUTER, tcp://HOST:PORT."""
    host: str = "127.0.0.1"
    """The address to bind; a non-loopback one needs tokens (or --insecure)."""
    port: int = DEFAULT_PORT
    tokens_path: str = "keys/http_tokens.json"
    """The token store (sha256 of each token, its name and role)."""
    curve: Curve | None = None
    """The gateway's own key to the master under CURVE (security.client_curve)."""
    master_timeout_s: float = 5.0
    """How long a request waits for the master before answering 503."""
    max_body_bytes: int = DEFAULT_MAX_BODY_KB * 1024
    insecure: bool = False
    """Allow a non-loopback bind with no token (every caller admin)."""
    certfile: str | None = None
    keyfile: str | None = None
    metrics_max_age_s: float = 1.0
    """A scrape within this long of the last one is answered from the same master answers."""
    metrics_refresh_s: float = 0.0
    """> 0: read the master for /metrics every this many seconds in the background, so a scrape never waits on it."""
    max_followers: int = 64
    """Server-sent event streams of task output open at once (each holds a thread and polls the master)."""
    client_threads: int = 4
    """Threads (each with its own Client) that carry requests to the master."""
