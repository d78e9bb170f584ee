"""Load-balancing strategies: pure functions from the eligible workers' loads to the index of the chosen one."""
from __future__ import annotations

import importlib
import logging
import random as _random
from importlib.metadata import entry_points
from typing import Callable, Sequence

from ..errors import ConfigError

logger = logging.getLogger(__name__)

# A load is (in_flight, credit, capacity) of one eligible worker that has credit left; capacity is its
# configured weight times its measured free CPU share (never below 5%), so a busy or weak machine gets less.
Load = tuple[int, int, float]
Strategy = Callable[[Sequence[Load]], int]


def pick(strategy: Strategy, eligible: Sequence) -> int:
    """The index of the eligible device (DeviceEntry) that `strategy` chooses from their loads."""
    loads = [(len(d.inflight), d.credit,
              d.weight * max(0.05, 1.0 - (d.metrics.get("cpu_percent") or 0.0) / 100.0)) for d in eligible]
    index = strategy(loads)
    if not (isinstance(index, int) and 0 <= index < len(eligible)):
        # A user strategy's bug must not stall dispatch: say so once per call, and fall back.
        logger.error("load balancing strategy returned %r for %d workers; using least_tasks", index, len(loads))
        return least_tasks(loads)
    return index


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
    """The worker with the lowest in-flight count per unit of capacity (weight x free CPU share)."""
    return min(range(len(loads)), key=lambda i: (loads[i][0] / max(loads[i][2], 1e-9), -loads[i][1]))


def random(loads: Sequence[Load]) -> int:
    return _random.randrange(len(loads))


BUILTIN: dict[str, Callable[[], Strategy]] = {
    "least_tasks": lambda: least_tasks, "round_robin": RoundRobin,
    "weighted": lambda: weighted, "random": lambda: random,
}


def make_strategy(name: str) -> Strategy:
    """A built-in strategy, a user's `package.module:function`, or an entry point of group zmqgrid.strategies.

    A user strategy is called like the built-ins, `strategy(loads) -> index`; a class is instantiated first.
    """
    if name in BUILTIN:
        return BUILTIN[name]()
    try:
        if ":" in name:
            module, _, attr = name.partition(":")
            found = getattr(importlib.import_module(module), attr)
        else:
            matches = [ep for ep in entry_points(group="zmqgrid.strategies") if ep.name == name]
            if not matches:
                raise LookupError(f"no entry point {name!r} in group zmqgrid.strategies")
            found = matches[0].load()
    except (ImportError, AttributeError, LookupError) as e:
        raise ConfigError(f"load_balance_strategy {name!r} cannot be loaded: {e}",
                          "use least_tasks, round_robin, weighted, random, or an importable pkg.mod:function") from e
    return found() if isinstance(found, type) else found
