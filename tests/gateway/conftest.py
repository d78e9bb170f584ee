"""The gateway's tests share, per module, one master, one worker (w1) and a gateway with a token of each role."""
from __future__ import annotations

from dataclasses import dataclass

import pytest

from ..helpers import Harness
from .web import Gateway, make_token


@dataclass
class Served:
    harness: Harness
    gateway: Gateway
    tokens: dict[str, str]   # role -> token

    def call(self, method: str, path: str, role: str | None = "admin", **kw):
        return self.gateway.call(method, path, self.tokens.get(role) if role else None, **kw)


@pytest.fixture(scope="module")
def served(request, tmp_path_factory):
    harness = Harness(tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1]))
    gateway = None
    try:
        harness.start_master()
        harness.start_worker("w1", concurrency=4)
        harness.wait_online(harness.client(), "w1")
        store = harness.dir / "http_tokens.json"
        tokens = {role: make_token(harness, store, f"t-{role}", role) for role in ("read", "client", "admin")}
        gateway = Gateway(harness, store, "--max-body-kb", "64")
        yield Served(harness, gateway, tokens)
    finally:
        if gateway is not None:
            gateway.stop()
        harness.stop()
