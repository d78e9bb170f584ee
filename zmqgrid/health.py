"""Whether a cluster is healthy, judged from the master's `status`: what `distribute --status` and `/readyz` say."""
from __future__ import annotations

from .model import DeviceState


def judge(report: dict) -> list[str]:
    """The problems of a master's `status` answer, in words; none means healthy."""
    devices = report.get("devices") or {}
    online = devices.get(DeviceState.ONLINE, 0) + devices.get(DeviceState.DRAINING, 0)
    stuck = report.get("stuck_tasks") or 0
    return (["no worker online"] if not online else []) + \
        ([f"{stuck} queued task(s) no online worker can take"] if stuck else [])


def assess(report: dict, master_url: str) -> dict:
    """`report` with `state` (healthy|degraded), `problems` and `master`: the body of `distribute --status --json`."""
    problems = judge(report)
    return {**report, "state": "degraded" if problems else "healthy", "problems": problems, "master": master_url}
