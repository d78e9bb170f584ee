"""The master's in-memory view of tasks and devices, and every state transition (staged to the ledger)."""
from __future__ import annotations

import logging
import time

from ..errors import LimitExceeded
from ..model import ACTIVE_STATES
from ..protocol import packb, unpackb
from ..store.task_store import TaskStore
from ..text import cut_middle
from .blame import with_death
from .commands import CommandBook
from .controls import TaskControls
from .entries import COMPACT_ABOVE, PLAIN, DeviceEntry, Requirements, TaskEntry, requirement, wire_part
from .fleet import FleetEvents
from .limits import Limits
from .parking import Parking
from .retrying import RetryRules, backoff_s, not_retried
from .scheduling import Strategy, pick
from .taskqueue import TaskQueue

logger = logging.getLogger(__name__)


class Cluster(FleetEvents, TaskControls):
    """Tasks, devices and the queue. Methods stage ledger writes and queue frames in `sends`."""

    def __init__(self, store: TaskStore, *, incarnation: str, strategy: Strategy, default_retries: int,
                 default_timeout_s: float | None, device_timeout_s: float, lease_grace_s: float = 2.0,
                 retry_backoff_s: float = 1.0, retry_backoff_max_s: float = 60.0, quarantine_after: int = 3,
                 max_output_bytes: int = 1 << 20, sample_every: int = 5,
                 max_queued_per_client: int = 1_000_000) -> None:
        self.store = store
        self.incarnation = incarnation
        self.strategy = strategy
        self.default_retries = default_retries
        self.default_timeout_s = default_timeout_s
        self.device_timeout_s = device_timeout_s
        self.lease_grace_s = lease_grace_s
        self.retry_backoff_s, self.retry_backoff_max_s = retry_backoff_s, retry_backoff_max_s
        self.quarantine_after = quarantine_after
        self.max_output_bytes = max_output_bytes
        self.sample_every = sample_every
        self.max_queued_per_client = max_queued_per_client
        self.per_client: dict[bytes, int] = {}        # client identity -> its unfinished tasks (since this start)
        self.tasks: dict[str, TaskEntry] = {}
        self.devices: dict[str, DeviceEntry] = {}
        self.queue = TaskQueue(self._queued_under)
        self.parking = Parking(self._queued_under)
        self.needs = Requirements()
        self.retry_rules = RetryRules()
        self.commands = CommandBook(resend_after_s=lease_grace_s)
        self.drained: set[str] = set()                # devices an operator drained (kept across restarts)
        self.publishes: list[tuple[bytes, list[bytes]]] = []   # (topic, frames) for the PUB, after the commit
        self.notices: dict[bytes, list[dict]] = {}   # client -> summaries of its tasks finished this turn
        self.dispatched: dict[bytes, list[dict]] = {}   # worker -> tasks handed to it this turn
        self.just_finished: dict[str, dict] = {}
        self.limits = Limits()
        self.seq = 0
        # (identity, frames, dispatched task ids or None): sent after the turn's commit
        self.sends: list[tuple[bytes, list[bytes], list[str] | None]] = []
        self.counters = {"submitted": 0, "dispatched": 0, "results": 0, "stale_results": 0, "foreign_results": 0,
                         "requeued": 0, "lost_attempts": 0, "quarantined": 0}

    # ------------------------------------------------------------ recovery

    def recover(self, now_mono: float, now: float) -> None:
        """Load unfinished tasks; keep assigned/running ones with their device until it re-registers or times out."""
        self.drained = set(self.store.device_ids_with_state("draining"))
        for device_id in self.store.device_ids_with_state("online"):
            self.store.set_device_state(device_id, "offline")
        pids = {d["device_id"]: d["pid"] for d in self.store.list_devices()}
        for key, max_concurrent, per_minute in self.store.load_limits():
            self.limits.define(key, max_concurrent, per_minute)
        for row in self.store.load_unfinished():
            entry = TaskEntry.from_spec(row["spec"], self.needs, row["retries"], row["timeout_s"],
                                        len(self.tasks) > COMPACT_ABOVE, retry_rule=self.retry_rules.of(row["spec"]),
                                        attempt=row["attempt"], deaths=row["deaths"] or 0, evidence=row["evidence"])
            self.tasks[entry.id] = entry
            if row["state"] == "queued" or not row["device_id"]:
                self._enqueue(entry, max(0.0, (row["not_before"] or 0) - now), now_mono)
                continue
            entry.state, entry.device_id = row["state"], row["device_id"]
            # A running row's updated_at is when it was marked running: its assignment came before that.
            entry.assigned_at = min(row["updated_at"], row["started_at"] or row["updated_at"])
            entry.started_at = row["started_at"]
            entry.running_saved = row["state"] == "running"
            device = self.devices.get(row["device_id"])
            if device is None:
                # Silent until it registers again; liveness gives it device_timeout from now.
                device = self.devices[row["device_id"]] = DeviceEntry(row["device_id"], row["device_id"].encode(),
                                                                      last_seen=now_mono,
                                                                      info={"pid": pids.get(row["device_id"])})
            device.inflight.add(entry.id)
            self.limits.started(entry.limit_key, now_mono)
        logger.info("recovered %d unfinished tasks (%d queued) from %s", len(self.tasks),
                    sum(1 for e in self.tasks.values() if e.state == "queued"), self.store.path)

    # ------------------------------------------------------------ submit and dispatch

    def submit(self, specs: list[dict], client: bytes, notify: bool, now: float, account: bytes = b"",
               looked_up: tuple[set[str], set[str]] | None = None) -> list[str]:
        """`client` is told when tasks finish (if `notify`); `account` (the client's key under CURVE, else its
        connection) is what max_queued_per_client counts. `looked_up`: (ids already looked for in the ledger,
        those of them found there), so several Submits of a turn share one query."""
        account = account or client
        if any(spec.get("all") for spec in specs):
            specs = [child for spec in specs for child in self.fan_out(spec)]
        ids = [s["id"] for s in specs]
        tasks = self.tasks
        # Ended in this very turn (a cancel right after the submit): its insert is staged, not yet in the ledger.
        known = {i for i in ids if i in tasks or i in self.just_finished}
        asked, found = looked_up or ((), ())
        known.update(i for i in ids if i in found)
        known |= self.store.existing_ids([i for i in ids if i not in known and i not in asked])
        if account:   # the master's own schedules submit as b"" and are not capped
            self._admit(account, len(set(ids) - known))
        inserts = []
        # These loops run for every submitted task: the defaults, the queue and the counters are looked up once.
        default_retries, default_timeout_s, push = self.default_retries, self.default_timeout_s, self.queue.push
        for spec in specs:
            task_id = spec["id"]
            if task_id in known:
                continue  # a re-sent submission: the first one already holds this id
            known.add(task_id)
            retries = default_retries if spec["retries"] is None else spec["retries"]
            timeout_s = default_timeout_s if spec["timeout"] is None else spec["timeout"]
            inserts.append((spec, retries, timeout_s))
        # Staged whole or not at all, before the in-memory view changes: if it raises (a bug), the Submit is
        # answered with an error and nothing of it is queued without a row to back it.
        self.store.insert_tasks(inserts, now)
        seq = self.seq
        compact, need_of = len(tasks) >= COMPACT_ABOVE, self.needs.get   # many unfinished: wire parts packed
        rules = self.retry_rules
        for spec, retries, timeout_s in inserts:
            task_id, key = spec["id"], spec["limit_key"]
            if key and (spec["limit_concurrency"] or spec["limit_per_minute"]):
                self.limits.define(key, spec["limit_concurrency"], spec["limit_per_minute"])
                self.store.set_limit(key, spec["limit_concurrency"], spec["limit_per_minute"])
            seq += 1
            # wire_part, inline (it runs for every task); a validated call has these five, none of them None
            kind = spec["kind"]
            wire = ({"kind": kind, "name": spec["name"], "function": spec["function"], "args": spec["args"],
                     "kwargs": spec["kwargs"]} if kind == "python" else wire_part(spec, False))
            device, tags = spec["device"], spec["tags"]
            # What _enqueue does, for a task that was never queued before (state, device and misses are fresh).
            entry = tasks[task_id] = TaskEntry(task_id, packb(wire) if compact else wire,
                                               need_of(kind, device, tags) if device or tags else PLAIN[kind],
                                               spec["priority"], retries, timeout_s, key,
                                               spec["retry_backoff"], seq=seq, gen=1, client=account,
                                               # .get: a schedule's spec saved before these keys lacks them
                                               retry_rule=(rules.of(spec) if spec.get("retry_on")
                                                           or spec.get("no_retry_on") else None))
            if notify:
                entry.notify = (client,)
            push(entry.priority, seq, 1, task_id)
        self.seq = seq
        if account and inserts:
            self.per_client[account] = self.per_client.get(account, 0) + len(inserts)
        self.counters["submitted"] += len(inserts)
        return ids

    def _admit(self, client: bytes, fresh: int) -> None:
        """Refuse, before anything is staged, a submission that would leave one client too many unfinished tasks."""
        held = self.per_client.get(client, 0)
        if fresh and held + fresh > self.max_queued_per_client:
            raise LimitExceeded(f"this client has {held} unfinished tasks and {fresh} more would exceed "
                                f"max_queued_per_client = {self.max_queued_per_client}",
                                "wait for some to finish, or raise max_queued_per_client on the master")

    def fan_out(self, spec: dict) -> list[dict]:
        """A task for all matching workers becomes one task per matching online worker, in one group."""
        if not spec.get("all"):
            return [spec]
        need = requirement(spec["kind"], None, spec.get("tags"))
        targets = sorted(d.device_id for d in self.devices.values()
                         if d.registered and d.state == "online" and need.met_by(d))
        return [dict(spec, id=f"{spec['id']}.{n}", device=device_id, all=False, group=spec["id"],
                     name=f"{spec['name']} @{device_id}") for n, device_id in enumerate(targets, 1)]

    def _queued_under(self, task_id: str, gen: int) -> bool:
        entry = self.tasks.get(task_id)
        return entry is not None and entry.state == "queued" and entry.gen == gen

    def _enqueue(self, entry: TaskEntry, delay_s: float = 0.0, now_mono: float = 0.0) -> None:
        self.seq += 1
        entry.seq, entry.state, entry.device_id, entry.misses = self.seq, "queued", None, 0
        entry.gen += 1
        if delay_s > 0:
            self.queue.push_later(now_mono + delay_s, entry.gen, entry.id)
        else:
            self.queue.push(entry.priority, entry.seq, entry.gen, entry.id)

    def _push(self, entry: TaskEntry) -> None:
        """Back into the queue at its old place (a skipped or unparked task keeps its order)."""
        entry.gen += 1
        self.queue.push(entry.priority, entry.seq, entry.gen, entry.id)

    def dispatch(self, now: float, now_mono: float) -> None:
        """Hand queued tasks to registered online workers, never beyond their credit nor a key's limit; a task that
        no ready worker can take is parked by its requirement (see Parking), so it costs nothing in later turns."""
        for task_id in self.queue.due(now_mono) + self.limits.unpark(now_mono):
            entry = self.tasks.get(task_id)
            if entry is not None and entry.state == "queued":   # a parked task may have been cancelled since
                self._push(entry)
        parking = self.parking
        if not self.queue and not parking:   # idle with a big fleet: do not walk every device each turn
            return
        ready = [d for d in self.devices.values() if d.registered and d.state == "online" and d.credit > 0]
        if not ready:
            return
        if parking:
            tasks = self.tasks
            for task_id in parking.wake(ready):
                self._push(tasks[task_id])
        batches: dict[str, list[dict]] = {}
        unmet: set = set()   # requirements no ready worker met this turn: the ready list only shrinks in a turn
        # Devices without tags take any task that names no device and needs no tag: such tasks skip met_by.
        untagged = not any(d.tags for d in ready)
        while ready:
            task_id = self.queue.pop()
            if task_id is None:
                break
            entry = self.tasks[task_id]
            entry.gen += 1          # taken out: its twin in the other heap goes stale
            key = entry.limit_key
            if key is not None and not self.limits.allows(key, now_mono):
                self.limits.park(key, entry.id)     # out of the queue until the key has room
                continue
            need = entry.need
            if untagged and need.plain:
                eligible = ready
            else:
                eligible = [] if need in unmet else [d for d in ready if need.met_by(d)]
                if not eligible:   # out of the queue until a worker that meets it has room
                    unmet.add(need)
                    parking.park(entry, self.devices)
                    continue
            if key is not None:
                self.limits.started(key, now_mono)
            device = eligible[0] if len(eligible) == 1 else eligible[pick(self.strategy, eligible)]
            entry.attempt += 1
            entry.state, entry.device_id, entry.assigned_mono = "assigned", device.device_id, now_mono
            entry.assigned_at, entry.started_at, entry.running_saved = now, None, False
            device.credit -= 1
            device.inflight.add(entry.id)
            if device.credit <= 0:
                ready.remove(device)
            self.store.assign(entry.id, entry.attempt, device.device_id, now)
            wire = entry.wire
            task = unpackb(wire) if wire.__class__ is bytes else dict(wire)
            task["id"], task["attempt"], task["timeout"] = entry.id, entry.attempt, entry.timeout_s
            batches.setdefault(device.device_id, []).append(task)
            self.counters["dispatched"] += 1
        for device_id, tasks in batches.items():
            self.dispatched.setdefault(self.devices[device_id].identity, []).extend(tasks)

    # ------------------------------------------------------------ results and endings

    def record_result(self, device: DeviceEntry, result: dict, now: float) -> bool:
        """Record a result `device` sent; False if it is refused (not its attempt) and must not be acknowledged."""
        with self.store.op("result"):
            return self._record_result(device, result, now)

    def _record_result(self, device: DeviceEntry, result: dict, now: float) -> bool:
        task_id, attempt = result["id"], result["attempt"]
        entry = self.tasks.get(task_id)
        current = entry is not None and entry.attempt == attempt and entry.state in ACTIVE_STATES
        if current and entry.device_id != device.device_id:
            # Fenced by device: the attempt running now is another device's. Nothing is written, nothing acknowledged.
            self.counters["foreign_results"] += 1
            logger.debug("foreign result task=%s attempt=%d from %s (dispatched to %s)", task_id, attempt,
                         device.device_id, entry.device_id)
            return False
        if not current:
            # Fenced: a late or duplicate result. Acked (so the worker drops it); it may only count on the sender's
            # own attempt row (the store matches the device), never change another device's.
            self.store.record_stale(task_id, attempt, device.device_id, result.get("exit_code"))
            self.counters["stale_results"] += 1
            logger.debug("stale result task=%s attempt=%d from %s", task_id, attempt, device.device_id)
            return True
        self.counters["results"] += 1
        device.inflight.discard(task_id)
        self.limits.ended(entry.limit_key)
        state = result["state"]
        # The worker's start is the attempt's: the master's own mark comes from the first message naming it, which
        # after a master restart is a heartbeat seconds late. Never after the end: the turn's clock was read before
        # this message came, and a worker's clock may run ahead.
        started = result.get("started_at") or entry.started_at
        entry.started_at = None if started is None else min(started, now)
        self.store.end_attempt(task_id, attempt, device.device_id, state, now, assigned_at=entry.assigned_at,
                               started_at=entry.started_at,
                               exit_code=result.get("exit_code"), error=result.get("error"),
                               # a worker cuts its output to max_output_bytes; the master holds any other to it
                               stdout=cut_middle(result.get("stdout") or "", self.max_output_bytes),
                               stderr=cut_middle(result.get("stderr") or "", self.max_output_bytes))
        if state == "done" or (state == "cancelled" and entry.cancel_requested):
            self.finish(entry, state, now, result=result)
        elif entry.attempt <= entry.retries and not entry.cancel_requested:
            why = not_retried(result.get("error"), entry.retry_rule) if state != "cancelled" else None
            if why is None:
                base = self.retry_backoff_s if entry.retry_backoff is None else entry.retry_backoff
                self.requeue(entry, f"attempt {attempt} {state}", now,
                             backoff_s(base, entry.attempt, self.retry_backoff_max_s))
            else:
                self.finish(entry, state, now, result=result, reason=f"attempt {attempt} {state}, not retried: {why}")
        else:
            self.finish(entry, state, now, result=result, reason=f"attempt {attempt} {state}")
        return True

    def lose_attempt(self, entry: TaskEntry, reason: str, now: float, *, death: str | None = None) -> None:
        """The attempt's worker is gone or disowned it: end the attempt as lost and re-queue or fail the task.

        `death`: the worker itself went away, and what that is for this task (blame.blamed): if it was running,
        the death is kept as evidence and may count towards quarantine.
        """
        with self.store.op("lost"):
            self._lose_attempt(entry, reason, now, death)

    def _lose_attempt(self, entry: TaskEntry, reason: str, now: float, death: str | None) -> None:
        device = self.devices.get(entry.device_id or "")
        if device is not None:
            device.inflight.discard(entry.id)
        self.limits.ended(entry.limit_key)
        self.counters["lost_attempts"] += 1
        self.store.end_attempt(entry.id, entry.attempt, entry.device_id, "lost", now, assigned_at=entry.assigned_at,
                               started_at=entry.started_at,
                               error={"type": "WorkerLost", "message": reason, "traceback": ""})
        delay_s = 0.0
        if death and entry.state == "running" and not entry.cancel_requested:
            entry.evidence, counted = with_death(entry.evidence, death, {"attempt": entry.attempt, "reason": reason,
                                                                         "device_id": entry.device_id, "at": now})
            entry.deaths += counted
            self.store.record_death(entry.id, entry.deaths, entry.evidence)
            if counted:   # a suspect waits a retry's backoff: the tasks beside it, re-queued at once, start without it
                base = self.retry_backoff_s if entry.retry_backoff is None else entry.retry_backoff
                delay_s = backoff_s(base, entry.deaths, self.retry_backoff_max_s)
            if counted and self.quarantine_after and entry.deaths >= self.quarantine_after:
                self.counters["quarantined"] += 1
                logger.warning("quarantined task=%s: its worker died %d times while running it (devices %s)",
                               entry.id, entry.deaths, ",".join(str(e["device_id"]) for e in entry.evidence))
                self.finish(entry, "quarantined", now, reason=f"its worker died {entry.deaths} times while running it",
                            error={"type": "Quarantined", "message": reason, "traceback": ""})
                return
        if entry.cancel_requested:
            self.finish(entry, "cancelled", now, reason="cancelled by user")
        elif entry.attempt <= entry.retries:
            self.requeue(entry, f"worker lost: {reason}", now, delay_s)
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
        self.store.finish_task(entry.id, state, now, started_at=entry.started_at,
                               exit_code=result.get("exit_code"), value=result.get("value"), error=error,
                               reason=reason)
        del self.tasks[entry.id]
        if entry.state == "queued":   # cancelled while queued: perhaps in a lot that no worker empties
            self.parking.dropped(entry.need)
        if entry.client:
            left = self.per_client.pop(entry.client, 1) - 1
            if left > 0:
                self.per_client[entry.client] = left
        summary = {"id": entry.id, "state": state, "attempt": entry.attempt, "device_id": entry.device_id,
                   "exit_code": result.get("exit_code"), "value": result.get("value"), "error": error,
                   "reason": reason}
        # Until the commit, the ledger still shows it unfinished: a `watch` this turn is answered from here.
        self.just_finished[entry.id] = summary
        for client in entry.notify:
            self.notices.setdefault(client, []).append(summary)

    def append_output(self, device: DeviceEntry, chunks: list) -> None:
        """Live output of running attempts; capped per stream (the final result replaces it with head + tail)."""
        for task_id, attempt, stream, text in chunks:
            entry = self.tasks.get(task_id)
            if entry is None or entry.attempt != attempt or entry.device_id != device.device_id:
                continue
            if entry.streamed is None:
                entry.streamed = {}
            sent = entry.streamed.get(stream, 0)
            if sent >= self.max_output_bytes:
                continue
            if sent + len(text) >= self.max_output_bytes:
                text = text[:self.max_output_bytes - sent] + f"\n[... zmqgrid: live {stream} cut at " \
                                                             f"{self.max_output_bytes} bytes; the end comes with the result ...]\n"
            entry.streamed[stream] = sent + len(text)
            self.store.append_output(task_id, attempt, stream, text)
