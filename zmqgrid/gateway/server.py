"""Serving the gateway: the bind rule (loopback, tokens or --insecure), TLS, and a clean stop on SIGTERM/SIGINT."""
from __future__ import annotations

import asyncio
import logging
import signal
import ssl
from typing import Callable

from aiohttp import web

from ..errors import ConfigError, UsageError
from ..security import is_loopback
from .app import make_app
from .settings import GatewaySettings
from .tokens import TokenStore

logger = logging.getLogger(__name__)


def check_bind(settings: GatewaySettings, store: TokenStore) -> None:
    """Refuse (exit 3) a non-loopback bind with no token unless --insecure, as the master refuses an open one."""
    if is_loopback(settings.host):
        return
    if store.is_open():
        if not settings.insecure:
            raise UsageError(f"refusing to serve HTTP on {settings.host} with no token: every caller would be admin",
                             "bind 127.0.0.1, make a token first (python main.py http tokens create NAME --role "
                             "read), or pass --insecure to run open on a trusted network")
        logger.warning("INSECURE: serving %s:%d with no token (--insecure): anyone who reaches it may submit, cancel "
                       "and drain", settings.host, settings.port)
    elif settings.certfile is None:
        logger.warning("serving %s:%d over plain HTTP: bearer tokens cross the network in clear; give --certfile "
                       "and --keyfile for HTTPS", settings.host, settings.port)


def ssl_context(settings: GatewaySettings) -> ssl.SSLContext | None:
    if settings.certfile is None and settings.keyfile is None:
        return None
    if settings.certfile is None:
        raise UsageError("--keyfile needs --certfile", "give both, or neither for plain HTTP")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(settings.certfile, settings.keyfile)
    except (OSError, ssl.SSLError) as e:
        raise ConfigError(f"cannot load the TLS certificate {settings.certfile}"
                          f"{' / key ' + settings.keyfile if settings.keyfile else ''}: {e}",
                          "give a PEM certificate chain (--certfile) and its private key (--keyfile)") from None
    return context


async def serve(settings: GatewaySettings, stop: asyncio.Event, ready: Callable[[], None] | None = None) -> None:
    store = TokenStore(settings.tokens_path)
    check_bind(settings, store)
    context = ssl_context(settings)
    runner = web.AppRunner(make_app(settings), handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, settings.host, settings.port, ssl_context=context)
        try:
            await site.start()
        except OSError as e:
            raise UsageError(f"cannot listen on {settings.host}:{settings.port} ({e.strerror or e})",
                             "pick another --port, or stop what holds it") from None
        scheme = "https" if context else "http"
        logger.info("http gateway on %s://%s:%d for master %s (%s)", scheme, settings.host, settings.port,
                    settings.master_url, "no tokens: every caller is admin" if store.is_open()
                    else f"{len(store.tokens())} tokens")
        if ready is not None:
            ready()
        await stop.wait()
    finally:
        await runner.cleanup()


def run(settings: GatewaySettings, ready: Callable[[], None] | None = None) -> None:
    """Serve until SIGTERM or SIGINT."""
    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve(settings, stop, ready)
    asyncio.run(main())
