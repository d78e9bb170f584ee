"""What the master counts as tasks end, for `/metrics` (docs/architecture.md, "HTTP gateway", "Metrics"): tasks
finished by state and the durations of done tasks by name, since this master started.

Kept in memory and updated in `Board.finish` (a dict increment, and for a done task a bisect over the buckets), so
the `metrics` query reads them without looking at the ledger. They start at zero at each master start (a new
incarnation): a Prometheus counter that resets, which `rate()` and `increase()` allow for.
"""
from __future__ import annotations

from bisect import bisect_left
from itertools import accumulate

from ..model import FINAL_STATES

# Upper bounds (seconds) of the duration buckets: from a no-op call to a crawl of hours, about x2.5 apart, so a
# quantile estimated from them (histogram_quantile) is within one bucket's width of the truth.
DURATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
                    1800.0, 3600.0, 7200.0)
# Task names with a series of their own: the first this many names seen to finish done; any later one counts under
# OTHER. First come, not the most frequent: a name's series must never move to or from OTHER, or a counter would
# go down.
DURATION_NAMES = 50
OTHER = "other"


class Tallies:
    """Finished tasks by state and a duration histogram per task name (bounded), since the master started."""

    __slots__ = ("finished", "durations", "names_max")

    def __init__(self, names_max: int = DURATION_NAMES) -> None:
        self.finished = dict.fromkeys(sorted(FINAL_STATES), 0)
        # name -> [count in bucket 0, ..., count above the last bound, sum of seconds]: not cumulative (one
        # increment per observation); `snapshot` makes them cumulative
        self.durations: dict[str, list] = {}
        self.names_max = names_max

    def ended(self, state: str, name: str | None, duration_s: float | None) -> None:
        self.finished[state] += 1
        if duration_s is None or state != "done":
            return
        durations = self.durations
        key = name or OTHER
        row = durations.get(key)
        if row is None:
            if key != OTHER and len(durations) - (OTHER in durations) >= self.names_max:
                key = OTHER
                row = durations.get(OTHER)
            if row is None:
                row = durations[key] = [0] * (len(DURATION_BUCKETS) + 1) + [0.0]
        row[bisect_left(DURATION_BUCKETS, duration_s)] += 1
        row[-1] += duration_s

    def snapshot(self) -> dict:
        """{"finished": {state: n}, "buckets": [bound, ...], "durations": {name: [cumulative count per bound...,
        count of all, sum]}}: what the `metrics` query answers."""
        out = {name: [*accumulate(row[:-1]), round(row[-1], 6)] for name, row in self.durations.items()}
        return {"finished": dict(self.finished), "buckets": list(DURATION_BUCKETS), "durations": out}
