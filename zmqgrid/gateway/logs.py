"""`/api/distribution/tasks/{id}/logs`: a task's output whole, or followed as server-sent events until it ends."""
from __future__ import annotations

import asyncio
import json
import logging
import threading
from typing import Any

from aiohttp import web

from ..errors import ZmqgridError
from .bodies import int_param, known_params
from .errors import HttpError
from .routing import SETTINGS, UPSTREAM, Param, Role, add

logger = logging.getLogger(__name__)

FOLLOWERS = web.AppKey("followers", list)   # [count of open streams]: at most settings.max_followers
POLL_S = 0.3


async def logs(request: web.Request) -> web.StreamResponse:
    known_params(request, ("attempt", "follow"))
    follow = request.query.get("follow", "0")
    if follow not in ("0", "1", "true", "false"):
        raise HttpError(400, f"query parameter follow={follow!r} is unknown", "give follow=1 or leave it out")
    ref = request.match_info["id"]
    if follow in ("1", "true"):
        return await stream(request, ref)
    attempt = int_param(request, "attempt", 0, 0, 1 << 31) or None
    out = await request.app[UPSTREAM].call(lambda c: _whole(c, ref, attempt))
    return web.json_response(out)


def _whole(client: Any, ref: str, attempt: int | None) -> dict:
    task_id = client.task(ref)["id"]   # a prefix resolved (404, 409) before the output is read
    got = client.logs(task_id, attempt)
    return {"id": task_id, "attempt": got.get("attempt"), "state": got.get("state"),
            "stdout": got["stdout"], "stderr": got["stderr"]}


async def stream(request: web.Request, ref: str) -> web.StreamResponse:
    """Server-sent events of `Client.follow`, run on a thread of its own with a Client of its own (a followed task
    may take hours: it must not hold one of the threads every other request shares). The thread ends within a poll
    of the task ending or the reader leaving."""
    app = request.app
    upstream = app[UPSTREAM]
    task = await upstream.call(lambda c: c.task(ref))   # 404/409 as JSON, before the stream starts
    open_streams = app[FOLLOWERS]
    if open_streams[0] >= app[SETTINGS].max_followers:
        raise HttpError(503, f"{open_streams[0]} task outputs are followed already (max_followers)",
                        "try again later, or read the output whole without follow=1")
    open_streams[0] += 1
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue(maxsize=64)
    gone = threading.Event()

    def put(item: tuple[str, Any]) -> None:
        # From the thread: wait for room, so a slow reader slows the polling instead of growing the queue.
        asyncio.run_coroutine_threadsafe(queue.put(item), loop).result()

    def run() -> None:
        client = upstream.new_client()
        try:
            for item in client.follow(task["id"], POLL_S, stopped=gone.is_set):
                if gone.is_set():
                    return
                event = "attempt" if item.stream == "attempt" else item.stream
                data = {"attempt": item.attempt, "device_id": item.text} if event == "attempt" \
                    else {"attempt": item.attempt, "text": item.text}
                put((event, data))
            if not gone.is_set():
                put(("end", {"state": client.task(task["id"])["state"]}))
        except ZmqgridError as e:
            if not gone.is_set():
                put(("error", {"error": e.message, "hint": e.hint}))
        except Exception:
            logger.exception("following task=%s failed", task["id"])
            if not gone.is_set():
                put(("error", {"error": "internal error", "hint": "see the gateway's log"}))
        finally:
            upstream.close_client(client)

    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    try:
        await response.prepare(request)
        thread = threading.Thread(target=run, name=f"follow-{task['id'][:14]}", daemon=True)
        thread.start()
        while True:
            event, data = await queue.get()
            await response.write(f"event: {event}\ndata: {json.dumps(data)}\n\n".encode())
            if event in ("end", "error"):
                break
    except ConnectionResetError:   # the reader left: its thread ends at its next poll
        return response
    finally:
        gone.set()
        while not queue.empty():   # a thread blocked on a full queue goes on, sees `gone` and ends
            queue.get_nowait()
        open_streams[0] -= 1
    await response.write_eof()
    return response


def add_routes(app: web.Application) -> None:
    app[FOLLOWERS] = [0]
    add(app, "GET", "/api/distribution/tasks/{id}/logs", Role.READ, logs,
        "A task's stdout and stderr, whole; with follow=1, server-sent events (attempt, stdout, stderr, then end) "
        "until the task is final",
        params=(Param("attempt", kind="integer", description="whose output [the latest]"),
                Param("follow", description="1: stream as server-sent events")),
        answers=(200, 404, 409), content="application/json, text/event-stream")
