"""`/api/distribution/devices...`: list, one device, its stats, and drain/resume/shutdown."""
from __future__ import annotations

import time

from aiohttp import web

from ..client import Client
from .bodies import int_param, json_body, known_params, only_fields
from .errors import HttpError
from .routing import UPSTREAM, Param, Role, add
from . import stats

DEVICE_ACTIONS = ("drain", "resume", "shutdown")
WINDOW = Param("window_s", kind="integer", description="seconds back from now [3600]")
MAX_SAMPLES = 600   # heartbeat samples in a stats answer at most (the master keeps heartbeat_retention, 600 by default)
SAMPLE_KEYS = ("at", "cpu_percent", "memory_percent", "disk_percent", "load_1m", "running")
SAMPLES = Param("samples", kind="integer", description=f"the newest heartbeat samples in `history`, 0-{MAX_SAMPLES} [60]")


def resolve_device(rows: list[dict], ref: str) -> dict:
    """The device `ref` names: an exact id, else the one id it starts (the rule of task references)."""
    exact = [r for r in rows if r.get("device_id") == ref]
    if exact:
        return exact[0]
    found = sorted((r for r in rows if str(r.get("device_id", "")).startswith(ref)), key=lambda r: r["device_id"])
    if not found:
        raise HttpError(404, f"no device {ref!r}", "list them with GET /api/distribution/devices")
    if len(found) > 1:
        names = ", ".join(r["device_id"] for r in found[:5]) + (", ..." if len(found) > 5 else "")
        raise HttpError(409, f"device id prefix {ref!r} matches several devices: {names}", "type more of the id")
    return found[0]


async def list_devices(request: web.Request) -> web.Response:
    known_params(request, ())
    rows = await request.app[UPSTREAM].call(lambda c: c.devices())
    return web.json_response({"devices": rows})


async def _device(request: web.Request) -> dict:
    rows = await request.app[UPSTREAM].call(lambda c: c.devices())
    return resolve_device(rows, request.match_info["id"])


async def show_device(request: web.Request) -> web.Response:
    known_params(request, ())
    return web.json_response(await _device(request))


async def device_stats(request: web.Request) -> web.Response:
    known_params(request, ("window_s", "samples"))
    window_s = int_param(request, "window_s", 3600, 1, 30 * 86400)
    samples = int_param(request, "samples", 60, 0, MAX_SAMPLES)
    row = await _device(request)
    device_id = row["device_id"]
    since = time.time() - window_s

    def finished(c: Client) -> tuple[dict[str, list[dict]], list[dict]]:
        return ({state: c.tasks(state, device=device_id, limit=stats.SAMPLE_PER_STATE)
                 for state in ("done", "failed", "timed_out")}, c.samples(device_id, samples) if samples else [])
    rows, history = await request.app[UPSTREAM].call(finished)
    sampled = any(len(r) >= stats.SAMPLE_PER_STATE and stats.within(r[-1:], since) for r in rows.values())
    cut = {state: stats.within(r, since) for state, r in rows.items()}
    figures = stats.summary(cut["done"], {"failed": cut["failed"], "timed_out": cut["timed_out"]})
    live = {k: row.get(k) for k in ("state", "running", "assigned", "concurrency", "seconds_since_heartbeat",
                                    "metrics", "last_seen_at")}
    recent = [{k: h.get(k) for k in SAMPLE_KEYS} for h in history if h.get("at", 0) >= since]
    return web.json_response({"device_id": device_id, **live, "window_s": window_s, **figures, "sampled": sampled,
                              "history": recent})


async def set_status(request: web.Request) -> web.Response:
    body = only_fields(await json_body(request), {"action": str}, required=("action",))
    action = body["action"]
    if action not in DEVICE_ACTIONS:
        raise HttpError(400, f"action {action!r} is unknown", f"allowed: {', '.join(DEVICE_ACTIONS)}")
    device_id = (await _device(request))["device_id"]
    outcome = await request.app[UPSTREAM].call(lambda c: c.control_devices(action, [device_id]))
    state = outcome.get(device_id, "not found")
    if state == "not found":
        raise HttpError(404, f"no device {device_id!r}", "list them with GET /api/distribution/devices")
    if state == "offline":
        raise HttpError(409, f"device {device_id!r} is offline", "start its worker first")
    return web.json_response({"device_id": device_id, "outcome": state})


def add_routes(app: web.Application) -> None:
    add(app, "GET", "/api/distribution/devices", Role.READ, list_devices, "Every device (as devices list --json)")
    add(app, "GET", "/api/distribution/devices/{id}", Role.READ, show_device,
        "One device, by its id or a unique prefix", answers=(200, 404, 409))
    add(app, "GET", "/api/distribution/devices/{id}/stats", Role.READ, device_stats,
        "A device's live figures, its finished tasks over a window and its recent CPU and memory samples",
        params=(WINDOW, SAMPLES), answers=(200, 404, 409))
    add(app, "PUT", "/api/distribution/devices/{id}/status", Role.ADMIN, set_status,
        "Drain, resume or shut down a device",
        body={"type": "object", "required": ["action"], "additionalProperties": False,
              "properties": {"action": {"enum": list(DEVICE_ACTIONS)}}}, answers=(200, 400, 404, 409))
