"""The master's fleet: its devices, their registration, heartbeats and leases, liveness, drain and commands.

The fleet owns the devices; the tasks are the cluster's. When a device loses attempts (it registered again without
them, its heartbeats stopped naming them, it went offline) the fleet says which, as `Lost`, and the board ends
them."""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, NamedTuple

from ..model import DeviceState, TaskState
from ..protocol import Command
from ..store.retention import offline_devices
from ..store.task_store import TaskStore
from .blame import Suspect, before_count, blamed
from .commands import CommandBook
from .entries import DeviceEntry, TaskEntry, requirement
from .turn import Turn

if TYPE_CHECKING:
    from ..alerts.book import Alerts

logger = logging.getLogger(__name__)
PRUNE_DEVICES_PER_PASS = 1000


def raise_fd_limit() -> None:
    """Each worker keeps three connections (three file descriptors) open on the master: a fleet of 1,000 needs over
    3,000, beyond the usual soft limit of 1,024, past which libzmq refuses connections. Raise the soft limit to the
    hard one (the most an unprivileged process may), and say so."""
    try:
        import resource
    except ImportError:   # no such limit to raise (Windows)
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = 1 << 20 if hard == resource.RLIM_INFINITY else hard
    if soft == resource.RLIM_INFINITY or soft >= target:
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        logger.info("open files limit raised from %d to %d (each worker holds 3 connections)", soft, target)
    except (ValueError, OSError) as e:
        logger.warning("open files limit stays %d (about %d workers): cannot raise it to %d: %s", soft, soft // 3,
                       target, e)


class Lost(NamedTuple):
    """An attempt its device no longer runs: `death` is what the device's death is for it (blame.blamed), or None
    when the device did not die (or the task was not running)."""
    entry: TaskEntry
    reason: str
    death: str | None = None


class Fleet:
    """Devices by id, with what an operator drained and the commands they have yet to apply. `tasks` is the
    cluster's map of unfinished tasks, read to judge leases and blame; the fleet never changes a task's state."""

    def __init__(self, store: TaskStore, tasks: dict[str, TaskEntry], turn: Turn, *, device_timeout_s: float,
                 lease_grace_s: float, sample_every: int = 5) -> None:
        self.store = store
        self.tasks = tasks
        self.turn = turn
        self.device_timeout_s = device_timeout_s
        self.lease_grace_s = lease_grace_s
        self.sample_every = sample_every
        self.devices: dict[str, DeviceEntry] = {}
        self.drained: set[str] = set()                # devices an operator drained (kept across restarts)
        self.commands = CommandBook(resend_after_s=lease_grace_s)
        self.alerts: Alerts | None = None   # rules matched when a device goes offline (set by the master)

    def recover(self) -> dict[str, int | None]:
        """Load what the ledger says of devices (drained ones; none is online after a restart); returns the last
        known pid by device id."""
        self.drained = set(self.store.device_ids_with_state(DeviceState.DRAINING))
        for device_id in self.store.device_ids_with_state(DeviceState.ONLINE):
            self.store.set_device_state(device_id, DeviceState.OFFLINE)
        return {d["device_id"]: d["pid"] for d in self.store.list_devices()}

    def holding(self, device_id: str, task_id: str, pid: int | None, now_mono: float) -> None:
        """After a restart, `task_id` is still `device_id`'s: the device stays silent until it registers again
        (liveness gives it device_timeout from now)."""
        device = self.devices.get(device_id)
        if device is None:
            device = self.devices[device_id] = DeviceEntry(device_id, device_id.encode(), last_seen=now_mono,
                                                           info={"pid": pid})
        device.inflight.add(task_id)

    def ready(self) -> list[DeviceEntry]:
        """Registered online devices with credit: those a task may be dispatched to now."""
        return [d for d in self.devices.values() if d.registered and d.state == DeviceState.ONLINE and d.credit > 0]

    def online(self) -> list[DeviceEntry]:
        return [d for d in self.devices.values() if d.registered and d.state == DeviceState.ONLINE]

    def fan_out(self, spec: dict) -> list[dict]:
        """A task for all matching workers becomes one task per matching online worker, in one group. Each runs once
        unless the spec asks for retries: an ad-hoc command's failure is reported, not run again behind its user."""
        if not spec.get("all"):
            return [spec]
        need = requirement(spec["kind"], None, spec.get("tags"), spec.get("project"), spec.get("python_env"))
        targets = sorted(d.device_id for d in self.online() if need.met_by(d))
        retries = 0 if spec.get("retries") is None else spec["retries"]
        return [dict(spec, id=f"{spec['id']}.{n}", device=device_id, all=False, group=spec["id"], retries=retries,
                     name=f"{spec['name']} @{device_id}") for n, device_id in enumerate(targets, 1)]

    def register(self, identity: bytes, info: dict, credit: int, reported: set, running: list, now_mono: float,
                 now: float) -> tuple[list[Lost], list]:
        """A worker (re-)registers: returns the attempts it lost (held here, not reported by it) and the
        [task id, attempt] pairs it runs that are no longer its own."""
        device_id = info["device_id"]
        device = self.devices.get(device_id)
        if device is None:
            device = self.devices[device_id] = DeviceEntry(device_id, identity)
        # A new process behind the same device id means the old one died, with whatever it was running.
        restarted = device.info.get("pid") not in (None, info["pid"])
        new_process = device.info.get("pid") != info["pid"]
        device.identity, device.registered, device.leaving = identity, True, False
        device.state = DeviceState.DRAINING if device_id in self.drained else DeviceState.ONLINE
        device.credit, device.concurrency = max(0, credit), max(1, info["concurrency"])
        device.weight = info.get("weight", 1.0)
        device.tags, device.last_seen, device.info = frozenset(info["tags"]), now_mono, info
        suspects = self.suspects(device) if restarted else {}
        why = "restarted (new pid) without it" if restarted else "registered again without it"
        lost = [Lost(entry, f"device {device_id} {why}", suspects.get(entry.id))
                for entry in self._release(device, lambda e: (e.id, e.attempt) not in reported)]
        disowned = []
        for task_id, attempt in running:
            entry = self.tasks.get(task_id)
            if entry is None or entry.attempt != attempt or entry.device_id != device_id:
                disowned.append([task_id, attempt])
        self.store.upsert_device(info, now, len(device.inflight), device.state)
        if new_process:
            # It knows none of this incarnation's commands: whatever it still lacks goes again, after the ack.
            self.commands.forget(device_id, "cancel")   # the old process's attempts are gone with it
            pending = self.commands.restarted(device_id)
            if device.state == DeviceState.DRAINING and not any(c.action in ("drain", "shutdown") for c in pending):
                pending.append(self.commands.issue("shutdown" if device.shutdown else "drain", {}, [device_id],
                                                   now_mono))
            for command in pending:
                self.turn.send(identity, command.encode())
        logger.info("registered device=%s host=%s concurrency=%d credit=%d tags=%s reported=%d disowned=%d",
                    device_id, info["hostname"], device.concurrency, device.credit, ",".join(info["tags"]) or "-",
                    len(reported), len(disowned))
        return lost, disowned

    def _release(self, device: DeviceEntry, which) -> list[TaskEntry]:
        """Take the attempts `which` selects off the device (the board ends them)."""
        released = [self.tasks[task_id] for task_id in list(device.inflight) if which(self.tasks[task_id])]
        for entry in released:
            device.inflight.discard(entry.id)
        return released

    def heartbeat(self, device: DeviceEntry, running: list, held: list, metrics: dict, sent_at: float,
                  commands: list, now_mono: float, now: float, spacing_s: float = 0.0) -> list[Lost]:
        """Returns the attempts whose lease ended. `spacing_s`: a heartbeat handled less than this after the
        device's previous one does not judge leases."""
        # After a long loop turn (a big submit, a slow disk) the PULL holds a backlog: several heartbeats per device,
        # all sent before that turn's tasks could reach the workers. Drained in a burst, they would count as misses
        # in a row and end every attempt the turn dispatched. Only a heartbeat handled at its own pace is evidence.
        paced = now_mono - device.beat_mono >= spacing_s
        device.beat_mono = device.last_seen = now_mono
        # Shown only (devices list): a skewed wall clock on a worker never decides anything here.
        device.metrics = dict(metrics, clock_offset_s=round(sent_at - now, 3))
        device.heartbeats += 1
        for command in self.commands.applied(device.device_id, commands, now_mono):
            self.turn.send(device.identity, command.encode())
        lost = self.check_leases(device, set(running) | set(held), now_mono, paced) \
            if device.inflight else []
        # The live view (devices list, liveness) is in memory. The ledger's devices row (last seen, metrics, running:
        # what a reader of the file or a restarted master sees) and a metrics sample are written every sample_every-th
        # heartbeat only: with a big fleet a row per heartbeat is a JSON encoding and an UPDATE per worker a second, and a
        # transaction in nearly every loop turn of an idle master.
        if device.heartbeats % self.sample_every == 1:
            self.store.device_seen(device.device_id, now, device.metrics, len(device.inflight))
            if metrics.get("cpu_percent") is not None:
                self.store.sample_heartbeat(device.device_id, now, metrics, len(device.inflight))
        return lost

    def check_leases(self, device: DeviceEntry, named: set, now_mono: float, judge: bool = True) -> list[Lost]:
        """A task belongs to a worker while its heartbeats name it; two heartbeats without it end the attempt."""
        def expired(entry: TaskEntry) -> bool:
            if (entry.id, entry.attempt) in named:
                entry.misses = 0
            elif judge and now_mono - entry.assigned_mono > self.lease_grace_s:
                entry.misses += 1
                return entry.misses >= 2
            return False
        reason = f"heartbeats of {device.device_id} stopped naming it"
        return [Lost(entry, reason) for entry in self._release(device, expired)]

    def mark_offline(self, device: DeviceEntry, reason: str, now: float, died: bool = True) -> list[Lost]:
        """Returns the attempts the device held. `died`: the worker went away (silent, unreachable), so its running
        tasks' losses are worker deaths; not when it was cut off alive (its key revoked)."""
        if device.state == DeviceState.OFFLINE and not device.inflight:
            return []
        logger.info("device offline device=%s reason=%s requeue=%d", device.device_id, reason, len(device.inflight))
        if self.alerts is not None and device.state != DeviceState.OFFLINE:   # staged beside its state change
            self.alerts.device_event("offline", device.device_id, device.info, device.tags, reason, now)
        device.state, device.registered, device.credit = DeviceState.OFFLINE, False, 0
        self.store.set_device_state(device.device_id, DeviceState.OFFLINE)
        suspects = self.suspects(device) if died else {}
        return [Lost(entry, reason, suspects.get(entry.id)) for entry in self._release(device, lambda e: True)]

    def suspects(self, device: DeviceEntry) -> dict[str, str]:
        """What a dead worker's death is for each task it was running (blame.blamed): counted for those it started
        last; for one started before them, noted the first time and counted from the second, so a poison task does
        not drag the tasks beside it into quarantine with it, and one that kills its worker late is still caught."""
        entries = (self.tasks[t] for t in device.inflight)
        return blamed([Suspect(e.id, e.started_at, before_count(e.evidence))
                       for e in entries if e.state == TaskState.RUNNING and not e.cancel_requested])

    def check_liveness(self, now_mono: float, now: float) -> list[Lost]:
        """Judged on the master's monotonic clock only: a worker's own clock never marks it offline."""
        lost: list[Lost] = []
        for device in self.devices.values():
            silent = now_mono - device.last_seen
            if device.state != DeviceState.OFFLINE and silent > self.device_timeout_s:
                lost += self.mark_offline(device, f"no heartbeat for {silent:.1f}s", now)
        return lost

    def prune_offline(self, now: float, retention_s: float, limit: int = PRUNE_DEVICES_PER_PASS) -> int:
        """Forget devices offline for more than `retention_s` that hold nothing: no unfinished task (assigned to or
        pinned on them), not drained by an operator. Their rows and samples go with this turn's commit; a device
        that registers again later is simply new. Raises StoreError if the ledger cannot be read."""
        pruned = []
        for device_id in offline_devices(self.store.db, now - retention_s, limit):
            device = self.devices.get(device_id)
            if device_id in self.drained or (device is not None and (device.state != DeviceState.OFFLINE or device.inflight)):
                continue
            self.devices.pop(device_id, None)
            self.commands.pending.pop(device_id, None)
            self.store.remove_device(device_id)
            pruned.append(device_id)
        if pruned:
            logger.info("removed %d devices offline for more than %.0f s with nothing on them (%s%s)", len(pruned),
                        retention_s, ", ".join(pruned[:5]), ", ..." if len(pruned) > 5 else "")
        return len(pruned)

    # ------------------------------------------------------------ operator commands

    def command(self, action: str, params: dict, device_ids: list[str], now_mono: float) -> Command:
        """Issue a command to devices: published on each device's topic now, re-sent until applied."""
        command = self.commands.issue(action, params, device_ids, now_mono)
        for device_id in device_ids:
            self.turn.publish(f"device.{device_id}".encode(), command.encode())
        return command

    def control_device(self, action: str, device_id: str, now_mono: float) -> str:
        """drain (finish what it has, take nothing new), resume, shutdown (drain, then exit), or reload (the
        worker re-reads its config file and registers again with its new concurrency and tags)."""
        device = self.devices.get(device_id)
        known = device is not None or device_id in self.drained or self.store.has_device(device_id)
        if not known:
            return "not found"
        if action == "resume":
            self.drained.discard(device_id)
            self.commands.forget(device_id, "drain")
            self.commands.forget(device_id, "shutdown")
            if device is not None:
                device.shutdown = False
                if device.state == DeviceState.DRAINING:
                    device.state = DeviceState.ONLINE
            self.store.set_device_state(device_id, device.state if device else DeviceState.OFFLINE)
            self.command("resume", {}, [device_id], now_mono)
            return device.state if device else DeviceState.OFFLINE
        if action == "reload":
            if device is None or not device.registered:
                return DeviceState.OFFLINE
            self.command("reload", {}, [device_id], now_mono)
            return "reloading"
        if device is None or not device.registered:
            if action == "shutdown":
                return DeviceState.OFFLINE
            self.drained.add(device_id)   # applied when it registers again
            self.store.set_device_state(device_id, DeviceState.DRAINING)
            return "draining when it returns"
        self.drained.add(device_id)
        device.state, device.shutdown = DeviceState.DRAINING, action == "shutdown"
        self.store.set_device_state(device_id, DeviceState.DRAINING)
        self.command(action, {}, [device_id], now_mono)
        return "shutting down" if action == "shutdown" else DeviceState.DRAINING
