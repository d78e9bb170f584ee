"""Which of the tasks a dead worker was running its death counts against (towards quarantine): a pure function of
their counted deaths and start times (docs/architecture.md, Task state machine)."""
from __future__ import annotations

from typing import NamedTuple, Sequence

SAME_START_S = 0.05   # tasks started within this of each other started together (one loop turn of the worker)


class Suspect(NamedTuple):
    task_id: str
    deaths: int                 # deaths counted against it so far
    started_at: float | None    # when the master heard that it started (None: not known, taken as the earliest)


def blamed(running: Sequence[Suspect]) -> set[str]:
    """The task ids a worker death is counted for. The first death among them counts for each: a task that kills
    its worker may do so long after it started, with others started beside it since, and one death cannot tell
    which it was. Once some have deaths, the ones with the most are the likelier cause (present at every death),
    and of equals the one started last (a task kills its worker after it starts); the rest are bystanders."""
    if not running:
        return set()
    most = max(s.deaths for s in running)
    if most == 0:
        return {s.task_id for s in running}
    repeat = [s for s in running if s.deaths == most]
    last = max(s.started_at or 0.0 for s in repeat)
    return {s.task_id for s in repeat if (s.started_at or 0.0) >= last - SAME_START_S}
