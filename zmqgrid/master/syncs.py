"""`projects sync` on the master (docs/architecture.md, Projects, "Sync and what workers hold"): which devices a sync
goes to, the fetches it grants them, and what each worker's project cache holds as its heartbeats say."""
from __future__ import annotations

import logging
from typing import Any

from ..projects.messages import RUNS_PROJECTS_TAG
from ..protocol import packb
from .fleet import Fleet
from .projects import Answer, Projects

logger = logging.getLogger(__name__)
SYNC_GRANT_S = 600.0        # a device may fetch a synced version this long after the sync or its last fetch of it
MAX_GRANTS = 64             # per device: the oldest goes
MAX_LISTED_WORKERS = 4096   # worker entries in one `projects show` answer, all versions together


class Syncs:
    """`sync` sends the command and grants the fetches; `allows` is what Fetches.admit asks; `report` takes each
    heartbeat's cache list; `holders` answers `projects show`."""

    def __init__(self, fleet: Fleet, projects: Projects) -> None:
        self.fleet, self.projects = fleet, projects
        self.grants: dict[str, dict[str, float]] = {}    # device id -> version -> when its grant ends (monotonic)
        self.caches: dict[str, dict[str, tuple]] = {}    # device id -> version -> (copy, env, sync seq, reason)

    # ------------------------------------------------------------ sync

    def sync(self, params: dict, now_mono: float) -> Answer:
        """Send `sync` to every online device that runs projects and has every tag of `params.tags`."""
        name = self.projects.name_of(params.get("name"))
        pinned = self.projects.pin(f"{name}@{params['version']}" if params.get("version") else name)
        version = pinned.partition("@")[2]
        rebuild = params.get("rebuild") is True
        wanted = frozenset({RUNS_PROJECTS_TAG, *(params.get("tags") or ())})
        devices = sorted(d.device_id for d in self.fleet.online()
                         if not d.leaving and d.tags.issuperset(wanted))
        seq = 0
        if devices:
            command = self.fleet.command("sync", {"project": name, "version": version, "rebuild": rebuild}, devices,
                                         now_mono)
            seq = command.seq
            for device_id in devices:
                self.grant(device_id, version, now_mono)
        logger.info("project %s@%s sync%s to %d devices", name, version[:12], " with rebuild" if rebuild else "",
                    len(devices))
        return {"name": name, "version": version, "seq": seq, "workers": devices, "rebuild": rebuild}, False

    def grant(self, device_id: str, version: str, now_mono: float) -> None:
        """Let the device fetch the version for SYNC_GRANT_S (MAX_GRANTS a device: the oldest goes)."""
        mine = self.grants.setdefault(device_id, {})
        mine.pop(version, None)
        mine[version] = now_mono + SYNC_GRANT_S
        while len(mine) > MAX_GRANTS:
            del mine[next(iter(mine))]

    def allows(self, device_id: str, version: str, now_mono: float) -> bool:
        """Whether a sync granted the device this version (and it has not lapsed): the grant is then renewed."""
        mine = self.grants.get(device_id)
        until = mine.get(version) if mine else None
        if until is None:
            return False
        if now_mono > until:
            del mine[version]
            return False
        mine[version] = now_mono + SYNC_GRANT_S
        return True

    # ------------------------------------------------------------ what workers hold

    def report(self, device_id: str, entries: list) -> None:
        """A heartbeat's cache list (checked whole at decode: versions, states, seq and a one-line reason)."""
        if entries:
            self.caches[device_id] = {version: rest for version, *rest in entries}
        elif device_id in self.caches:
            del self.caches[device_id]

    def forget_gone(self) -> None:
        """Drop what devices the fleet no longer has (pruned) reported or were granted."""
        for book in (self.caches, self.grants):
            for device_id in [d for d in book if d not in self.fleet.devices]:
                del book[device_id]

    def holders(self, rows: list[dict], room: int) -> list[dict]:
        """`rows` (versions of a project) each with `workers`: who holds it and in what state, within `room` bytes
        and MAX_LISTED_WORKERS entries in all (`workers_left_out` counts the rest of a row)."""
        self.forget_gone()
        used = sum(len(packb(row)) for row in rows)
        listed = 0
        out = []
        devices = sorted(self.caches)   # once: a row per version, each looked up in every device's report
        for row in rows:
            version, workers, left = row["version"], [], 0
            for device_id in devices:
                held = self.caches[device_id].get(version)
                if held is None:
                    continue
                entry = self._entry(device_id, held)
                cost = len(packb(entry))
                if listed >= MAX_LISTED_WORKERS or used + cost > room:
                    left += 1
                    continue
                workers.append(entry)
                used, listed = used + cost, listed + 1
            out.append(dict(row, workers=workers, workers_left_out=left) if left else dict(row, workers=workers))
        return out

    def _entry(self, device_id: str, held: tuple) -> dict[str, Any]:
        copy, env, seq, reason = held
        device = self.fleet.devices[device_id]
        return {"device_id": device_id, "name": device.info.get("name", device_id), "device": device.state, "copy": copy,
                "env": env, "sync": seq, "reason": reason}

