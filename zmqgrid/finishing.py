"""A client's wait for tasks to end: the Finished notices of tasks submitted with notify, and a watch (asked again
while nothing comes, since a master that restarted forgets who waits) for the others."""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Iterable, Iterator

from .errors import MasterUnavailable, TaskNotFound
from .model import FINAL_STATES
from .protocol import Finished

if TYPE_CHECKING:
    from .client import Client


def as_finished(client: Client, task_ids: Iterable[str], timeout_s: float | None, rewatch_s: float,
                tick_s: float | None) -> Iterator[tuple[str, dict] | None]:
    """Client.as_finished: (id, summary) for each task as it becomes final, and None every `tick_s` if given."""
    remaining = set(task_ids)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s

    def ended() -> list[tuple[str, dict]]:
        out = [(task_id, client.finished.pop(task_id)) for task_id in [i for i in client.finished if i in remaining]]
        for task_id, _ in out:
            remaining.discard(task_id)
            client.notified.discard(task_id)
        return out

    yield from ended()
    to_watch = {i for i in remaining if i not in client.notified}
    quiet_since = ticked = time.monotonic()
    while remaining:
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            raise MasterUnavailable(f"{len(remaining)} task(s) not finished within {timeout_s:g}s",
                                    "they go on at the master: wait for them again, or cancel them")
        if tick_s is not None and now - ticked >= tick_s:
            ticked = now
            yield None
            yield from ended()   # what the caller's own requests received meanwhile
            continue
        if to_watch or now - quiet_since >= rewatch_s:
            quiet_since = now
            try:
                reply = client._control_ids("watch", sorted(to_watch or remaining))
            except MasterUnavailable:
                continue   # the master may be restarting: ask again
            to_watch = set()
            for task_id, summary in reply["finished"].items():
                if summary is None:
                    raise TaskNotFound(f"no task {task_id!r}", "check the id")
                if summary.get("state") in FINAL_STATES:
                    client.finished.setdefault(task_id, summary)
            yield from ended()
            continue
        wait = min(0.5, rewatch_s - (now - quiet_since))
        if deadline is not None:
            wait = min(wait, deadline - now)
        if tick_s is not None:
            wait = min(wait, tick_s - (now - ticked))
        if isinstance(client._receive(max(0.0, wait)), Finished):
            quiet_since = time.monotonic()
            yield from ended()
