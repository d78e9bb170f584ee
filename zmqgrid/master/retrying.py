"""Whether a failed attempt with retries left is retried: the worker's `permanent` mark and the task's own
`retry_on` / `no_retry_on` (docs/architecture.md, "Failures that are not retried")."""
from __future__ import annotations

import random
from typing import NamedTuple


class RetryRule(NamedTuple):
    """A task's lists of error type names; None for a list it did not give."""
    retry_on: frozenset | None
    no_retry_on: frozenset | None


def not_retried(error: dict | None, rule: RetryRule | None) -> str | None:
    """Why an attempt that failed (or timed out) with `error` is not retried, or None when it is (while retries last).

    A name in `retry_on` wins over the worker's mark: the user knows the fleet (a module being rolled out)."""
    kind = error.get("type") if isinstance(error, dict) else None
    if rule is not None and rule.retry_on is not None and kind in rule.retry_on:
        return None
    if isinstance(error, dict) and error.get("permanent") is True:
        return f"{kind} recurs on every attempt"
    if rule is None:
        return None
    if rule.no_retry_on is not None and kind in rule.no_retry_on:
        return f"{kind} is in no_retry_on"
    if rule.retry_on is not None:
        return f"{kind} is not in retry_on"
    return None


class RetryRules:
    """Equal rules shared by the tasks that give the same lists (a batch of calls gives one pair for all of them).
    Bounded as entries.Requirements is: past `most` distinct rules it starts afresh; tasks keep theirs."""

    def __init__(self, most: int = 10_000) -> None:
        self.most = most
        self.known: dict[tuple, RetryRule] = {}

    def of(self, spec: dict) -> RetryRule | None:
        """The rule of a validated spec (or one from the ledger, which may predate these keys); None for none."""
        retry_on, no_retry_on = spec.get("retry_on"), spec.get("no_retry_on")
        if not retry_on and not no_retry_on:
            return None
        key = (tuple(retry_on) if retry_on else None, tuple(no_retry_on) if no_retry_on else None)
        rule = self.known.get(key)
        if rule is None:
            if len(self.known) >= self.most:
                self.known = {}
            rule = self.known[key] = RetryRule(frozenset(retry_on) if retry_on else None,
                                               frozenset(no_retry_on) if no_retry_on else None)
        return rule


def backoff_s(base_s: float, attempt: int, max_s: float) -> float:
    """The wait before retrying after attempt `attempt`: exponential with "equal jitter", so the retries of many
    tasks failing together spread out."""
    return min(max_s, base_s * 2 ** max(0, attempt - 1)) * random.uniform(0.5, 1.0)
