"""The queue of runnable tasks: priority order, FIFO within a priority, aging so nothing starves, and the
retries waiting out their backoff."""
from __future__ import annotations

import heapq
from typing import Callable

# Starvation rule (README, "Priorities"): every AGING_EVERY-th dispatch takes the oldest queued task,
# whatever its priority; the others take the highest priority first, oldest first within it.
AGING_EVERY = 10


class TaskQueue:
    """Two lazily-cleaned heaps over the same queued tasks.

    Every push carries a generation number; `live(id, gen)` says whether the task is still queued under it.
    The caller bumps the task's generation on each push, so an item left behind in the other heap (or from
    an earlier push) goes stale and is skipped when popped: removal costs nothing.

    While every queued task has the same priority, the highest-priority task is the oldest, so the age heap is
    not kept (a push and a pop fewer per task); it is built from the priority heap when a second priority comes.
    """

    # Slots: a parking lot is a TaskQueue, and there is one per requirement that tasks wait on.
    __slots__ = ("live", "aging_every", "by_priority", "by_age", "delayed", "pops", "priority", "mixed")

    def __init__(self, live: Callable[[str, int], bool], aging_every: int = AGING_EVERY) -> None:
        self.live = live
        self.aging_every = aging_every
        self.by_priority: list[tuple[int, int, int, str]] = []   # (-priority, order, gen, id)
        self.by_age: list[tuple[int, int, str]] = []             # (order, gen, id)
        self.delayed: list[tuple[float, int, str]] = []          # (monotonic due, gen, id)
        self.pops = 0
        self.priority: int | None = None   # the one priority queued, while there is only one
        self.mixed = False                 # several priorities queued: by_age is kept

    def push(self, priority: int, order: int, gen: int, task_id: str) -> None:
        heapq.heappush(self.by_priority, (-priority, order, gen, task_id))
        if self.mixed:
            heapq.heappush(self.by_age, (order, gen, task_id))
        elif self.priority is None:
            self.priority = priority
        elif priority != self.priority:
            self.mixed = True
            self.by_age = [(order_, gen_, id_) for _, order_, gen_, id_ in self.by_priority]
            heapq.heapify(self.by_age)

    def push_later(self, due_mono: float, gen: int, task_id: str) -> None:
        heapq.heappush(self.delayed, (due_mono, gen, task_id))

    def due(self, now_mono: float) -> list[str]:
        """Ids of delayed tasks whose time has come (the caller pushes them with a fresh generation)."""
        out = []
        while self.delayed and self.delayed[0][0] <= now_mono:
            _, gen, task_id = heapq.heappop(self.delayed)
            if self.live(task_id, gen):
                out.append(task_id)
        return out

    def pop(self) -> str | None:
        """Id of the next task to dispatch, or None when nothing is queued."""
        self.pops += 1
        if not self.mixed:
            task_id = self._pop_priority()
            if task_id is None:
                self.priority = None
            return task_id
        if self.pops % self.aging_every == 0:
            task_id = self._pop_age() or self._pop_priority()
        else:
            task_id = self._pop_priority() or self._pop_age()
        if not self.by_priority:   # every live task has an item there: what is left in by_age is stale
            self.by_age, self.priority, self.mixed = [], None, False
        return task_id

    def prune(self) -> None:
        """Drop the stale items: a queue nobody pops (a parking lot whose worker never comes) would keep them."""
        live = self.live
        self.by_priority = [item for item in self.by_priority if live(item[3], item[2])]
        heapq.heapify(self.by_priority)
        if self.mixed:
            self.by_age = [item for item in self.by_age if live(item[2], item[1])]
            heapq.heapify(self.by_age)
        self.delayed = [item for item in self.delayed if live(item[2], item[1])]
        heapq.heapify(self.delayed)
        if not self.by_priority:
            self.by_age, self.priority, self.mixed = [], None, False

    def _pop_priority(self) -> str | None:
        while self.by_priority:
            _, _, gen, task_id = heapq.heappop(self.by_priority)
            if self.live(task_id, gen):
                return task_id
        return None

    def _pop_age(self) -> str | None:
        while self.by_age:
            _, gen, task_id = heapq.heappop(self.by_age)
            if self.live(task_id, gen):
                return task_id
        return None

    def __bool__(self) -> bool:
        return bool(self.by_priority or self.by_age)

    def __len__(self) -> int:
        """Items held, stale ones included: an upper bound of queued tasks, for logs."""
        return len(self.by_priority)
