"""How many tasks a worker holds beyond its slots: fixed by config, or sized by Little's law from what it measures.

docs/architecture.md, "Worker: credit and prefetch". The loop thread owns it: it calls `began`/`ended` as attempts
start and end, `sent`/`answered` around its Results and their acknowledgements, and `size(now)` once a turn.
"""
from __future__ import annotations

import math
from collections import deque
from itertools import islice

SAMPLES = 32               # durations kept: the median of the last ones is a task's typical duration
FLOOR_S = 1e-4             # a call's duration as timed misses the worker's own cost per task (about 0.1 ms)
FIRST_ROUND_TRIP_S = 0.002
SMOOTHING = 0.25           # weight of a new round-trip sample
HEADROOM = 2.0             # tasks in hand per round trip's worth of work: covers bursts and a late turn
HOLD_FROM = 0.1            # below this `want`, a round trip per task costs under 5% of the throughput: hold none
RETURN_BELOW = 0.05        # half of HOLD_FROM: a target that just reached 0 does not give tasks back and forth
# Nor does a slot's attempt count as long before this, or 50 round trips: a call's timed duration leaves out what
# its slot spends around it (a 1 MB argument's way to the pool child), so the estimate may call a steady stream of
# such tasks long, and tasks would go back and forth once per task.
GIVE_BACK_AFTER_S = 0.5


def bound(slots: int) -> int:
    """The most an adaptive worker holds beyond its slots."""
    return max(16, 4 * slots)


class Prefetch:
    """`fixed`: the config's prefetch, or None for adaptive. `size(now)` is the prefetch to run with now."""

    def __init__(self, slots: int, fixed: int | None) -> None:
        self.slots, self.fixed = slots, fixed
        self.durations: deque[float] = deque(maxlen=SAMPLES)
        self.round_trip_s = FIRST_ROUND_TRIP_S
        self.began_at: dict[str, float] = {}   # task id -> when it started (monotonic), oldest first
        self.current = fixed or 0               # the last size: what a heartbeat tells
        self._asked_at: float | None = None     # a Results with results went out then; its ack is awaited
        self._typical: float | None = None      # cached median; None: recompute

    @property
    def adaptive(self) -> bool:
        return self.fixed is None

    def resize(self, slots: int, fixed: int | None) -> None:
        """A reloaded config."""
        self.slots, self.fixed = slots, fixed
        self.current = fixed if fixed is not None else min(self.current, bound(slots))

    # ------------------------------------------------------------ what it measures

    def began(self, task_id: str, now: float) -> None:
        self.began_at[task_id] = now

    def ended(self, task_id: str, duration_s: float | None) -> None:
        """An attempt ended (`duration_s` None: it never ran, or it goes back to the queue to run again)."""
        self.began_at.pop(task_id, None)
        if duration_s is not None:
            self.durations.append(duration_s)
            self._typical = None

    def sent(self, now: float) -> None:
        """A Results holding results went out: the master acknowledges them after its turn's commit."""
        if self._asked_at is None:
            self._asked_at = now

    def answered(self, now: float) -> None:
        """An acknowledgement came (a ResultAck, or a Tasks with acks)."""
        if self._asked_at is not None:
            self.round_trip_s += SMOOTHING * (now - self._asked_at - self.round_trip_s)
            self._asked_at = None

    def typical(self) -> float | None:
        if self._typical is None and self.durations:
            ordered = sorted(self.durations)
            self._typical = max(FLOOR_S, ordered[len(ordered) // 2])
        return self._typical

    # ------------------------------------------------------------ what it decides

    def want(self, now: float) -> float:
        """Tasks worth holding beyond the slots: 2 x the rate the slots take tasks x the round trip. Each slot
        counts 1 / max(typical, elapsed of its attempt), so one long attempt shrinks it at once."""
        # Before any attempt ended, only the running ones tell: each counts as long as it has run.
        typical = self.typical() or FLOOR_S
        # The oldest attempts hold the slots (a python batch's calls beyond them queue in its child).
        elapsed = [now - t for t in islice(self.began_at.values(), self.slots)]
        rate = sum(1.0 / max(typical, e) for e in elapsed) + (self.slots - len(elapsed)) / typical
        return HEADROOM * rate * self.round_trip_s

    def size(self, now: float) -> int:
        if self.fixed is not None:
            return self.fixed
        want = self.want(now) if self.durations else 0.0   # nothing measured yet: hold nothing beyond the slots
        self.current = min(bound(self.slots), math.ceil(want)) if want >= HOLD_FROM else 0
        return self.current

    def give_back(self, now: float) -> bool:
        """Whether tasks held for a slot (none free) should go back to the master: adaptive, and every slot's
        attempt has run long, for `GIVE_BACK_AFTER_S` at least and against the round trip."""
        if self.fixed is not None or not self.began_at:
            return False
        youngest = next(reversed(self.began_at.values()))
        return now - youngest > max(GIVE_BACK_AFTER_S, 50 * self.round_trip_s) and self.want(now) < RETURN_BELOW
