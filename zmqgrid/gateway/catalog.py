"""`/api/distribution/schedules` and `/api/distribution/projects`: what the master holds besides tasks and devices."""
from __future__ import annotations

from aiohttp import web

from .bodies import known_params
from .routing import UPSTREAM, Role, add


async def schedules(request: web.Request) -> web.Response:
    known_params(request, ())
    return web.json_response({"schedules": await request.app[UPSTREAM].call(lambda c: c.schedules())})


async def projects(request: web.Request) -> web.Response:
    known_params(request, ())
    return web.json_response({"projects": await request.app[UPSTREAM].call(lambda c: c.projects())})


def add_routes(app: web.Application) -> None:
    add(app, "GET", "/api/distribution/schedules", Role.READ, schedules, "Every schedule (as schedules list --json)")
    add(app, "GET", "/api/distribution/projects", Role.READ, projects,
        "Every pushed project with its latest version (as projects list --json)")
