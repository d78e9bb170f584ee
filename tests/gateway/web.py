"""A real gateway process (`python -m zmqgrid http`) beside a Harness's master, and HTTP calls to it with aiohttp's
client over loopback."""
from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from zmqgrid.worker.proctree import end_process

from ..helpers import Harness, free_port_block, wait_until


@dataclass
class Answer:
    status: int
    headers: dict
    text: str

    @property
    def json(self) -> Any:
        return json.loads(self.text)


async def _call(method: str, url: str, token: str | None, body: Any, data: bytes | None, timeout_s: float,
                tls: ssl.SSLContext | None = None) -> Answer:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as session:
        async with session.request(method, url, headers=headers, json=body, data=data,
                                   ssl=tls if tls is not None else True) as response:
            return Answer(response.status, dict(response.headers), await response.text())


async def _events(url: str, token: str | None, timeout_s: float) -> list[tuple[str, Any]]:
    """Every server-sent event of `url` until the server ends the stream: (event, parsed data)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    found: list[tuple[str, Any]] = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as session:
        async with session.get(url, headers=headers) as response:
            assert response.status == 200, await response.text()
            assert response.headers["Content-Type"].startswith("text/event-stream")
            event = None
            async for raw in response.content:
                line = raw.decode().rstrip("\n")
                if line.startswith("event: "):
                    event = line[len("event: "):]
                elif line.startswith("data: "):
                    found.append((event, json.loads(line[len("data: "):])))
    return found


class Gateway:
    """`python -m zmqgrid http` for the harness's master, stopped by PID (`stop`)."""

    def __init__(self, harness: Harness, tokens: Path, *extra: str, env: dict[str, str] | None = None,
                 name: str = "gateway", cafile: Path | None = None) -> None:
        """`cafile`: the gateway serves HTTPS (give --certfile/--keyfile in `extra`) with a certificate it signs."""
        self.harness = harness
        self.tokens = tokens
        self.port = free_port_block(1)
        self.tls = ssl.create_default_context(cafile=str(cafile)) if cafile else None
        self.base = f"{'https' if cafile else 'http'}://127.0.0.1:{self.port}"
        self.log = harness.dir / f"{name}.log"
        self.out = harness.dir / f"{name}.out"
        self.proc = harness._spawn(["http", "--port", str(self.port), "--master", harness.url, "--tokens", str(tokens),
                                    "--log-file", str(self.log), *extra], f"{name}.out", env=env)
        wait_until(self._up, 20, "the gateway to answer /healthz")

    def _up(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"gateway exited with {self.proc.returncode}: "
                                 f"{self.out.read_text()[-2000:]}")
        try:
            return self.call("GET", "/healthz", timeout_s=2).status == 200
        except (aiohttp.ClientError, asyncio.TimeoutError):
            return False

    def call(self, method: str, path: str, token: str | None = None, body: Any = None, data: bytes | None = None,
             timeout_s: float = 30) -> Answer:
        return asyncio.run(_call(method, self.base + path, token, body, data, timeout_s, self.tls))

    def events(self, path: str, token: str | None = None, timeout_s: float = 60) -> list[tuple[str, Any]]:
        return asyncio.run(_events(self.base + path, token, timeout_s))

    def stop(self) -> None:
        end_process(self.proc)


def make_token(harness: Harness, tokens: Path, name: str, role: str) -> str:
    """`http tokens create NAME --role ROLE`, as an operator runs it; the token it printed."""
    done = subprocess.run([sys.executable, "-m", "zmqgrid", "http", "tokens", "create", name, "--role", role,
                           "--tokens", str(tokens)], cwd=harness.dir, env=harness.env, capture_output=True, text=True,
                          timeout=30, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()
