"""Which of the tasks a dead worker was running its death counts against (towards quarantine): pure functions of
their start times and earlier deaths (docs/architecture.md, Task state machine)."""
from __future__ import annotations

from typing import NamedTuple, Sequence

SAME_START_S = 0.05   # tasks started within this of each other started together (one loop turn of the worker)
LAST = "last"         # started last: the death counts
AGAIN = "again"       # started before others, and so at an earlier death too: it counts, and so do its noted ones
NOTED = "noted"       # started before others, the first time: kept as evidence, counted only if it happens again


class Suspect(NamedTuple):
    task_id: str
    started_at: float | None    # when the master heard that it started (None: not known, taken as the earliest)
    before: int                 # earlier deaths it was present at while started before others


def blamed(running: Sequence[Suspect]) -> dict[str, str]:
    """task id -> LAST, AGAIN or NOTED, for each task the dead worker was running. A task that kills its worker
    does so after it starts, so the tasks started last are blamed. One started before them may be a bystander (its
    worker died of a task started beside it), or a task that kills its worker late: once is chance, twice is not."""
    if not running:
        return {}
    last = max(s.started_at or 0.0 for s in running)
    return {s.task_id: LAST if (s.started_at or 0.0) >= last - SAME_START_S else AGAIN if s.before else NOTED
            for s in running}


def before_count(evidence: Sequence[dict]) -> int:
    """Deaths in `evidence` at which the task had started before others (records older than this rule: none)."""
    return sum(1 for e in evidence if e.get("started_last") is False)


def with_death(evidence: Sequence[dict], verdict: str, death: dict) -> tuple[list[dict], int]:
    """The evidence with `death` (attempt, device, reason, time) added under `verdict`, and how many deaths that
    adds to the task's count: 1 for LAST, 1 plus its noted ones (now counted) for AGAIN, 0 for NOTED."""
    record = {**death, "started_last": verdict == LAST, "counted": verdict != NOTED}
    if verdict != AGAIN:
        return [*evidence, record], int(verdict == LAST)
    noted = sum(1 for e in evidence if e.get("counted") is False)
    return [*(dict(e, counted=True) if e.get("counted") is False else e for e in evidence), record], noted + 1
