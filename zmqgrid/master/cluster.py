"""The master's in-memory view of tasks and devices, and every state transition (staged to the ledger)."""
from __future__ import annotations

import heapq
import logging
import random
import time
from dataclasses import dataclass, field

from ..model import ACTIVE_STATES
from ..protocol import Finished, Kill, Tasks
from ..store.task_store import TaskStore
from .scheduling import Strategy

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class TaskEntry:
    """A task that is not final yet (queued, assigned or running). Final tasks live only in the ledger."""
    id: str
    spec: dict
    priority: int
    retries: int
    timeout_s: float | None
    attempt: int = 0
    state: str = "queued"
    device_id: str | None = None
    seq: int = 0
    notify: set = field(default_factory=set)
    cancel_requested: bool = False
    assigned_mono: float = 0.0    # when dispatched (monotonic): the lease is judged only after a grace period
    misses: int = 0               # consecutive heartbeats of its worker that did not name it
    deaths: int = 0               # times its worker died while running it
    evidence: list = field(default_factory=list)


@dataclass(slots=True)
class DeviceEntry:
    device_id: str
    identity: bytes
    state: str = "online"
    registered: bool = False      # registered with this incarnation: only then does it get tasks
    credit: int = 0
    concurrency: int = 1
    tags: frozenset = frozenset()
    last_seen: float = 0.0        # master's monotonic clock
    inflight: set = field(default_factory=set)
    info: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    heartbeats: int = 0


class Cluster:
    """Tasks, devices and the queue. Methods stage ledger writes and queue frames in `sends`."""

    def __init__(self, store: TaskStore, *, incarnation: str, strategy: Strategy, default_retries: int,
                 default_timeout_s: float | None, device_timeout_s: float, lease_grace_s: float = 2.0,
                 retry_backoff_s: float = 1.0, retry_backoff_max_s: float = 60.0, quarantine_after: int = 3,
                 sample_every: int = 5) -> None:
        self.store = store
        self.incarnation = incarnation
        self.strategy = strategy
        self.default_retries = default_retries
        self.default_timeout_s = default_timeout_s
        self.device_timeout_s = device_timeout_s
        self.lease_grace_s = lease_grace_s
        self.retry_backoff_s, self.retry_backoff_max_s = retry_backoff_s, retry_backoff_max_s
        self.quarantine_after = quarantine_after
        self.sample_every = sample_every
        self.tasks: dict[str, TaskEntry] = {}
        self.devices: dict[str, DeviceEntry] = {}
        self.queue: list[tuple[int, int, str]] = []   # (-priority, seq, task id); stale entries skipped lazily
        self.delayed: list[tuple[float, int, str]] = []  # (monotonic time it may run, seq, task id): retry backoff
        self.seq = 0
        # (identity, frames, dispatched task ids or None): sent after the turn's commit
        self.sends: list[tuple[bytes, list[bytes], list[str] | None]] = []
        self.counters = {"submitted": 0, "dispatched": 0, "results": 0, "stale_results": 0, "requeued": 0,
                         "lost_attempts": 0, "quarantined": 0}

    # ------------------------------------------------------------ recovery

    def recover(self, now_mono: float, now: float) -> None:
        """Load unfinished tasks; keep assigned/running ones with their device until it re-registers or times out."""
        for device_id in self.store.device_ids_with_state("online") + self.store.device_ids_with_state("draining"):
            self.store.set_device_state(device_id, "offline")
        pids = {d["device_id"]: d["pid"] for d in self.store.list_devices()}
        for row in self.store.load_unfinished():
            entry = TaskEntry(row["id"], row["spec"], row["priority"], row["retries"], row["timeout_s"],
                              attempt=row["attempt"], deaths=row["deaths"] or 0, evidence=row["evidence"])
            self.tasks[entry.id] = entry
            if row["state"] == "queued" or not row["device_id"]:
                self._enqueue(entry, max(0.0, (row["not_before"] or 0) - now), now_mono)
                continue
            entry.state, entry.device_id = row["state"], row["device_id"]
            device = self.devices.get(row["device_id"])
            if device is None:
                # Silent until it registers again; liveness gives it device_timeout from now.
                device = self.devices[row["device_id"]] = DeviceEntry(row["device_id"], row["device_id"].encode(),
                                                                      last_seen=now_mono,
                                                                      info={"pid": pids.get(row["device_id"])})
            device.inflight.add(entry.id)
        logger.info("recovered %d unfinished tasks (%d queued) from %s", len(self.tasks), len(self.queue),
                    self.store.path)

    # ------------------------------------------------------------ submit and dispatch

    def submit(self, specs: list[dict], client: bytes, notify: bool, now: float) -> list[str]:
        ids = [s["id"] for s in specs]
        known = {i for i in ids if i in self.tasks}
        known |= self.store.existing_ids([i for i in ids if i not in known])
        for spec in specs:
            if spec["id"] in known:
                continue  # a re-sent submission: the first one already holds this id
            known.add(spec["id"])
            retries = self.default_retries if spec["retries"] is None else spec["retries"]
            timeout_s = self.default_timeout_s if spec["timeout"] is None else spec["timeout"]
            self.store.insert_task(spec, retries, timeout_s, now)
            entry = TaskEntry(spec["id"], spec, spec["priority"], retries, timeout_s)
            if notify:
                entry.notify.add(client)
            self.tasks[entry.id] = entry
            self._enqueue(entry)
            self.counters["submitted"] += 1
        return ids

    def _enqueue(self, entry: TaskEntry, delay_s: float = 0.0, now_mono: float = 0.0) -> None:
        self.seq += 1
        entry.seq, entry.state, entry.device_id, entry.misses = self.seq, "queued", None, 0
        if delay_s > 0:
            heapq.heappush(self.delayed, (now_mono + delay_s, self.seq, entry.id))
        else:
            heapq.heappush(self.queue, (-entry.priority, self.seq, entry.id))

    def release_delayed(self, now_mono: float) -> None:
        """Retries whose backoff has passed join the queue."""
        while self.delayed and self.delayed[0][0] <= now_mono:
            _, seq, task_id = heapq.heappop(self.delayed)
            entry = self.tasks.get(task_id)
            if entry is not None and entry.state == "queued" and entry.seq == seq:
                heapq.heappush(self.queue, (-entry.priority, seq, task_id))

    def backoff_s(self, entry: TaskEntry) -> float:
        base = entry.spec.get("retry_backoff")
        base = self.retry_backoff_s if base is None else base
        # Exponential with "equal jitter": retries of many tasks failing together spread out.
        return min(self.retry_backoff_max_s, base * 2 ** max(0, entry.attempt - 1)) * random.uniform(0.5, 1.0)

    @staticmethod
    def can_take(device: DeviceEntry, spec: dict) -> bool:
        wanted = spec.get("device")
        if wanted and wanted != device.device_id:
            return False
        tags = spec.get("tags")
        return not tags or device.tags.issuperset(tags)

    def dispatch(self, now: float, now_mono: float) -> None:
        """Hand queued tasks to registered online workers, never beyond their credit."""
        self.release_delayed(now_mono)
        ready = [d for d in self.devices.values() if d.registered and d.state == "online" and d.credit > 0]
        if not ready or not self.queue:
            return
        batches: dict[str, list[dict]] = {}
        skipped = []
        while self.queue and ready:
            item = heapq.heappop(self.queue)
            entry = self.tasks.get(item[2])
            if entry is None or entry.state != "queued" or entry.seq != item[1]:
                continue
            eligible = [d for d in ready if self.can_take(d, entry.spec)]
            if not eligible:
                skipped.append(item)
                if len(skipped) >= 10_000:
                    break
                continue
            device = eligible[0] if len(eligible) == 1 else eligible[self.strategy(
                [(len(d.inflight), d.credit, float(d.concurrency)) for d in eligible])]
            entry.attempt += 1
            entry.state, entry.device_id, entry.assigned_mono = "assigned", device.device_id, now_mono
            device.credit -= 1
            device.inflight.add(entry.id)
            if device.credit <= 0:
                ready.remove(device)
            self.store.assign(entry.id, entry.attempt, device.device_id, now)
            batches.setdefault(device.device_id, []).append(
                dict(entry.spec, attempt=entry.attempt, timeout=entry.timeout_s))
            self.counters["dispatched"] += 1
        for item in skipped:
            heapq.heappush(self.queue, item)
        for device_id, tasks in batches.items():
            self.sends.append((self.devices[device_id].identity, Tasks(tasks).encode(), [t["id"] for t in tasks]))

    # ------------------------------------------------------------ results and endings

    def record_result(self, device: DeviceEntry, result: dict, now: float) -> None:
        task_id, attempt = result["id"], result["attempt"]
        entry = self.tasks.get(task_id)
        if (entry is None or entry.attempt != attempt or entry.device_id != device.device_id
                or entry.state not in ACTIVE_STATES):
            # Fenced: a late or duplicate result. Acked (so the worker drops it), kept on its attempt row only.
            self.store.record_stale(task_id, attempt, result.get("exit_code"), result.get("error"))
            self.counters["stale_results"] += 1
            logger.debug("stale result task=%s attempt=%d from %s", task_id, attempt, device.device_id)
            return
        self.counters["results"] += 1
        device.inflight.discard(task_id)
        state = result["state"]
        self.store.end_attempt(task_id, attempt, state, now, started_at=result.get("started_at"),
                               exit_code=result.get("exit_code"), error=result.get("error"),
                               stdout=result.get("stdout") or "", stderr=result.get("stderr") or "")
        if state == "done" or (state == "cancelled" and entry.cancel_requested):
            self.finish(entry, state, now, result=result)
        elif entry.attempt <= entry.retries and not entry.cancel_requested:
            self.requeue(entry, f"attempt {attempt} {state}", now, self.backoff_s(entry))
        else:
            self.finish(entry, state, now, result=result, reason=f"attempt {attempt} {state}")

    def lose_attempt(self, entry: TaskEntry, reason: str, now: float, *, death: bool = False) -> None:
        """The attempt's worker is gone or disowned it: end the attempt as lost and re-queue or fail the task.

        `death`: the worker itself went away; if the task was running, that counts towards quarantine.
        """
        device = self.devices.get(entry.device_id or "")
        if device is not None:
            device.inflight.discard(entry.id)
        self.counters["lost_attempts"] += 1
        self.store.end_attempt(entry.id, entry.attempt, "lost", now,
                               error={"type": "WorkerLost", "message": reason, "traceback": ""})
        if death and entry.state == "running" and not entry.cancel_requested:
            entry.deaths += 1
            entry.evidence.append({"attempt": entry.attempt, "device_id": entry.device_id, "reason": reason,
                                   "at": now})
            self.store.record_death(entry.id, entry.deaths, entry.evidence)
            if self.quarantine_after and entry.deaths >= self.quarantine_after:
                self.counters["quarantined"] += 1
                logger.warning("quarantined task=%s: its worker died %d times while running it (devices %s)",
                               entry.id, entry.deaths, ",".join(str(e["device_id"]) for e in entry.evidence))
                self.finish(entry, "quarantined", now, reason=f"its worker died {entry.deaths} times while running it",
                            error={"type": "Quarantined", "message": reason, "traceback": ""})
                return
        if entry.cancel_requested:
            self.finish(entry, "cancelled", now, reason="cancelled by user")
        elif entry.attempt <= entry.retries:
            self.requeue(entry, f"worker lost: {reason}", now)
        else:
            self.finish(entry, "failed", now, reason=f"worker lost: {reason}",
                        error={"type": "WorkerLost", "message": reason, "traceback": ""})

    def requeue(self, entry: TaskEntry, reason: str, now: float, delay_s: float = 0.0) -> None:
        self.counters["requeued"] += 1
        logger.info("requeued task=%s attempt=%d delay=%.1fs reason=%s", entry.id, entry.attempt, delay_s, reason)
        self.store.requeue_task(entry.id, reason, now, now + delay_s if delay_s > 0 else None)
        self._enqueue(entry, delay_s, time.monotonic())

    def finish(self, entry: TaskEntry, state: str, now: float, *, result: dict | None = None,
               reason: str | None = None, error: dict | None = None) -> None:
        result = result or {}
        error = result.get("error") or error
        self.store.finish_task(entry.id, state, now, started_at=result.get("started_at"),
                               exit_code=result.get("exit_code"), value=result.get("value"), error=error,
                               reason=reason)
        del self.tasks[entry.id]
        if entry.notify:
            frames = Finished({"id": entry.id, "state": state, "attempt": entry.attempt,
                               "device_id": entry.device_id, "exit_code": result.get("exit_code"),
                               "value": result.get("value"), "error": error, "reason": reason}).encode()
            self.sends.extend((client, frames, None) for client in entry.notify)

    def cancel(self, task_id: str, now: float) -> str:
        """Cancel one task: 'cancelled' (was queued), 'cancelling' (Kill sent to its worker) or 'unknown'."""
        entry = self.tasks.get(task_id)
        if entry is None:
            return "unknown"
        if entry.state == "queued":
            self.finish(entry, "cancelled", now, reason="cancelled by user")
            return "cancelled"
        entry.cancel_requested = True
        device = self.devices.get(entry.device_id or "")
        if device is not None and device.registered:
            self.sends.append((device.identity, Kill([[entry.id, entry.attempt]], "cancelled by user").encode(), None))
        return "cancelling"

    # ------------------------------------------------------------ devices

    def register(self, identity: bytes, info: dict, credit: int, reported: set, running: list,
                 now_mono: float, now: float) -> list:
        """A worker (re-)registers; returns the [task id, attempt] pairs it runs that are no longer its own."""
        device_id = info["device_id"]
        device = self.devices.get(device_id)
        if device is None:
            device = self.devices[device_id] = DeviceEntry(device_id, identity)
        # A new process behind the same device id means the old one died, with whatever it was running.
        restarted = device.info.get("pid") not in (None, info["pid"])
        device.identity, device.state, device.registered = identity, "online", True
        device.credit, device.concurrency = max(0, credit), max(1, info["concurrency"])
        device.tags, device.last_seen, device.info = frozenset(info["tags"]), now_mono, info
        for task_id in list(device.inflight):
            entry = self.tasks[task_id]
            if (task_id, entry.attempt) not in reported:
                why = "restarted (new pid) without it" if restarted else "registered again without it"
                self.lose_attempt(entry, f"device {device_id} {why}", now, death=restarted)
        disowned = []
        for task_id, attempt in running:
            entry = self.tasks.get(task_id)
            if entry is None or entry.attempt != attempt or entry.device_id != device_id:
                disowned.append([task_id, attempt])
        self.store.upsert_device(info, now, len(device.inflight))
        logger.info("registered device=%s host=%s concurrency=%d credit=%d tags=%s reported=%d disowned=%d",
                    device_id, info["hostname"], device.concurrency, device.credit, ",".join(info["tags"]) or "-",
                    len(reported), len(disowned))
        return disowned

    def heartbeat(self, device: DeviceEntry, running: list, held: list, metrics: dict, sent_at: float,
                  now_mono: float, now: float) -> None:
        device.last_seen = now_mono
        # Shown only (devices list): a skewed wall clock on a worker never decides anything here.
        device.metrics = dict(metrics, clock_offset_s=round(sent_at - now, 3))
        device.heartbeats += 1
        self.mark_started(device, running, now)
        self.check_leases(device, set(map(tuple, running)) | set(map(tuple, held)), now_mono, now)
        self.store.device_seen(device.device_id, now, device.metrics, len(device.inflight))
        if metrics.get("cpu_percent") is not None and device.heartbeats % self.sample_every == 1:
            self.store.sample_heartbeat(device.device_id, now, metrics, len(device.inflight))

    def mark_started(self, device: DeviceEntry, started: list, now: float) -> None:
        for task_id, attempt in started:
            entry = self.tasks.get(task_id)
            if entry is not None and entry.state == "assigned" and entry.attempt == attempt \
                    and entry.device_id == device.device_id:
                entry.state = "running"
                self.store.mark_running(task_id, attempt, now)

    def check_leases(self, device: DeviceEntry, named: set, now_mono: float, now: float) -> None:
        """A task belongs to a worker while its heartbeats name it; two heartbeats without it end the attempt."""
        for task_id in list(device.inflight):
            entry = self.tasks[task_id]
            if (task_id, entry.attempt) in named:
                entry.misses = 0
            elif now_mono - entry.assigned_mono > self.lease_grace_s:
                entry.misses += 1
                if entry.misses >= 2:
                    self.lose_attempt(entry, f"heartbeats of {device.device_id} stopped naming it", now)

    def mark_offline(self, device: DeviceEntry, reason: str, now: float) -> None:
        if device.state == "offline" and not device.inflight:
            return
        logger.info("device offline device=%s reason=%s requeue=%d", device.device_id, reason, len(device.inflight))
        device.state, device.registered, device.credit = "offline", False, 0
        self.store.set_device_state(device.device_id, "offline")
        for task_id in list(device.inflight):
            self.lose_attempt(self.tasks[task_id], reason, now, death=True)

    def check_liveness(self, now_mono: float, now: float) -> None:
        """Judged on the master's monotonic clock only: a worker's own clock never marks it offline."""
        for device in self.devices.values():
            silent = now_mono - device.last_seen
            if device.state != "offline" and silent > self.device_timeout_s:
                self.mark_offline(device, f"no heartbeat for {silent:.1f}s", now)

    def reopen(self, task_id: str, now: float) -> str:
        """A user re-queues a failed, timed-out, cancelled or quarantined task: attempts go on counting,
        retries and deaths start afresh."""
        if task_id in self.tasks:
            return f"already {self.tasks[task_id].state}"
        row = self.store.get_task(task_id)
        if row is None:
            return "not found"
        if row["state"] == "done":
            return "already done"
        spec = self.store.get_spec(task_id)
        base = self.default_retries if spec.get("retries") is None else spec["retries"]
        entry = TaskEntry(task_id, spec, row["priority"], row["attempt"] + base, row["timeout_s"],
                          attempt=row["attempt"], evidence=row["evidence"])
        self.store.reopen_task(task_id, entry.retries, f"re-queued by user from {row['state']}", now)
        self.tasks[task_id] = entry
        self._enqueue(entry)
        logger.info("re-queued by user task=%s from=%s", task_id, row["state"])
        return "queued"

    def dispatch_failed(self, device_id: str, task_ids: list[str], now: float) -> None:
        """The ROUTER could not reach the worker: its attempts are lost, and it is offline until it registers."""
        device = self.devices.get(device_id)
        if device is not None:
            self.mark_offline(device, "unreachable on the ROUTER", now)
