"""`/api/distribution/tasks...`: submit, list, show, cancel, requeue and stats (logs: logs.py)."""
from __future__ import annotations

import re
import time
from typing import Any

from aiohttp import web

from ..client import Client
from ..errors import UsageError
from ..model import SPEC_KEYS, TASK_STATES, build_spec
from . import stats
from .bodies import choice_param, int_param, json_body, known_params
from .errors import HttpError
from .routing import UPSTREAM, Param, Role, add

CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")   # what the master's one-line texts refuse (zmqgrid.fields)
MAX_TASKS_PER_REQUEST = 10_000   # as many as the master takes in one Submit
SPEC_FIELDS = ("shell", "python", "tag", *SPEC_KEYS)


def spec_of(item: Any, where: str) -> dict:
    """A task spec from a JSON object with the keys of a `submit --file` line, checked as the master checks it."""
    if not isinstance(item, dict):
        raise HttpError(400, f"{where}must be a JSON object, got {type(item).__name__}", 'e.g. {"shell": "echo hi"}')
    if "script" in item:
        raise HttpError(400, f"{where}'script' names a file, and the gateway does not read its own files for a caller",
                        "submit a shell or python task, or run: python main.py submit --script FILE")
    unknown = sorted(set(item) - set(SPEC_FIELDS))
    if unknown:
        raise HttpError(400, f"{where}unknown field(s): {', '.join(unknown)}", f"allowed: {', '.join(SPEC_FIELDS)}")
    try:
        return build_spec(**item)
    except UsageError as e:
        raise HttpError(400, where + e.message, e.hint or "fix the task and send it again") from None
    except TypeError as e:
        raise HttpError(400, f"{where}{e}", "see README, HTTP gateway") from None


async def submit(request: web.Request) -> web.Response:
    body = await json_body(request)
    items = body if isinstance(body, list) else [body]
    if not items:
        raise HttpError(400, "the list of tasks is empty", 'send one spec or a list of them, e.g. [{"shell": "echo hi"}]')
    if len(items) > MAX_TASKS_PER_REQUEST:
        raise HttpError(413, f"{len(items)} tasks in one request; at most {MAX_TASKS_PER_REQUEST:,}",
                        "split them over several requests")
    several = isinstance(body, list)
    specs = [spec_of(item, f"item {n} of {len(items)}: " if several else "") for n, item in enumerate(items, 1)]
    ids = await request.app[UPSTREAM].call(lambda c: c.submit(specs))
    return web.json_response({"ids": ids}, status=201)


def text_param(request: web.Request, name: str, most: int) -> str | None:
    """A query parameter the master takes as a one-line text of 1-`most` characters (its Query schema), checked
    here so that a bad one is a 400 naming it."""
    value = request.query.get(name)
    if value is not None and not (0 < len(value) <= most and not CONTROL.search(value)):
        raise HttpError(400, f"query parameter {name} must be 1-{most} characters without control characters",
                        f"e.g. {name}=linux")
    return value


async def list_tasks(request: web.Request) -> web.Response:
    known_params(request, ("state", "device", "tag", "limit", "offset"))
    state = choice_param(request, "state", tuple(TASK_STATES))
    device = request.query.get("device")
    tag = text_param(request, "tag", 64)
    limit = int_param(request, "limit", 50, 1, 1000)
    offset = int_param(request, "offset", 0, 0, 1 << 62)
    rows = await request.app[UPSTREAM].call(lambda c: c.tasks(state, limit=limit, offset=offset, device=device,
                                                              tag=tag))
    return web.json_response({"tasks": rows, "limit": limit, "offset": offset})


async def show_task(request: web.Request) -> web.Response:
    known_params(request, ())
    ref = request.match_info["id"]
    return web.json_response(await request.app[UPSTREAM].call(lambda c: c.task(ref)))


def _control(action: str):
    async def handler(request: web.Request) -> web.Response:
        known_params(request, ())
        ref = request.match_info["id"]
        outcome = await request.app[UPSTREAM].call(
            lambda c: c.cancel([ref]) if action == "cancel" else c.requeue([ref]))
        (task_id, state), = outcome.items()
        if state == "not found":
            raise HttpError(404, f"no task {ref!r}", "list them with GET /api/distribution/tasks")
        if state.startswith("ambiguous"):
            raise HttpError(409, f"task id prefix {ref!r} matches several tasks: {state.partition(': ')[2]}",
                            "type more of the id")
        if state.startswith("already"):
            raise HttpError(409, f"task {task_id} is {state}", "nothing to do" if action == "cancel"
                            else "only a failed, timed out, cancelled or quarantined task is re-queued")
        return web.json_response({"id": task_id, "outcome": state})
    handler.__name__ = action
    return handler


async def task_stats(request: web.Request) -> web.Response:
    known_params(request, ("window_s",))
    window_s = int_param(request, "window_s", 3600, 1, 30 * 86400)
    since = time.time() - window_s

    def read(c: Client) -> tuple[dict, dict[str, list[dict]]]:
        return c.status(), {s: c.tasks(s, limit=stats.SAMPLE_PER_STATE) for s in ("done", "failed")}
    status, rows = await request.app[UPSTREAM].call(read)
    sampled = any(len(r) >= stats.SAMPLE_PER_STATE and stats.within(r[-1:], since) for r in rows.values())
    return web.json_response({"by_state": status["tasks"], "last_hour": status["last_hour"], "window_s": window_s,
                              "by_name": stats.by_name(stats.within(rows["done"], since),
                                                       stats.within(rows["failed"], since)),
                              "sampled": sampled})


SPEC_SCHEMA = {"type": "object", "additionalProperties": False,
               "description": "The keys of a submit --file line: exactly one of shell or python",
               "properties": {k: {} for k in SPEC_FIELDS}}


def add_routes(app: web.Application) -> None:
    add(app, "POST", "/api/distribution/tasks", Role.CLIENT, submit,
        "Submit one task spec or a list of them; answers their ids once the master committed them",
        body={"oneOf": [SPEC_SCHEMA, {"type": "array", "items": SPEC_SCHEMA, "maxItems": MAX_TASKS_PER_REQUEST}]},
        answers=(201, 400, 413, 503))
    add(app, "GET", "/api/distribution/tasks", Role.READ, list_tasks, "Tasks, newest first",
        params=(Param("state", description=", ".join(TASK_STATES)), Param("device"),
                Param("tag", description="tasks with this tag, among the newest 100,000 of the other filters"),
                Param("limit", kind="integer", description="1-1000 [50]"), Param("offset", kind="integer")))
    add(app, "GET", "/api/distribution/tasks/stats", Role.READ, task_stats,
        "Tasks by state, and per task name done, failed, mean and p95 duration over a window",
        params=(Param("window_s", kind="integer", description="seconds back from now [3600]"),))
    add(app, "GET", "/api/distribution/tasks/{id}", Role.READ, show_task, "One task, by its id or a unique prefix",
        answers=(200, 404, 409))
    for action in ("cancel", "requeue"):
        add(app, "POST", f"/api/distribution/tasks/{{id}}/{action}", Role.ADMIN, _control(action),
            f"{action.capitalize()} a task", answers=(200, 404, 409))

