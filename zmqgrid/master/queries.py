"""Read-only answers to client queries: status, tasks, one task, its logs, devices."""
from __future__ import annotations

import time
from typing import Any

from ..errors import AmbiguousTaskId, TaskNotFound, UsageError
from ..model import DEVICE_STATES, TASK_STATES, DeviceState, TaskState
from ..projects.messages import RUNS_PROJECTS_TAG
from ..model import PYTHON_ENV_TAG
from ..store import readings
from . import metering, paging
from .board import Board

MAX_PAGE = 1000
MAX_CANDIDATES = 5   # ids an ambiguous prefix's error, or devices a waiting reason, names at most
STARTED = time.monotonic()


def summary(row: dict) -> dict:
    """What a waiting client needs about a final task (the same shape as a Finished message)."""
    return {k: row.get(k) for k in ("id", "state", "attempt", "device_id", "exit_code", "value", "error", "reason")}


def _int(params: dict, name: str, default: int, low: int, high: int) -> int:
    value = params.get(name, default)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise UsageError(f"{name} must be an integer {low}-{high}, got {value!r}")
    return value


def resolve_task(board: Board, ref: Any) -> str:
    """The id a task reference names: the id itself, else the one id it is a prefix of (docs/architecture.md,
    "Task references"). Raises TaskNotFound, or AmbiguousTaskId naming the first MAX_CANDIDATES matches."""
    if not isinstance(ref, str) or not ref:
        raise UsageError("a task id is required")
    if ref in board.tasks or ref in board.turn.finished:   # this turn's: maybe not in the ledger yet
        return ref
    found = board.store.find_task_id(ref, MAX_CANDIDATES + 1)
    if not found:
        raise TaskNotFound.of([ref])
    if len(found) > 1:
        raise AmbiguousTaskId.of(ref, candidates(found))
    return found[0]


def candidates(found: list[str]) -> str:
    """The ids an ambiguous prefix matched, as an error names them: at most MAX_CANDIDATES, then '...'."""
    return ", ".join(found[:MAX_CANDIDATES]) + (", ..." if len(found) > MAX_CANDIDATES else "")


def waiting_reason(board: Board, entry, now_mono: float) -> str:
    """Why a queued task is not running yet, in words a person can act on."""
    reason = _missing_worker(board, entry.need)
    if reason is None:
        return _waiting_on_an_eligible_worker(board, entry, now_mono)
    # A drained worker that meets the task is what the operator can act on (resume it), not a worker to look for.
    draining = sorted(d.device_id for d in board.fleet.devices.values()
                      if d.registered and d.state == DeviceState.DRAINING and entry.need.met_by(d))
    if entry.need.device and draining:
        return f"device {entry.need.device} is draining"
    if draining:
        shown = ", ".join(draining[:MAX_CANDIDATES]) + (", ..." if len(draining) > MAX_CANDIDATES else "")
        return f"{reason}; {shown} could take it but {'is' if len(draining) == 1 else 'are'} draining"
    return reason


def _missing_worker(board: Board, need) -> str | None:
    """What the online workers lack to take a task with this requirement, or None when one of them meets it."""
    online = board.fleet.online()
    if not online:
        return "no worker is online"
    if need.device and not any(d.device_id == need.device for d in online):
        return f"device {need.device} is not online"
    if need.project and not any(RUNS_PROJECTS_TAG in d.tags for d in online):
        name, _, version = need.project.partition("@")
        return (f"it runs in project {name}@{version[:12]} and no online worker runs projects (a worker with "
                "allow_projects false or python_pool inline does not)")
    for tag in sorted(need.tags):
        if not any(tag in d.tags for d in online):
            if tag.startswith(PYTHON_ENV_TAG):
                return (f"it runs with python env {tag.removeprefix(PYTHON_ENV_TAG)} and no online worker has it "
                        "(worker config python_envs)")
            return f"no online worker has tag {tag}"
    if all(need.refused_by in d.tags for d in online):
        return f"no online worker runs {need.kind} tasks (their allowed_kinds leave it out)"
    if not any(need.met_by(d) for d in online):
        return f"no online worker has all of the tags {', '.join(sorted(need.tags))}"
    return None


def _waiting_on_an_eligible_worker(board: Board, entry, now_mono: float) -> str:
    key = entry.limit_key
    if key and not board.limits.allows(key, now_mono):
        return f"waiting for room under {board.limits.describe(key)}"
    if any(item[2] == entry.id and item[0] > now_mono for item in board.queue.delayed):
        return "waiting out its retry backoff"
    return "waiting for a free slot on an eligible worker"


def devices(board: Board, now_mono: float) -> list[dict]:
    """The ledger's rows with what is known live (docs/architecture.md, "What `status` and `devices` answer")."""
    rows = board.store.list_devices()
    now = time.time()
    for row in rows:
        live = board.fleet.devices.get(row["device_id"])
        row["pending_commands"] = len(board.fleet.commands.pending.get(row["device_id"], {}))
        if live is None:
            # Not heard from since this master started: the ledger's last_seen_at still says when it last was.
            last = row.get("last_seen_at")
            row["seconds_since_heartbeat"] = round(max(0.0, now - last), 1) if last else None
            row["state"], row["running"], row["assigned"], row["in_flight"], row["credit"] = "offline", 0, 0, 0, 0
            row["python_envs"] = []   # told in Register only: the ledger does not keep them
            continue
        row["state"] = live.state if live.registered or live.state == DeviceState.OFFLINE else DeviceState.OFFLINE
        row["seconds_since_heartbeat"] = round(now_mono - live.last_seen, 1)
        if live.registered:   # the ledger's row is written every few heartbeats only (see Fleet.heartbeat)
            row["last_seen_at"] = round(now - (now_mono - live.last_seen), 3)
        running = sum(1 for t in live.inflight if t in board.tasks and board.tasks[t].state == TaskState.RUNNING)
        row["running"], row["assigned"], row["in_flight"] = running, len(live.inflight) - running, len(live.inflight)
        row["credit"] = live.credit
        row["metrics"] = live.metrics or row["metrics"]
        row["python_envs"] = [{"name": name, "version": version, "executable": executable}
                              for name, version, executable in live.info.get("python_envs", ())]
    return rows


def stuck_tasks(board: Board) -> int:
    """Queued tasks that no online worker could ever take (a tag or device nobody has). Judged once per
    requirement: the tasks of a Submit share theirs, and most tasks have one of the three plain ones."""
    online = board.fleet.online()
    takers: dict = {}
    stuck = 0
    for e in board.tasks.values():
        if e.state == TaskState.QUEUED:
            taken = takers.get(e.need)
            if taken is None:
                taken = takers[e.need] = any(e.need.met_by(d) for d in online)
            stuck += not taken
    return stuck


def status(board: Board, now_mono: float, settings: dict) -> dict:
    tasks = dict.fromkeys(TASK_STATES, 0)
    tasks.update(board.store.count_tasks_by_state())
    device_rows = devices(board, now_mono)
    by_state = dict.fromkeys(DEVICE_STATES, 0)
    for row in device_rows:
        by_state[row["state"]] = by_state.get(row["state"], 0) + 1
    return {"incarnation": board.incarnation, "uptime_s": round(now_mono - STARTED, 1),
            "router": settings.get("router"), "tasks": tasks, "devices": by_state,
            "last_hour": readings.finished_since(board.store, time.time() - 3600),
            "stuck_tasks": stuck_tasks(board), "counters": dict(board.counters),
            "bad_messages": settings.get("bad_messages", 0), "refused_messages": settings.get("refused_messages", 0),
            "subscriptions": dict(settings.get("subscriptions", {}))}


def _paged(rows: list, offset: int, more: bool, params: dict, room: int) -> Any:
    """`rows` (from `offset`) as the rows that fit `room`; with params.page, {rows, next_offset} (see
    docs/architecture.md, "Replies are paged"), else the bare list a client older than paging reads."""
    shown, cut = paging.page(rows, room)
    if not params.get("page"):
        return shown
    return {"rows": shown, "next_offset": offset + len(shown) if cut or more else None}


def answer(board: Board, what: str, params: dict, now_mono: float, settings: dict) -> Any:
    store = board.store
    if what == "status":
        return status(board, now_mono, settings)
    if what == "metrics":
        most = metering.MAX_DEVICES_PER_ANSWER
        return dict(metering.metrics(board, _int(params, "offset", 0, 0, 1 << 62), _int(params, "limit", most, 1, most),
                                     round(now_mono - STARTED, 1), settings), stuck_tasks=stuck_tasks(board))
    if what == "samples":
        device_id = params.get("device")
        if not isinstance(device_id, str) or not device_id:
            raise UsageError("device must be a device id")
        return metering.samples(board, device_id, _int(params, "limit", 60, 1, metering.MAX_SAMPLES))
    room = paging.budget(params)
    if what == "devices":
        offset, limit = _int(params, "offset", 0, 0, 1 << 62), _int(params, "limit", MAX_PAGE, 1, MAX_PAGE)
        rows = devices(board, now_mono)
        return _paged(rows[offset:offset + limit], offset, len(rows) > offset + limit, params, room)
    if what == "tasks":
        state = params.get("state")
        if state is not None and state not in TASK_STATES:
            raise UsageError(f"state {state!r} is unknown; allowed: {', '.join(TASK_STATES)}")
        device_id = params.get("device")
        if device_id is not None and not isinstance(device_id, str):
            raise UsageError("device must be a device id")
        tag = params.get("tag")
        if tag is not None and (not isinstance(tag, str) or not tag):
            raise UsageError("tag must be a tag")
        offset, limit = _int(params, "offset", 0, 0, 1 << 62), _int(params, "limit", 50, 1, MAX_PAGE)
        rows = (readings.tasks_tagged(store, tag, state, device_id, limit, offset) if tag
                else store.list_tasks(state, device_id, limit, offset))
        return _paged(rows, offset, len(rows) == limit, params, room)
    if what == "task":
        task = store.get_task(resolve_task(board, params.get("id")))
        if task is None:   # submitted in this very turn: its row is written by the turn's commit
            raise TaskNotFound.of([params["id"]])
        entry = board.tasks.get(task["id"])
        if entry is not None and entry.state == TaskState.QUEUED:
            task["waiting"] = waiting_reason(board, entry, now_mono)
        if entry is not None and entry.state in (TaskState.ASSIGNED, TaskState.RUNNING):
            # The current attempt's row is written when it ends; until then, memory knows it best.
            task["state"] = entry.state
            task["started_at"] = task["started_at"] or entry.started_at
            task["attempts"].append({"attempt": entry.attempt, "device_id": entry.device_id, "state": entry.state,
                                     "assigned_at": entry.assigned_at, "started_at": entry.started_at,
                                     "finished_at": None, "exit_code": None, "error": None, "stale": 0})
        return paging.fit(task, room)
    if what == "logs":
        task_id = resolve_task(board, params.get("id"))
        attempt = params.get("attempt")
        if attempt is not None and (not isinstance(attempt, int) or isinstance(attempt, bool)):
            raise UsageError(f"attempt must be an integer, got {attempt!r}")
        out = store.get_output(task_id, attempt)
        entry = board.tasks.get(task_id)
        # What `Client.follow` tells the end of an attempt by (docs/architecture.md, "Replies are paged").
        if entry is not None:
            out["state"], out["task_attempt"] = entry.state, entry.attempt
        else:   # final; if it ended in this very turn, its row is not written yet
            row = board.turn.finished.get(task_id) or store.get_task(task_id)
            out["state"], out["task_attempt"] = row["state"], row["attempt"]
        # --follow asks only for what it has not printed yet.
        for stream in ("stdout", "stderr"):
            start = params.get(f"{stream}_from", 0)
            if not isinstance(start, int) or isinstance(start, bool) or start < 0:
                raise UsageError(f"{stream}_from must be an integer >= 0, got {start!r}")
            out[f"{stream}_length"] = len(out[stream])
            # Each stream gets half the budget: a client reads the rest by asking again from where this ends.
            out[stream] = paging.stretch(out[stream], start, room // 2)
        return out
    raise UsageError(f"unknown query {what!r}; allowed: status, metrics, devices, tasks, task, logs, samples, schedules")
