"""Device events of the master: register, heartbeats and leases, liveness, drain."""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ..protocol import Command
from ..store.retention import offline_devices
from .blame import Suspect, before_count, blamed
from .entries import DeviceEntry

if TYPE_CHECKING:
    from .cluster import Cluster

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


class FleetEvents:
    """Mixed into Cluster: what happens when devices come, speak, fall silent or are drained."""

    def register(self: Cluster, identity: bytes, info: dict, credit: int, reported: set, running: list,
                 now_mono: float, now: float) -> list:
        """A worker (re-)registers; returns the [task id, attempt] pairs it runs that are no longer its own."""
        device_id = info["device_id"]
        device = self.devices.get(device_id)
        if device is None:
            device = self.devices[device_id] = DeviceEntry(device_id, identity)
        # A new process behind the same device id means the old one died, with whatever it was running.
        restarted = device.info.get("pid") not in (None, info["pid"])
        new_process = device.info.get("pid") != info["pid"]
        device.identity, device.registered = identity, True
        device.state = "draining" if device_id in self.drained else "online"
        device.credit, device.concurrency = max(0, credit), max(1, info["concurrency"])
        device.weight = info.get("weight", 1.0)
        device.tags, device.last_seen, device.info = frozenset(info["tags"]), now_mono, info
        suspects = self.suspects(device) if restarted else {}
        for task_id in list(device.inflight):
            entry = self.tasks[task_id]
            if (task_id, entry.attempt) not in reported:
                why = "restarted (new pid) without it" if restarted else "registered again without it"
                self.lose_attempt(entry, f"device {device_id} {why}", now, death=suspects.get(task_id))
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
            if device.state == "draining" and not any(c.action in ("drain", "shutdown") for c in pending):
                pending.append(self.commands.issue("shutdown" if device.shutdown else "drain", {}, [device_id],
                                                   now_mono))
            self.sends.extend((identity, c.encode(), None) for c in pending)
        logger.info("registered device=%s host=%s concurrency=%d credit=%d tags=%s reported=%d disowned=%d",
                    device_id, info["hostname"], device.concurrency, device.credit, ",".join(info["tags"]) or "-",
                    len(reported), len(disowned))
        return disowned

    def heartbeat(self: Cluster, device: DeviceEntry, running: list, held: list, metrics: dict, sent_at: float,
                  commands: list, now_mono: float, now: float, spacing_s: float = 0.0) -> None:
        """`spacing_s`: a heartbeat handled less than this after the device's previous one does not judge leases."""
        # After a long loop turn (a big submit, a slow disk) the PULL holds a backlog: several heartbeats per device,
        # all sent before that turn's tasks could reach the workers. Drained in a burst, they would count as misses
        # in a row and end every attempt the turn dispatched. Only a heartbeat handled at its own pace is evidence.
        paced = now_mono - device.beat_mono >= spacing_s
        device.beat_mono = device.last_seen = now_mono
        # Shown only (devices list): a skewed wall clock on a worker never decides anything here.
        device.metrics = dict(metrics, clock_offset_s=round(sent_at - now, 3))
        device.heartbeats += 1
        for command in self.commands.applied(device.device_id, commands, now_mono):
            self.sends.append((device.identity, command.encode(), None))
        if running:
            self.mark_started(device, running, now, save=True)
        if device.inflight:
            self.check_leases(device, set(map(tuple, running)) | set(map(tuple, held)), now_mono, now, paced)
        # The live view (devices list, liveness) is in memory. The ledger's devices row (last seen, metrics, running:
        # what a reader of the file or a restarted master sees) and a metrics sample are written every sample_every-th
        # heartbeat only: with a big fleet a row per heartbeat is a JSON encoding and an UPDATE per worker a second, and a
        # transaction in nearly every loop turn of an idle master.
        if device.heartbeats % self.sample_every == 1:
            self.store.device_seen(device.device_id, now, device.metrics, len(device.inflight))
            if metrics.get("cpu_percent") is not None:
                self.store.sample_heartbeat(device.device_id, now, metrics, len(device.inflight))

    def mark_started(self: Cluster, device: DeviceEntry, started: list, now: float, save: bool = False) -> None:
        """Running at once in memory; in the ledger only from a heartbeat (`save`), so a short task never
        costs the write: its row goes from assigned to its outcome, with started_at from the result."""
        for task_id, attempt in started:
            entry = self.tasks.get(task_id)
            if entry is None or entry.attempt != attempt or entry.device_id != device.device_id:
                continue
            if entry.state == "assigned":
                entry.state, entry.started_at = "running", now
            if save and entry.state == "running" and not entry.running_saved:
                entry.running_saved = True
                self.store.mark_running(task_id, attempt, entry.started_at or now, now)

    def check_leases(self: Cluster, device: DeviceEntry, named: set, now_mono: float, now: float,
                     judge: bool = True) -> None:
        """A task belongs to a worker while its heartbeats name it; two heartbeats without it end the attempt."""
        for task_id in list(device.inflight):
            entry = self.tasks[task_id]
            if (task_id, entry.attempt) in named:
                entry.misses = 0
            elif judge and now_mono - entry.assigned_mono > self.lease_grace_s:
                entry.misses += 1
                if entry.misses >= 2:
                    self.lose_attempt(entry, f"heartbeats of {device.device_id} stopped naming it", now)

    def mark_offline(self: Cluster, device: DeviceEntry, reason: str, now: float, died: bool = True) -> None:
        """`died`: the worker went away (silent, unreachable), so its running tasks' losses are worker deaths; not
        when it was cut off alive (its key revoked)."""
        if device.state == "offline" and not device.inflight:
            return
        logger.info("device offline device=%s reason=%s requeue=%d", device.device_id, reason, len(device.inflight))
        device.state, device.registered, device.credit = "offline", False, 0
        self.store.set_device_state(device.device_id, "offline")
        suspects = self.suspects(device) if died else {}
        for task_id in list(device.inflight):
            self.lose_attempt(self.tasks[task_id], reason, now, death=suspects.get(task_id))

    def suspects(self: Cluster, device: DeviceEntry) -> dict[str, str]:
        """What a dead worker's death is for each task it was running (blame.blamed): counted for those it started
        last; for one started before them, noted the first time and counted from the second, so a poison task does
        not drag the tasks beside it into quarantine with it, and one that kills its worker late is still caught."""
        entries = (self.tasks[t] for t in device.inflight)
        return blamed([Suspect(e.id, e.started_at, before_count(e.evidence))
                       for e in entries if e.state == "running" and not e.cancel_requested])

    def check_liveness(self: Cluster, now_mono: float, now: float) -> None:
        """Judged on the master's monotonic clock only: a worker's own clock never marks it offline."""
        for device in self.devices.values():
            silent = now_mono - device.last_seen
            if device.state != "offline" and silent > self.device_timeout_s:
                self.mark_offline(device, f"no heartbeat for {silent:.1f}s", now)

    def prune_offline(self: Cluster, now: float, retention_s: float, limit: int = PRUNE_DEVICES_PER_PASS) -> int:
        """Forget devices offline for more than `retention_s` that hold nothing: no unfinished task (assigned to or
        pinned on them), not drained by an operator. Their rows and samples go with this turn's commit; a device
        that registers again later is simply new. Raises StoreError if the ledger cannot be read."""
        pruned = []
        for device_id in offline_devices(self.store.db, now - retention_s, limit):
            device = self.devices.get(device_id)
            if device_id in self.drained or (device is not None and (device.state != "offline" or device.inflight)):
                continue
            self.devices.pop(device_id, None)
            self.commands.pending.pop(device_id, None)
            self.store.remove_device(device_id)
            pruned.append(device_id)
        if pruned:
            logger.info("removed %d devices offline for more than %.0f s with nothing on them (%s%s)", len(pruned),
                        retention_s, ", ".join(pruned[:5]), ", ..." if len(pruned) > 5 else "")
        return len(pruned)

    def dispatch_failed(self: Cluster, device_id: str, now: float) -> None:
        """The ROUTER could not reach the worker: its attempts are lost, and it is offline until it registers."""
        device = self.devices.get(device_id)
        if device is not None:
            self.mark_offline(device, "unreachable on the ROUTER", now)

    # ------------------------------------------------------------ operator commands

    def command(self: Cluster, action: str, params: dict, device_ids: list[str], now_mono: float) -> Command:
        """Issue a command to devices: published on each device's topic now, re-sent until applied."""
        command = self.commands.issue(action, params, device_ids, now_mono)
        for device_id in device_ids:
            self.publishes.append((f"device.{device_id}".encode(), command.encode()))
        return command

    def control_device(self: Cluster, action: str, device_id: str, now_mono: float) -> str:
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
                if device.state == "draining":
                    device.state = "online"
            self.store.set_device_state(device_id, device.state if device else "offline")
            self.command("resume", {}, [device_id], now_mono)
            return device.state if device else "offline"
        if action == "reload":
            if device is None or not device.registered:
                return "offline"
            self.command("reload", {}, [device_id], now_mono)
            return "reloading"
        if device is None or not device.registered:
            if action == "shutdown":
                return "offline"
            self.drained.add(device_id)   # applied when it registers again
            self.store.set_device_state(device_id, "draining")
            return "draining when it returns"
        self.drained.add(device_id)
        device.state, device.shutdown = "draining", action == "shutdown"
        self.store.set_device_state(device_id, "draining")
        self.command(action, {}, [device_id], now_mono)
        return "shutting down" if action == "shutdown" else "draining"
