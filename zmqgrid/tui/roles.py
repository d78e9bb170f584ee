"""A dashboard limited to a role: the browser dashboard of a `read` or `client` token refuses what its role may not do."""
from __future__ import annotations

from ..errors import ZmqgridError
from .source import ClusterSnapshot, Source, TaskOutput, TaskQuery

ROLES = ("read", "client", "admin")
"""As the gateway's token roles: read < client (submit) < admin (cancel, requeue, drain, resume, shutdown, schedules)."""


class RoleRefused(ZmqgridError):
    """Raised when the dashboard's role may not do an action; the dashboard shows it as the action's failure."""

    code = "forbidden"


class LimitedSource:
    """A Source that answers every read and refuses, before anything is sent, the actions above `role`.

    The dashboard asks for every action through its source, whichever screen or key started it, so this one
    place bounds them all. The master's own check on the key still follows for the actions that pass.
    """

    def __init__(self, source: Source, role: str) -> None:
        if role not in ROLES:
            raise ValueError(f"role {role!r} is not one of {', '.join(ROLES)}")
        self.source = source
        self.role = role
        self.master_url = source.master_url

    def _allow(self, what: str, needs: str) -> None:
        if ROLES.index(self.role) < ROLES.index(needs):
            raise RoleRefused(f"refused: {what} needs an {needs} token; this dashboard's token is {self.role}",
                              f"sign in with an {needs} token (python main.py http tokens create NAME --role {needs})")

    def now(self) -> float:
        return self.source.now()

    def snapshot(self, query: TaskQuery) -> ClusterSnapshot:
        return self.source.snapshot(query)

    def task(self, task_id: str) -> dict:
        return self.source.task(task_id)

    def output(self, task_id: str, stdout_from: int = 0, stderr_from: int = 0) -> TaskOutput:
        return self.source.output(task_id, stdout_from, stderr_from)

    def project_versions(self, name: str) -> list[dict]:
        return self.source.project_versions(name)

    def cancel(self, task_ids: list[str]) -> dict:
        self._allow("cancel", "admin")
        return self.source.cancel(task_ids)

    def requeue(self, task_ids: list[str]) -> dict:
        self._allow("requeue", "admin")
        return self.source.requeue(task_ids)

    def control_devices(self, action: str, device_ids: list[str]) -> dict:
        self._allow(action, "admin")
        return self.source.control_devices(action, device_ids)

    def control_schedule(self, op: str, name: str) -> dict:
        self._allow(f"schedule {op}", "admin")
        return self.source.control_schedule(op, name)

    def submit(self, spec: dict) -> list[str]:
        self._allow("submit", "client")
        return self.source.submit(spec)
