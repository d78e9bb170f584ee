"""The client's side of `projects sync` (docs/architecture.md, Projects, "Sync and what workers hold"): ask the
master to send the sync, then follow each worker's cache report for the version until every one is ready or failed,
or the time is up."""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from ..errors import UsageError
from ..protocol import Control, Query

if TYPE_CHECKING:
    from ..client import Client

Progress = Callable[[str, str, str], None]   # (device id, state, reason): each time a worker's state changes
DONE = ("ready", "failed", "offline")


def worker_state(entry: dict | None, seq: int) -> tuple[str, str]:
    """What a worker's cache entry for the version says of the sync of `seq`: (state, reason). `waiting` until the
    worker applied it; then `fetching`, `building`, `ready` or `failed`; `offline` when its device went away."""
    if entry is None:
        return "waiting", ""
    if entry["device"] == "offline":
        return "offline", "the worker went offline"
    if entry["sync"] < seq:
        return "waiting", ""
    if entry["copy"] == "failed":
        return "failed", entry["reason"] or "its copy could not be fetched"
    if entry["env"] == "failed":
        return "failed", entry["reason"] or "its environment could not be built"
    if entry["copy"] == "fetching":
        return "fetching", ""
    return ("ready", "") if entry["env"] in ("ready", "none") else ("building", "")


def start_sync(client: Client, ref: str, tags: Iterable[str] = (), rebuild: bool = False) -> dict:
    """Ask the master to sync NAME[@VERSION] to every matching online worker that runs projects, without following
    it: {name, version, seq, workers}; UsageError when no online worker matches."""
    name, _, version = ref.partition("@")
    tags = list(tags)
    params: dict = {"op": "sync", "name": name, "rebuild": rebuild}
    if version:
        params["version"] = version
    if tags:
        params["tags"] = tags
    started = client.request(Control, "project", params, about="project")
    if not started["workers"]:
        wanted = f" and has tag{'s' if len(tags) > 1 else ''} {', '.join(tags)}" if tags else ""
        raise UsageError(f"no online worker runs projects{wanted}: nothing to sync",
                         "start one, or check its allow_projects and tags (devices list shows them)")
    return started


def sync_project(client: Client, ref: str, tags: Iterable[str] = (), rebuild: bool = False,
                 timeout_s: float = 900.0, progress: Progress | None = None, poll_s: float = 0.5) -> dict:
    """Sync NAME[@VERSION] to every matching online worker that runs projects and follow it. Returns {name, version,
    workers: {device id: {state, reason}}, ready, failed, unfinished} (lists of device ids); raises UsageError
    when no online worker matches, ProjectNotFound for an unknown project or version."""
    name = ref.partition("@")[0]
    started = start_sync(client, ref, tags, rebuild)
    seq, version = started["seq"], started["version"]
    states = {device_id: ("waiting", "") for device_id in started["workers"]}
    deadline = time.monotonic() + timeout_s
    while True:
        rows = client.request(Query, "projects", {"name": name, "version": version}, about="project")
        held = {entry["device_id"]: entry for entry in (rows[0].get("workers") or [])} if rows else {}
        for device_id, before in states.items():
            if before[0] in DONE:
                continue
            now = worker_state(held.get(device_id), seq)
            if now != before:
                states[device_id] = now
                if progress is not None:
                    progress(device_id, *now)
        if all(state in DONE for state, _ in states.values()) or time.monotonic() >= deadline:
            break
        time.sleep(poll_s)
    by = lambda *which: [d for d, (state, _) in states.items() if state in which]   # noqa: E731
    return {"name": name, "version": version, "rebuild": rebuild,
            "workers": {d: {"state": state, "reason": reason} for d, (state, reason) in states.items()},
            "ready": by("ready"), "failed": by("failed", "offline"),
            "unfinished": by("waiting", "fetching", "building")}


def holding_in_words(worker: dict) -> str:
    """A worker's copy and environment of a version, in words (`projects show`, the dashboard)."""
    copy, env, device, reason = worker.get("copy"), worker.get("env"), worker.get("device"), worker.get("reason")
    if copy != "cached":
        text = {"fetching": "fetching", "failed": "fetch failed"}.get(copy, str(copy))
    else:
        text = {"unknown": "cached, env not looked at yet", "not_built": "cached, env not built",
                "building": "cached, env building", "ready": "cached, env ready", "failed": "cached, env build failed",
                "none": "cached, no requirements.txt"}.get(env, f"cached, env {env}")
    text += "" if device == "online" else f" ({device})"
    return text + (f": {reason}" if reason else "")
