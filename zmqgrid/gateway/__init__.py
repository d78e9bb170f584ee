"""The HTTP gateway: a JSON API, Prometheus metrics and probes over HTTP, as one more client of the master."""
from __future__ import annotations

from .app import make_app
from .settings import GatewaySettings

__all__ = ["GatewaySettings", "make_app"]
