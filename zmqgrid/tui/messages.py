"""Messages the dashboard's thread workers post to the UI (dataclasses; high-rate ones coalesce)."""
from __future__ import annotations

from dataclasses import dataclass

from textual.message import Message

from .source import ClusterSnapshot, TaskOutput


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
