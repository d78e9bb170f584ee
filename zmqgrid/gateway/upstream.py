"""The gateway's way to the master: blocking `Client` calls run on a few threads, each thread with its own Client."""
from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, TypeVar

from ..client import Client
from ..errors import MasterUnavailable
from ..transport import Curve

logger = logging.getLogger(__name__)

T = TypeVar("T")


class Upstream:
    """`await upstream.call(lambda client: client.status())`: the event loop never waits on the master itself.

    A Client is not thread-safe, so each pool thread keeps one of its own. A Client whose master did not answer is
    closed and replaced at its next use: its socket may still hold requests queued for a master that was down, whose
    late answers nobody waits for.
    """

    def __init__(self, master_url: str, curve: Curve | None = None, timeout_s: float = 5.0, threads: int = 4) -> None:
        self.master_url = master_url
        self.curve = curve
        self.timeout_s = timeout_s
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="gateway-master")
        self.local = threading.local()
        self.lock = threading.Lock()
        self.clients: set[Client] = set()

    def new_client(self, timeout_s: float | None = None) -> Client:
        """A Client of this gateway's master, with its key; the caller closes it (`close_client`)."""
        client = Client(self.master_url, timeout_s=self.timeout_s if timeout_s is None else timeout_s,
                        curve=self.curve)
        with self.lock:
            self.clients.add(client)
        return client

    def close_client(self, client: Client) -> None:
        with self.lock:
            self.clients.discard(client)
        client.close()

    def _run(self, fn: Callable[[Client], T]) -> T:
        client = getattr(self.local, "client", None)
        if client is None:
            client = self.local.client = self.new_client()
        try:
            return fn(client)
        except MasterUnavailable:
            self.local.client = None
            self.close_client(client)
            raise

    async def call(self, fn: Callable[[Client], T]) -> T:
        """Run `fn(client)` on a pool thread and return what it returns (or raise what it raises)."""
        return await asyncio.get_running_loop().run_in_executor(self.pool, self._run, fn)

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        with self.lock:
            clients, self.clients = list(self.clients), set()
        for client in clients:
            client.close()
