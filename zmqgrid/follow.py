"""A task's output: read whole (`Client.logs`), or followed as it grows, attempt after attempt (what `Client.follow`
and `tasks logs --follow` do)."""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Callable, Iterator, NamedTuple

from .errors import MasterUnavailable
from .model import FINAL_STATES, TaskState
from .protocol import Query

if TYPE_CHECKING:
    from .client import Client


def read_output(client: Client, task_id: str, attempt: int | None = None) -> dict:
    """A task's stdout and stderr, whole: asked for again from where an answer ended until none is left."""
    params: dict[str, Any] = {"id": task_id, "max_bytes": client.max_message_bytes}
    if attempt is not None:
        params["attempt"] = attempt
    got = client.request(Query, "logs", params)
    for _ in range(10_000):   # each answer brings at least one character, or the loop ends
        missing = [s for s in ("stdout", "stderr") if len(got[s]) < got.get(f"{s}_length", 0)]
        if not missing:
            break
        more = client.request(Query, "logs", {**params, "stdout_from": len(got["stdout"]),
                                              "stderr_from": len(got["stderr"])})
        if not any(more[s] for s in missing):
            break
        for stream in ("stdout", "stderr"):
            got[stream] += more[stream]
        got.update({k: v for k, v in more.items() if k not in ("stdout", "stderr")})
    return got


class Followed(NamedTuple):
    """An item of `Client.follow`: `stream` is "attempt" as attempt `attempt` begins (`text`: the device that runs
    it, or ""), else "stdout" or "stderr" with `text` that attempt printed."""
    attempt: int
    stream: str
    text: str


def follow(client: Client, task_id: str, poll_s: float = 0.3, timeout_s: float | None = None,
           first_attempt: int = 1, stopped: Callable[[], bool] | None = None) -> Iterator[Followed]:
    """Yield a task's output as it grows, attempt after attempt from `first_attempt`, until the task is final:
    a Followed "attempt" item as each attempt begins, then its "stdout" and "stderr" text.

    `task_id` is a whole id (`client.task(ref)["id"]` resolves a prefix). Attempt n is over when the task has a
    later attempt, is queued again or is final; its output is read once more then, for what its result brought
    (docs/architecture.md, "Replies are paged"). `stopped`: asked before each poll; True ends the following (a
    reader that went away, as the HTTP gateway's server-sent events see it) within `poll_s`.
    """
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    attempt, begun, ending = first_attempt, False, False
    printed = {"stdout": 0, "stderr": 0}
    while stopped is None or not stopped():
        out = client.request(Query, "logs", {"id": task_id, "attempt": attempt, "stdout_from": printed["stdout"],
                                             "stderr_from": printed["stderr"], "max_bytes": client.max_message_bytes})
        latest, state = out["task_attempt"], out["state"]
        if latest < attempt and state in FINAL_STATES:
            return   # it ended before this attempt began (cancelled while queued)
        if not begun and latest >= attempt:
            begun = True
            yield Followed(attempt, "attempt", _device_of(client, task_id, attempt))
        for stream in ("stdout", "stderr"):
            if out[stream]:
                yield Followed(attempt, stream, out[stream])
            printed[stream] += len(out[stream])
        if any(printed[s] < out[f"{s}_length"] for s in printed):
            continue   # the answer held only what fits this client's messages: the rest comes at once
        if latest > attempt or (latest == attempt and (state == TaskState.QUEUED or state in FINAL_STATES)):
            if not ending:
                ending = True
                continue
            if state in FINAL_STATES and latest == attempt:
                return
            attempt, begun, ending = attempt + 1, False, False
            printed = {"stdout": 0, "stderr": 0}
            continue
        if deadline is not None and time.monotonic() > deadline:
            raise MasterUnavailable(f"task {task_id} still {state} after {timeout_s:g}s", "follow it again")
        time.sleep(poll_s)


def _device_of(client: Client, task_id: str, attempt: int) -> str:
    """The device that runs (or ran) an attempt, "" if the master does not say."""
    rows = client.task(task_id).get("attempts") or []
    return next((str(a.get("device_id") or "") for a in rows if a.get("attempt") == attempt), "")
