"""`/api/distribution/schedules...` and `/api/distribution/projects`: what the master holds besides tasks and devices."""
from __future__ import annotations

from aiohttp import web

from ..projects.sync import start_sync
from .bodies import json_body, known_params, only_fields
from .errors import HttpError
from .routing import UPSTREAM, Role, add
from .tasks import SPEC_SCHEMA, spec_of

SCHEDULE_ACTIONS = ("pause", "resume")
MISSED = ("run_once", "skip")


async def schedules(request: web.Request) -> web.Response:
    known_params(request, ())
    return web.json_response({"schedules": await request.app[UPSTREAM].call(lambda c: c.schedules())})


async def add_schedule(request: web.Request) -> web.Response:
    body = only_fields(await json_body(request), {"name": str, "cron": str, "missed": str, "task": dict},
                       required=("name", "cron", "task"))
    missed = body.get("missed", "run_once")
    if missed not in MISSED:
        raise HttpError(400, f"missed {missed!r} is unknown", f"allowed: {', '.join(MISSED)}")
    spec = spec_of(body["task"], "task: ")
    row = await request.app[UPSTREAM].call(lambda c: c.schedule_add(body["name"], body["cron"], spec, missed))
    return web.json_response(row, status=201)


async def set_schedule_status(request: web.Request) -> web.Response:
    body = only_fields(await json_body(request), {"action": str}, required=("action",))
    action, name = body["action"], request.match_info["name"]
    if action not in SCHEDULE_ACTIONS:
        raise HttpError(400, f"action {action!r} is unknown", f"allowed: {', '.join(SCHEDULE_ACTIONS)}")
    row = await request.app[UPSTREAM].call(
        lambda c: c.schedule_pause(name) if action == "pause" else c.schedule_resume(name))
    return web.json_response(row)


async def remove_schedule(request: web.Request) -> web.Response:
    known_params(request, ())
    name = request.match_info["name"]
    return web.json_response(await request.app[UPSTREAM].call(lambda c: c.schedule_remove(name)))


async def projects(request: web.Request) -> web.Response:
    known_params(request, ())
    return web.json_response({"projects": await request.app[UPSTREAM].call(lambda c: c.projects())})


async def project(request: web.Request) -> web.Response:
    known_params(request, ())
    name = request.match_info["name"]
    versions = await request.app[UPSTREAM].call(lambda c: c.projects(name))
    return web.json_response({"name": name, "versions": versions})


async def remove_project(request: web.Request) -> web.Response:
    known_params(request, ("version",))
    name, version = request.match_info["name"], request.query.get("version") or None
    return web.json_response(await request.app[UPSTREAM].call(lambda c: c.remove_project(name, version)))


async def sync_project(request: web.Request) -> web.Response:
    """Start a sync and answer at once (202): its progress is what GET .../projects/{name} says of each worker."""
    body = await json_body(request) if request.can_read_body else {}
    body = only_fields(body, {"version": str, "tags": list, "rebuild": bool})
    if not all(isinstance(tag, str) for tag in body.get("tags", [])):
        raise HttpError(400, "tags must be a list of strings", 'send {"tags": ["linux"]}')
    ref = request.match_info["name"] + (f"@{body['version']}" if body.get("version") else "")
    started = await request.app[UPSTREAM].call(
        lambda c: start_sync(c, ref, body.get("tags", ()), body.get("rebuild", False)))
    return web.json_response(started, status=202)


def add_routes(app: web.Application) -> None:
    add(app, "GET", "/api/distribution/schedules", Role.READ, schedules, "Every schedule (as schedules list --json)")
    add(app, "POST", "/api/distribution/schedules", Role.ADMIN, add_schedule,
        "Fire a task at every tick of a cron expression (as schedules add)",
        body={"type": "object", "required": ["name", "cron", "task"], "additionalProperties": False,
              "properties": {"name": {"type": "string"}, "cron": {"type": "string"},
                             "missed": {"enum": list(MISSED)}, "task": SPEC_SCHEMA}},
        answers=(201, 400))
    add(app, "PUT", "/api/distribution/schedules/{name}/status", Role.ADMIN, set_schedule_status,
        "Pause or resume a schedule",
        body={"type": "object", "required": ["action"], "additionalProperties": False,
              "properties": {"action": {"enum": list(SCHEDULE_ACTIONS)}}}, answers=(200, 400, 404))
    add(app, "DELETE", "/api/distribution/schedules/{name}", Role.ADMIN, remove_schedule,
        "Remove a schedule (the tasks it fired are kept)", answers=(200, 404))
    add(app, "GET", "/api/distribution/projects", Role.READ, projects,
        "Every pushed project with its latest version (as projects list --json)")
    add(app, "GET", "/api/distribution/projects/{name}", Role.READ, project,
        "A project's versions, newest first, and what each worker holds of each (as projects show --json)",
        answers=(200, 404))
    add(app, "DELETE", "/api/distribution/projects/{name}", Role.ADMIN, remove_project,
        "Remove a project, or one version of it with ?version= (refused while an unfinished task pins it)",
        answers=(200, 400, 404))
    add(app, "POST", "/api/distribution/projects/{name}/sync", Role.ADMIN, sync_project,
        "Fetch and build a version (default: the latest) on every matching online worker now (as projects sync); "
        "answers at once, and GET /api/distribution/projects/{name} shows each worker's progress",
        body={"type": "object", "additionalProperties": False,
              "properties": {"version": {"type": "string"}, "tags": {"type": "array", "items": {"type": "string"}},
                             "rebuild": {"type": "boolean"}}}, answers=(202, 400, 404))
