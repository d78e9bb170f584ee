"""Every failure of a request as one JSON body, {"error", "hint"}, with its HTTP status (docs/architecture.md,
"HTTP gateway", Errors)."""
from __future__ import annotations

import logging
from typing import Awaitable, Callable

from aiohttp import web

from .routing import SETTINGS
from ..errors import (AmbiguousTaskId, LimitExceeded, MasterUnavailable, ProjectNotFound, ScheduleNotFound,
                      TaskNotFound, ZmqgridError)

logger = logging.getLogger(__name__)

# The master's error codes (docs/architecture.md, "Error codes") and the status each is answered with.
STATUS_OF_CODE = {"bad_request": 400, "bad_message": 400, "forbidden": 403, "pending": 403, "revoked": 403,
                  "not_found": 404, "ambiguous": 409, "too_large": 413, "unavailable": 503}


class HttpError(Exception):
    """Raised by a route to answer `status` with {"error": message, "hint": hint}."""

    def __init__(self, status: int, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.hint = hint


def error_response(status: int, message: str, hint: str = "", headers: dict | None = None) -> web.Response:
    return web.json_response({"error": message, "hint": hint}, status=status, headers=headers)


def status_of(error: ZmqgridError) -> int:
    """The HTTP status of an error the client or the master raised."""
    if isinstance(error, MasterUnavailable):
        return 503
    if isinstance(error, (TaskNotFound, ScheduleNotFound, ProjectNotFound)):
        return 404
    if isinstance(error, AmbiguousTaskId):
        return 409
    if isinstance(error, LimitExceeded):
        return 413
    return STATUS_OF_CODE.get(error.code, 400)   # a RemoteError keeps the master's code


def hint_of(error: ZmqgridError, status: int) -> str:
    if error.hint:
        return error.hint
    if status == 503:
        return "start the master, or check --master; /healthz answers meanwhile"
    if status == 403:
        return "the master refused the gateway's own key for this: give the gateway an admin key (client_key_file)"
    if status == 404:
        listed = "schedules" if isinstance(error, ScheduleNotFound) else \
            "projects" if isinstance(error, ProjectNotFound) else "tasks"
        return f"list them with GET /api/distribution/{listed}"
    if status == 409:
        return "type more of the id"
    return "fix the request and send it again"


def _http_exception_hint(status: int) -> str:
    return {401: "send 'Authorization: Bearer TOKEN'; an operator makes one with: python main.py http tokens create "
                 "NAME --role read",
            404: "see GET /api/openapi.json for the routes", 405: "see GET /api/openapi.json for each route's method",
            413: "send a smaller body, or split a list of tasks over several requests"}.get(status, "")


@web.middleware
async def errors_middleware(request: web.Request,
                            handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    """The outermost middleware: whatever a route or aiohttp raises leaves as the JSON error body."""
    try:
        return await handler(request)
    except HttpError as e:
        return error_response(e.status, e.message, e.hint)
    except ZmqgridError as e:
        status = status_of(e)
        return error_response(status, e.message, hint_of(e, status))
    except web.HTTPException as e:
        if e.status < 400:
            raise
        if e.status == 413:
            message = f"the request body is larger than this gateway accepts ({request.app[SETTINGS].max_body_bytes // 1024} KiB)"
        elif e.status == 404:
            message = f"no route {request.path}"
        elif e.status == 405:
            message = f"{request.method} is not allowed on {request.path}"
        else:
            message = e.reason or "request failed"
        headers = {k: v for k, v in e.headers.items() if k in ("Allow", "WWW-Authenticate")}
        return error_response(e.status, message, _http_exception_hint(e.status), headers)
    except Exception:
        logger.exception("request failed method=%s path=%s", request.method, request.path)
        return error_response(500, "internal error", "see the gateway's log")
