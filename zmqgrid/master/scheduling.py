"""Load-balancing strategies: pure functions from the eligible workers' loads to the index of the chosen one."""
from __future__ import annotations

import random as _random
from typing import Callable, Sequence

# A load is (in_flight, credit, weight) of one eligible worker that has credit left.
Load = tuple[int, int, float]
Strategy = Callable[[Sequence[Load]], int]


def least_tasks(loads: Sequence[Load]) -> int:
    """The worker with the fewest tasks in flight; ties go to the one with the most credit left."""
    return min(range(len(loads)), key=lambda i: (loads[i][0], -loads[i][1]))


class RoundRobin:
    """Each call picks the next worker in turn (stateful, so one instance per master)."""

    def __init__(self) -> None:
        self.turn = 0

    def __call__(self, loads: Sequence[Load]) -> int:
        self.turn += 1
        return self.turn % len(loads)


def weighted(loads: Sequence[Load]) -> int:
    """The worker with the lowest in-flight count per unit of weight (weight = its concurrency by default)."""
    return min(range(len(loads)), key=lambda i: (loads[i][0] / max(loads[i][2], 1e-9), -loads[i][1]))


def random(loads: Sequence[Load]) -> int:
    return _random.randrange(len(loads))


def make_strategy(name: str) -> Strategy:
    strategies: dict[str, Callable[[], Strategy]] = {
        "least_tasks": lambda: least_tasks, "round_robin": RoundRobin,
        "weighted": lambda: weighted, "random": lambda: random,
    }
    return strategies[name]()
