"""The master's poll: for a moment after task traffic it polls awake instead of sleeping, within a CPU budget.

A process woken from sleep starts later than one that is running: on the 2-vCPU machines measured, a round trip
(submit -> result) took 0.95-0.99 ms with a master that slept between messages and 0.79-0.84 ms with one that
polled awake for 0.8 ms after each turn that read the ROUTER or dispatched (docs/benchmarks.md, "Throughput and latency").
The answer to what a turn sent, a worker's result or a client's next Submit, usually comes within that moment.

Spinning must not cost a core when messages come just too far apart for it to pay (a big fleet sending a result
a millisecond): the CPU time spent awake is drawn from a budget that refills at `share` of the wall clock, so the
spin costs at most that share of a core over time. Between polls the spinner yields the CPU, so a worker or a
python child woken on its core runs at once; the CPU given away so is not counted against the budget.
"""
from __future__ import annotations

import os
import time

import zmq

SPIN_S = 0.0008          # how long after a busy turn the loop stays awake (the default of config awake_poll_us)
SPIN_SHARE = 0.5         # at most this share of one core is spent awake without work, over time
SPIN_BURST_S = 0.05      # the budget's cap in CPU seconds: a quiet spell buys at most this much

_yield = getattr(os, "sched_yield", lambda: None)


class AwakePoller:
    """`poll(wait_ms)` as zmq.Poller's (as a dict); `after_turn(busy)` says whether the turn just ended moved tasks."""

    def __init__(self, poller: zmq.Poller, spin_s: float = SPIN_S, share: float = SPIN_SHARE,
                 burst_s: float = SPIN_BURST_S) -> None:
        self.poller = poller
        self.spin_s, self.share, self.burst_s = spin_s, share, burst_s
        self.budget = burst_s
        self.until = 0.0
        self.last = time.monotonic()
        self.spent = 0.0          # CPU seconds spent polling awake, in all (for tests and diagnostics)

    def after_turn(self, busy: bool) -> None:
        self.until = time.monotonic() + self.spin_s if busy and self.spin_s > 0 else 0.0

    def poll(self, wait_ms: float) -> dict:
        now = time.monotonic()
        self.budget = min(self.burst_s, self.budget + (now - self.last) * self.share)
        self.last = now
        until = min(self.until, now + self.budget, now + wait_ms / 1000)
        if now < until:
            start, cpu = now, time.thread_time()
            while now < until:
                events = self.poller.poll(0)
                if events:
                    self._spend(time.thread_time() - cpu)
                    return dict(events)
                _yield()
                now = time.monotonic()
            self._spend(time.thread_time() - cpu)
            wait_ms = max(0.0, wait_ms - (now - start) * 1000)
        return dict(self.poller.poll(wait_ms))

    def _spend(self, cpu_s: float) -> None:
        self.budget -= cpu_s
        self.spent += cpu_s
