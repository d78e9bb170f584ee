"""The targets each benchmark judges its figures by (issue 8's, docs/benchmarks.md's table), and the thresholds
that decide whether a run counts: data, read by the tools' verdicts and reports."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Target:
    key: str            # the figure it judges, as the tool names it in its result
    op: str             # ">=" (at least) or "<=" (at most)
    bound: float
    what: str           # what a person reads
    unit: str = ""      # appended to the bound when shown ("%", " s", " ms", " MB", "x")
    note: str = ""      # how the figure is taken, when the name does not say

    def met(self, value: float | None) -> bool | None:
        if value is None:
            return None
        return value >= self.bound if self.op == ">=" else value <= self.bound

    @property
    def bound_text(self) -> str:
        return f"{'≥' if self.op == '>=' else '≤'} {self.bound:g}{self.unit}"

    @property
    def label(self) -> str:
        return f"{self.what} {self.op} {self.bound:g}{self.unit}" + (f" ({self.note})" if self.note else "")


def by_key(targets: tuple[Target, ...]) -> dict[str, Target]:
    return {t.key: t for t in targets}


# tools/bench.py: zmqgrid / the reference loop in the same run (issue 8, targets 1, 3 and 4).
END_TO_END = (Target("batched_vs_sqlite:100:16", ">=", 1.0, "1: batched throughput", "x"),
              Target("single_vs_sqlite:1:16", ">=", 1.0, "1: single-task throughput", "x"),
              Target("p50_vs_reference", "<=", 1.5, "3: latency p50", "x"),
              Target("p99_vs_reference", "<=", 1.5, "3: latency p99", "x"),
              Target("big_submit_vs_reference_big_submit", ">=", 0.8, "4: big submit rate", "x"))
STEAL_WARN_PCT = 5.0   # machine CPU % the hypervisor took during a phase, above which the ratios do not count

# tools/bench_peers.py: zmqgrid's tasks/s / the peer's (issue 8, target 2).
PEERS = (Target("dramatiq", ">=", 5.0, "zmqgrid tasks/s ÷ Dramatiq's", "x"),
         Target("celery", ">=", 20.0, "zmqgrid tasks/s ÷ Celery's", "x"))

# tools/bench_fleet.py: 1,000 workers on one master (issue 8, target 5).
FLEET = (Target("idle_cpu_pct", "<=", 25.0, "idle master CPU", "%"),
         Target("all_registered_s", "<=", 10.0, "all registered", " s"),
         Target("detection_s", "<=", 3.0, "a killed group offline", " s"),
         Target("requeue_s", "<=", 5.0, "its tasks re-queued", " s"))
HERD_SHARE = 0.10          # more than this share of the fleet registered within one 100 ms: a herd
FLEET_IDLE_BUSY_PCT = 60.0  # the machine counts as quiet enough for the idle measurement at this % busy

# tools/bench_ledger.py: a real master on a 1,000,000-task ledger (issue 8, target 6).
LEDGER = (Target("list_ms", "<=", 50.0, "tasks list", " ms", "worst state-filtered median"),
          Target("rss_mb", "<=", 200.0, "master RSS", " MB"),
          Target("start_s", "<=", 5.0, "start-up (recovery scan)", " s"))

# tools/bench_output.py: quiet tasks beside one printing 100 MB (issue 8, target 7); a share, 0.10 = 10%.
OUTPUT = (Target("slowdown", "<=", 0.10, "quiet tasks slowed down"),)
