"""Messages the dashboard's thread workers post to the UI, and the screens post to the app (dataclasses; high-rate
ones coalesce).

Screens ask the app for what it owns (the refresh loop, the actions on the master) only by these messages, which
bubble from the screen to the app: a screen knows the `Source` it was given and nothing of `DashboardApp`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from textual.message import Message

from .source import ClusterSnapshot, TaskOutput, TaskQuery


@dataclass
class SnapshotFetched(Message):
    """A new view of the cluster; an older one still waiting in the queue is dropped for it."""

    snapshot: ClusterSnapshot

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, SnapshotFetched)


@dataclass
class TaskFetched(Message):
    """One task's detail and the output it printed since the last fetch (never coalesced: output is appended)."""

    task_id: str
    task: dict | None
    output: TaskOutput | None
    error: str = ""


@dataclass
class ActionDone(Message):
    """An action (cancel, requeue, drain, submit, ...) came back from the master; `text` says what happened."""

    text: str
    ok: bool = True


@dataclass
class TaskQueryChanged(Message):
    """The operator asked for another page or filter of the task list: the app refreshes with `query` from now on."""

    query: TaskQuery


@dataclass
class ActionRequested(Message):
    """Run `call(*args)` on the master (cancel, requeue, drain, submit, ...), already confirmed if it had to be; `what`
    names it in the notification of the answer (an `ActionDone`)."""

    what: str
    call: Callable[..., Any]
    args: tuple = ()
