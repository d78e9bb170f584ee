"""`/healthz`, `/readyz` and the system overview: the master's `status` judged as `distribute --status` judges it."""
from __future__ import annotations

from aiohttp import web

from ..errors import MasterUnavailable
from ..health import assess
from .routing import SETTINGS, UPSTREAM, Role, add


async def healthz(request: web.Request) -> web.Response:
    """The gateway answers: nothing is asked of the master."""
    return web.json_response({"state": "up"})


async def readyz(request: web.Request) -> web.Response:
    master_url = request.app[SETTINGS].master_url
    try:
        report = await request.app[UPSTREAM].call(lambda c: c.status())
    except MasterUnavailable as e:
        return web.json_response({"state": "unreachable", "master": master_url, "error": str(e)}, status=503)
    report = assess(report, master_url)
    return web.json_response(report, status=200 if report["state"] == "healthy" else 503)


async def overview(request: web.Request) -> web.Response:
    report = await request.app[UPSTREAM].call(lambda c: c.status())
    return web.json_response(assess(report, request.app[SETTINGS].master_url))


def add_routes(app: web.Application) -> None:
    add(app, "GET", "/healthz", Role.NONE, healthz, "The gateway is up (200 whatever the master)")
    add(app, "GET", "/readyz", Role.NONE, readyz,
        "The cluster is healthy: 200, else 503 with the same body (distribute --status --json)", answers=(200, 503))
    add(app, "GET", "/api/distribution/system/overview", Role.READ, overview,
        "The master's status with state, problems and master (distribute --status --json)")
