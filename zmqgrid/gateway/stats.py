"""Figures over finished task rows: counts, mean and p95 duration, by task name or for one device."""
from __future__ import annotations

import math
from typing import Iterable

SAMPLE_PER_STATE = 1000   # rows read per final state for a stats answer: the answer says `sampled` past it


def duration_s(row: dict) -> float | None:
    started, finished = row.get("started_at"), row.get("finished_at")
    if isinstance(started, (int, float)) and isinstance(finished, (int, float)) and finished >= started:
        return finished - started
    return None


def p95(values: list[float]) -> float | None:
    """The nearest-rank 95th percentile."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def within(rows: Iterable[dict], since: float) -> list[dict]:
    return [r for r in rows if isinstance(r.get("finished_at"), (int, float)) and r["finished_at"] >= since]


def summary(done: list[dict], others: dict[str, list[dict]]) -> dict:
    """{done, <state>: n, ..., mean_s, p95_s} of rows already cut to a window; durations of the done ones."""
    durations = [d for d in map(duration_s, done) if d is not None]
    out = {"done": len(done), **{state: len(rows) for state, rows in others.items()}}
    out.update(mean_s=_round(mean(durations)), p95_s=_round(p95(durations)))
    return out


def by_name(done: list[dict], failed: list[dict]) -> dict[str, dict]:
    """{name: {done, failed, mean_s, p95_s}}; a task with no name goes under its kind."""
    names: dict[str, tuple[list, list]] = {}
    for rows, index in ((done, 0), (failed, 1)):
        for row in rows:
            names.setdefault(str(row.get("name") or row.get("kind") or "?"), ([], []))[index].append(row)
    return {name: summary(d, {"failed": f}) for name, (d, f) in sorted(names.items())}


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
