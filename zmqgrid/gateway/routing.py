"""The gateway's route table: each route with the role it needs and what the OpenAPI document says of it."""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Role(enum.IntEnum):
    """What a bearer token may do; a higher role may do everything a lower one may."""

    NONE = 0     # probes: no token needed
    READ = 1
    CLIENT = 2
    ADMIN = 3

    @classmethod
    def named(cls, name: str) -> Role:
        return cls[name.upper()]


TOKEN_ROLES = ("read", "client", "admin")


@dataclass(frozen=True)
class Param:
    """A query or path parameter, for the OpenAPI document."""

    name: str
    where: str = "query"          # query | path
    kind: str = "string"          # the JSON schema type
    description: str = ""


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    role: Role
    handler: Handler
    summary: str
    params: tuple[Param, ...] = ()
    body: dict[str, Any] | None = None      # the JSON schema of the request body
    answers: tuple[int, ...] = (200,)
    content: str = "application/json"
    browser: bool = False
    """A route of the dashboard in the browser: it takes the session cookie too and checks the caller itself
    (sessions.browser_role); no API route takes the cookie."""


SETTINGS = web.AppKey("settings", object)
UPSTREAM = web.AppKey("upstream", object)
TOKENS = web.AppKey("tokens", object)


@dataclass
class RouteTable:
    """Routes by (method, path template): what `auth` and `openapi` read."""

    routes: dict[tuple[str, str], Route] = field(default_factory=dict)

    def route_of(self, request: web.Request) -> Route | None:
        info = request.match_info.route
        resource = info.resource
        if resource is None:
            return None
        return self.routes.get((info.method, resource.canonical))


ROUTES = web.AppKey("routes", RouteTable)


def add(app: web.Application, method: str, path: str, role: Role, handler: Handler, summary: str, *,
        params: tuple[Param, ...] = (), body: dict[str, Any] | None = None, answers: tuple[int, ...] = (200,),
        content: str = "application/json", browser: bool = False) -> None:
    """Add a route to the application and to its route table."""
    path_params = tuple(Param(p.strip("{}"), "path") for p in path.split("/") if p.startswith("{"))
    route = Route(method, path, role, handler, summary, path_params + params, body, answers, content, browser)
    app[ROUTES].routes[(method, path)] = route
    app.router.add_route(method, path, handler)
