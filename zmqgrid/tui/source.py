"""The dashboard's data seam: a source answers with plain snapshots, from a live master or from fixed data."""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence

import zmq

from ..client import Client, Curve
from ..errors import MasterUnavailable, ZmqgridError
from ..model import FINAL_STATES, TaskState
from ..protocol import Query


@dataclass(frozen=True)
class TaskQuery:
    """Which page of the task list to fetch: filtered on the master by state and device, newest first."""

    state: str | None = None
    device: str | None = None
    offset: int = 0
    limit: int = 100


@dataclass(frozen=True)
class ClusterSnapshot:
    """What the master said at one moment (`at`, wall-clock seconds); `reachable` False when it did not answer."""

    status: dict
    devices: list
    tasks: list
    reachable: bool = True
    error: str = ""
    at: float = 0.0
    query: TaskQuery = field(default_factory=TaskQuery)
    schedules: list = field(default_factory=list)
    projects: list = field(default_factory=list)


@dataclass(frozen=True)
class TaskOutput:
    """New output of a task's latest attempt since the offsets asked for (the whole of it from 0, 0)."""

    task_id: str
    attempt: int
    state: str
    stdout: str = ""
    stderr: str = ""
    stdout_length: int = 0
    stderr_length: int = 0

    @property
    def is_final(self) -> bool:
        return self.state in FINAL_STATES


class Source(Protocol):
    """What the dashboard needs from a cluster. Every method may block; the app calls them from thread workers."""

    master_url: str

    def now(self) -> float: ...
    def snapshot(self, query: TaskQuery) -> ClusterSnapshot: ...
    def task(self, task_id: str) -> dict: ...
    def output(self, task_id: str, stdout_from: int = 0, stderr_from: int = 0) -> TaskOutput: ...
    def cancel(self, task_ids: list[str]) -> dict: ...
    def requeue(self, task_ids: list[str]) -> dict: ...
    def control_devices(self, action: str, device_ids: list[str]) -> dict: ...
    def control_schedule(self, op: str, name: str) -> dict: ...
    def project_versions(self, name: str) -> list[dict]: ...
    def submit(self, spec: dict) -> list[str]: ...


class ClientSource:
    """A live master, seen through `zmqgrid.Client` exactly as a remote user sees it.

    The Client is not thread-safe, so every call opens its own and closes it: calls may come from any thread.
    """

    def __init__(self, master_url: str, timeout_s: float = 2.0, clock: Callable[[], float] = time.time,
                 curve: Curve | None = None) -> None:
        self.master_url = master_url
        self.timeout_s = timeout_s
        self.clock = clock
        self.curve = curve

    def now(self) -> float:
        return self.clock()

    def _client(self) -> Client:
        return Client(self.master_url, timeout_s=self.timeout_s, curve=self.curve)

    def snapshot(self, query: TaskQuery) -> ClusterSnapshot:
        try:
            with self._client() as client:
                status = client.status()
                devices = client.devices()
                tasks = client.tasks(query.state, limit=query.limit, offset=query.offset, device=query.device)
                schedules = client.schedules()
                projects = client.projects()
        except MasterUnavailable as e:
            return ClusterSnapshot({}, [], [], reachable=False, error=e.message, at=self.clock(), query=query)
        except (ZmqgridError, zmq.ZMQError) as e:
            return ClusterSnapshot({}, [], [], reachable=False, error=str(e), at=self.clock(), query=query)
        return ClusterSnapshot(status, devices, tasks, reachable=True, at=self.clock(), query=query,
                               schedules=schedules, projects=projects)

    def task(self, task_id: str) -> dict:
        with self._client() as client:
            return client.task(task_id)

    def output(self, task_id: str, stdout_from: int = 0, stderr_from: int = 0) -> TaskOutput:
        # What Client.follow asks for on each turn: only the output not seen yet.
        with self._client() as client:
            out = client.request(Query, "logs", {"id": task_id, "stdout_from": stdout_from,
                                                 "stderr_from": stderr_from})
        return TaskOutput(task_id, out.get("attempt") or 0, out["state"], out["stdout"], out["stderr"],
                          out["stdout_length"], out["stderr_length"])

    def cancel(self, task_ids: list[str]) -> dict:
        with self._client() as client:
            return client.cancel(task_ids)

    def requeue(self, task_ids: list[str]) -> dict:
        with self._client() as client:
            return client.requeue(task_ids)

    def control_devices(self, action: str, device_ids: list[str]) -> dict:
        with self._client() as client:
            return client.control_devices(action, device_ids)

    def control_schedule(self, op: str, name: str) -> dict:
        """Pause or resume a schedule, as `schedules pause|resume NAME` does; answers the schedule's row."""
        with self._client() as client:
            return client.schedule_pause(name) if op == "pause" else client.schedule_resume(name)

    def project_versions(self, name: str) -> list[dict]:
        """A project's versions, newest first, as `projects show NAME` lists them."""
        with self._client() as client:
            return client.projects(name)

    def submit(self, spec: dict) -> list[str]:
        with self._client() as client:
            return client.submit(spec)


class StaticSource:
    """Fixed cluster data for tests and screenshots: snapshots are served in turn, then the last one again.

    Tasks are filtered and paged from each snapshot's rows as the master would; actions are recorded in
    `actions` and answered as the master answers them.
    """

    def __init__(self, snapshots: Sequence[ClusterSnapshot], tasks: dict[str, dict] | None = None,
                 outputs: dict[str, TaskOutput] | None = None, versions: dict[str, list[dict]] | None = None,
                 master_url: str = "tcp://127.0.0.1:8000",
                 now: float | None = None) -> None:
        self.snapshots = list(snapshots)
        self.served = 0
        self.details = dict(tasks or {})
        self.outputs = dict(outputs or {})
        self.versions = dict(versions or {})
        self.master_url = master_url
        self.frozen_now = now if now is not None else max((s.at for s in self.snapshots), default=0.0)
        self.actions: list[tuple[str, tuple]] = []

    @property
    def exhausted(self) -> bool:
        return self.served >= len(self.snapshots)

    def now(self) -> float:
        return self.frozen_now

    def snapshot(self, query: TaskQuery) -> ClusterSnapshot:
        snap = self.snapshots[min(self.served, len(self.snapshots) - 1)]
        self.served += 1
        rows = [t for t in snap.tasks if (query.state is None or t.get("state") == query.state)
                and (query.device is None or t.get("device_id") == query.device)]
        return dataclasses.replace(snap, tasks=rows[query.offset:query.offset + query.limit], query=query)

    def task(self, task_id: str) -> dict:
        if task_id not in self.details:
            raise ZmqgridError(f"no task {task_id!r}")
        return self.details[task_id]

    def output(self, task_id: str, stdout_from: int = 0, stderr_from: int = 0) -> TaskOutput:
        state = self.details.get(task_id, {}).get("state", TaskState.DONE)
        out = self.outputs.get(task_id) or TaskOutput(task_id, 0, state)
        return dataclasses.replace(out, stdout=out.stdout[stdout_from:], stderr=out.stderr[stderr_from:],
                                   stdout_length=len(out.stdout), stderr_length=len(out.stderr))

    def cancel(self, task_ids: list[str]) -> dict:
        self.actions.append(("cancel", tuple(task_ids)))
        return {i: TaskState.CANCELLED for i in task_ids}

    def requeue(self, task_ids: list[str]) -> dict:
        self.actions.append(("requeue", tuple(task_ids)))
        return {i: TaskState.QUEUED for i in task_ids}

    def control_devices(self, action: str, device_ids: list[str]) -> dict:
        self.actions.append((action, tuple(device_ids)))
        return {i: action for i in device_ids}

    def control_schedule(self, op: str, name: str) -> dict:
        self.actions.append((f"schedule {op}", (name,)))
        return {"name": name, "state": "paused" if op == "pause" else "active"}

    def project_versions(self, name: str) -> list[dict]:
        if name not in self.versions:
            raise ZmqgridError(f"no project {name!r} on the master")
        return self.versions[name]

    def submit(self, spec: dict) -> list[str]:
        self.actions.append(("submit", (spec,)))
        return [spec["id"]]
