"""Who may call a route: the bearer token's role against the route's (docs/architecture.md, "HTTP gateway")."""
from __future__ import annotations

import logging

from aiohttp import web

from ..errors import ConfigError
from .errors import HttpError
from .routing import ROUTES, TOKENS, Handler, Role

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


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    route = request.app[ROUTES].route_of(request)
    if route is None or route.role == Role.NONE:   # an unknown path (404 follows) or a probe
        return await handler(request)
    role = caller_role(request)
    if role < route.role:
        raise HttpError(403, f"this needs a token of role {route.role.name.lower()}; yours is {role.name.lower()}",
                        f"ask for a {route.role.name.lower()} token: python main.py http tokens create NAME "
                        f"--role {route.role.name.lower()}")
    return await handler(request)
