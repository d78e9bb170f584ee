"""Who may call a route: the bearer token's role against the route's (docs/architecture.md, "HTTP gateway")."""
from __future__ import annotations

import ipaddress
import logging
from urllib.parse import urlsplit

from aiohttp import web

from ..errors import ConfigError
from ..security import is_loopback
from .errors import HttpError
from .routing import ROUTES, SETTINGS, TOKENS, Handler, Role

logger = logging.getLogger(__name__)


def caller_role(request: web.Request) -> Role:
    """The role of the request's token; admin when the store holds no token (open mode, loopback or --insecure).
    Raises 401 for a missing or unknown token, 500 when the store cannot be read (nobody is let in then)."""
    store = request.app[TOKENS]
    try:
        is_open = store.is_open()
    except ConfigError as e:
        logger.error("refusing every request that needs a token: %s", e)
        raise HttpError(500, "the gateway's token store cannot be read", "see the gateway's log") from None
    if is_open:
        return Role.ADMIN
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise _unauthorized("this gateway needs a bearer token")
    role = store.role_of(token.strip())
    if role is None:
        raise _unauthorized("the bearer token is not known to this gateway (revoked, or never made here)")
    return role


def _unauthorized(message: str) -> web.HTTPUnauthorized:
    # Raised as aiohttp's own exception so that errors_middleware adds the WWW-Authenticate header RFC 6750 asks for.
    return web.HTTPUnauthorized(headers={"WWW-Authenticate": 'Bearer realm="zmqgrid"'}, reason=message)


def check_same_site(request: web.Request) -> None:
    """Refuse (403) what another site's page asked for, and in open mode on loopback a host name that is not local.

    A page on any site may make the browser POST a plain-text body to 127.0.0.1 with no preflight; with no token
    in the store nothing else would stop it from submitting or cancelling. Browsers send `Origin` with such
    requests (and with every websocket); curl and scripts send none. A proxy in front must pass `Host` through. A site's own host name resolved to 127.0.0.1
    (DNS rebinding) is same-origin to the browser, so an open gateway on loopback also wants a local `Host`.
    """
    origin = request.headers.get("Origin")
    # host:port only, not the scheme: behind a proxy that ends TLS the page is https and the gateway sees http
    if origin is not None and urlsplit(origin).netloc.lower() != request.host.lower():
        raise HttpError(403, "this request came from another site's page",
                        "call the gateway from its own pages, or without a browser (curl, scripts)")
    if is_loopback(request.app[SETTINGS].host) and _is_open(request):
        name = urlsplit(f"//{request.host}").hostname or ""
        if name != "localhost" and not _is_loopback_ip(name):
            raise HttpError(403, f"host name {name!r} is not this machine's; with no token this gateway answers "
                                 "local names only", "use http://127.0.0.1:PORT/ or http://localhost:PORT/")


def _is_open(request: web.Request) -> bool:
    try:
        return request.app[TOKENS].is_open()
    except ConfigError:
        return False   # caller_role answers 500 for it


def _is_loopback_ip(name: str) -> bool:
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    route = request.app[ROUTES].route_of(request)
    if route is None or route.role == Role.NONE and not route.browser:   # an unknown path (404 follows) or a probe
        return await handler(request)
    check_same_site(request)
    if route.browser:   # the dashboard's routes take the session cookie too, and check the caller themselves
        return await handler(request)
    role = caller_role(request)
    if role < route.role:
        raise HttpError(403, f"this needs a token of role {route.role.name.lower()}; yours is {role.name.lower()}",
                        f"ask for a {route.role.name.lower()} token: python main.py http tokens create NAME "
                        f"--role {route.role.name.lower()}")
    return await handler(request)
