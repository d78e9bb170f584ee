"""The master's in-memory view of unfinished tasks, and every state transition of a task (staged to the ledger).

The devices are its `Fleet`'s; what the turn sends is its `Turn`'s."""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ..model import ACTIVE_STATES, TaskState
from ..protocol import packb, unpackb
from ..store.task_store import TaskStore
from ..text import cut_middle
from .blame import with_death
from .entries import COMPACT_ABOVE, PLAIN, WIRE_IN_MEMORY_MAX, DeviceEntry, Requirements, TaskEntry, kept, wire_part
from .fleet import Fleet, Lost
from .limits import Limits
from .parking import Parking
from .retrying import RetryRules, backoff_s, not_retried
from .strategies import Strategy, pick
from .quota import Quota
from .tallies import Tallies
from .taskqueue import TaskQueue
from .turn import Turn

if TYPE_CHECKING:
    from ..alerts.book import Alerts

logger = logging.getLogger(__name__)
# The states the per-task paths compare and set, as their plain text: a global name is read several times faster
# than an enum member, and these run for every task (the text is the same: TaskState compares equal to it).
QUEUED, ASSIGNED, RUNNING, DONE, CANCELLED = (s.value for s in (TaskState.QUEUED, TaskState.ASSIGNED, TaskState.RUNNING,
                                                                TaskState.DONE, TaskState.CANCELLED))


class Board:
    """Unfinished tasks, their queue and limits, composed with the fleet of devices they run on. Methods stage
    ledger writes (committed by the master once per turn) and add what the turn sends to `turn`."""

    def __init__(self, store: TaskStore, turn: Turn, *, incarnation: str, strategy: Strategy, default_retries: int,
                 default_timeout_s: float | None, device_timeout_s: float, lease_grace_s: float = 2.0,
                 retry_backoff_s: float = 1.0, retry_backoff_max_s: float = 60.0, quarantine_after: int = 3,
                 max_output_bytes: int = 1 << 20, sample_every: int = 5,
                 max_queued_per_client: int = 1_000_000) -> None:
        self.store = store
        self.turn = turn
        self.incarnation = incarnation
        self.strategy = strategy
        self.default_retries = default_retries
        self.default_timeout_s = default_timeout_s
        self.retry_backoff_s, self.retry_backoff_max_s = retry_backoff_s, retry_backoff_max_s
        self.quarantine_after = quarantine_after
        self.max_output_bytes = max_output_bytes
        self.quota = Quota(max_queued_per_client)
        self.tasks: dict[str, TaskEntry] = {}
        self.queue = TaskQueue(self._queued_under)
        self.parking = Parking(self._queued_under)
        self.needs = Requirements()
        self.retry_rules = RetryRules()
        self.fleet = Fleet(store, self.tasks, turn, device_timeout_s=device_timeout_s, lease_grace_s=lease_grace_s,
                           sample_every=sample_every)
        self.limits, self.seq = Limits(), 0
        self.alerts: Alerts | None = None   # rules matched when a task ends (set by the master)
        self.counters = {"submitted": 0, "dispatched": 0, "results": 0, "stale_results": 0, "foreign_results": 0,
                         "requeued": 0, "lost_attempts": 0, "quarantined": 0, "returned": 0, "refused_returns": 0}
        self.tallies = Tallies()   # finished by state and done durations by name, for the `metrics` query

    # ------------------------------------------------------------ submit and dispatch

    def submit(self, specs: list[dict], client: bytes, notify: bool, now: float, account: bytes = b"",
               looked_up: tuple[set[str], set[str]] | None = None) -> list[str]:
        """`client` is told when tasks finish (if `notify`); `account` (the client's key under CURVE, else its
        connection) is what max_queued_per_client counts. `looked_up`: (ids already looked for in the ledger,
        those of them found there), so several Submits of a turn share one query."""
        account = account or client
        if any(spec.get("all") for spec in specs):
            specs = [child for spec in specs for child in self.fleet.fan_out(spec)]
        ids = [s["id"] for s in specs]
        tasks = self.tasks
        # Ended in this very turn (a cancel right after the submit): its insert is staged, not yet in the ledger.
        known = {i for i in ids if i in tasks or i in self.turn.finished}
        asked, found = looked_up or ((), ())
        known.update(i for i in ids if i in found)
        known |= self.store.existing_ids([i for i in ids if i not in known and i not in asked])
        self.quota.admit(account, len(set(ids) - known))
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
        sizes = self.store.insert_tasks(inserts, now)   # each spec packed: a bound of its wire part's size
        seq = self.seq
        compact, need_of = len(tasks) >= COMPACT_ABOVE, self.needs.get   # many unfinished: wire parts packed
        rules = self.retry_rules
        for (spec, retries, timeout_s), size in zip(inserts, sizes):
            task_id, key = spec["id"], spec["limit_key"]
            if key and (spec["limit_concurrency"] or spec["limit_per_minute"]):
                self.limits.define(key, spec["limit_concurrency"], spec["limit_per_minute"])
                self.store.set_limit(key, spec["limit_concurrency"], spec["limit_per_minute"])
            seq += 1
            # .get: a schedule's spec saved before `project` lacks it
            device, tags, project, env = spec["device"], spec["tags"], spec.get("project"), spec.get("python_env")
            # wire_part, inline (it runs for every task); a validated call has these five, none of them None
            kind = spec["kind"]
            wire = ({"kind": kind, "name": spec["name"], "function": spec["function"], "args": spec["args"],
                     "kwargs": spec["kwargs"]} if kind == "python" and not (project or env) else wire_part(spec, False))
            if size > WIRE_IN_MEMORY_MAX:
                wire = kept(wire, compact)
            elif compact:
                wire = packb(wire)
            # What _enqueue does, for a task that was never queued before (state, device and misses are fresh).
            entry = tasks[task_id] = TaskEntry(task_id, wire,
                                               need_of(kind, device, tags, project, env)
                                               if device or tags or project or env
                                               else PLAIN[kind],
                                               spec["priority"], retries, timeout_s, key,
                                               spec["retry_backoff"], seq=seq, gen=1, client=account,
                                               # .get: a schedule's spec saved before these keys lacks them
                                               retry_rule=(rules.of(spec) if spec.get("retry_on")
                                                           or spec.get("no_retry_on") else None))
            if notify:
                entry.notify = (client,)
            push(entry.priority, seq, 1, task_id)
        self.seq = seq
        self.quota.added(account, len(inserts))
        self.counters["submitted"] += len(inserts)
        return ids

    def _queued_under(self, task_id: str, gen: int) -> bool:
        entry = self.tasks.get(task_id)
        return entry is not None and entry.state == QUEUED and entry.gen == gen

    def enqueue(self, entry: TaskEntry, delay_s: float = 0.0, now_mono: float = 0.0) -> None:
        self.seq += 1
        entry.seq, entry.state, entry.device_id, entry.misses = self.seq, QUEUED, None, 0
        entry.gen += 1
        if delay_s > 0:
            self.queue.push_later(now_mono + delay_s, entry.gen, entry.id)
        else:
            self.queue.push(entry.priority, entry.seq, entry.gen, entry.id)

    def push_back(self, entry: TaskEntry) -> None:
        """Back into the queue at its old place (a skipped or unparked task keeps its order)."""
        entry.gen += 1
        self.queue.push(entry.priority, entry.seq, entry.gen, entry.id)

    def dispatch(self, now_mono: float, now: float) -> None:
        """Hand queued tasks to registered online workers, never beyond their credit nor a key's limit; a task that
        no ready worker can take is parked by its requirement (see Parking), so it costs nothing in later turns."""
        for task_id in self.queue.due(now_mono) + self.limits.unpark(now_mono):
            entry = self.tasks.get(task_id)
            if entry is not None and entry.state == QUEUED:   # a parked task may have been cancelled since
                self.push_back(entry)
        parking = self.parking
        if not self.queue and not parking:   # idle with a big fleet: do not walk every device each turn
            return
        ready = self.fleet.ready()
        if not ready:
            return
        if parking:
            tasks = self.tasks
            for task_id in parking.wake(ready):
                self.push_back(tasks[task_id])
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
                    parking.park(entry, self.fleet.devices)
                    continue
            if key is not None:
                self.limits.started(key, now_mono)
            device = eligible[0] if len(eligible) == 1 else eligible[pick(self.strategy, eligible)]
            entry.attempt += 1
            entry.state, entry.device_id, entry.assigned_mono = ASSIGNED, device.device_id, now_mono
            entry.assigned_at, entry.started_at, entry.running_saved = now, None, False
            device.credit -= 1
            device.inflight.add(entry.id)
            if device.credit <= 0:
                ready.remove(device)
            wire = entry.wire
            if wire is None:   # too big to keep in memory: from the ledger (before assign folds a staged insert)
                task = wire_part(self.store.get_spec(entry.id), False)
            else:
                task = unpackb(wire) if wire.__class__ is bytes else dict(wire)
            self.store.assign(entry.id, entry.attempt, device.device_id, now)
            task["id"], task["attempt"], task["timeout"] = entry.id, entry.attempt, entry.timeout_s
            entry.name = task.get("name")   # its duration's label when it ends (tallies)
            batches.setdefault(device.device_id, []).append(task)
            self.counters["dispatched"] += 1
        for device_id, tasks in batches.items():
            self.turn.dispatch(self.fleet.devices[device_id].identity, tasks)

    # ------------------------------------------------------------ results and endings

    def record_result(self, device: DeviceEntry, result: dict, now_mono: float, now: float) -> bool:
        """Record a result `device` sent; False if it is refused (not its attempt) and must not be acknowledged."""
        with self.store.op("result"):
            return self._record_result(device, result, now_mono, now)

    def _record_result(self, device: DeviceEntry, result: dict, now_mono: float, now: float) -> bool:
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
        if state == DONE or (state == CANCELLED and entry.cancel_requested):
            self.finish(entry, state, now, result=result)
        elif entry.attempt <= entry.retries and not entry.cancel_requested:
            why = not_retried(result.get("error"), entry.retry_rule) if state != CANCELLED else None
            if why is None:
                base = self.retry_backoff_s if entry.retry_backoff is None else entry.retry_backoff
                self.requeue(entry, f"attempt {attempt} {state}", now_mono, now,
                             backoff_s(base, entry.attempt, self.retry_backoff_max_s))
            else:
                self.finish(entry, state, now, result=result, reason=f"attempt {attempt} {state}, not retried: {why}")
        else:
            self.finish(entry, state, now, result=result, reason=f"attempt {attempt} {state}")
        return True

    def _lose_attempt(self, entry: TaskEntry, reason: str, now_mono: float, now: float, death: str | None) -> None:
        # Its device no longer holds it: the fleet took it off before reporting it (Fleet._release)
        self.limits.ended(entry.limit_key)
        self.counters["lost_attempts"] += 1
        self.store.end_attempt(entry.id, entry.attempt, entry.device_id, "lost", now, assigned_at=entry.assigned_at,
                               started_at=entry.started_at,
                               error={"type": "WorkerLost", "message": reason, "traceback": ""})
        delay_s = 0.0
        if death and entry.state == RUNNING and not entry.cancel_requested:
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
                self.finish(entry, TaskState.QUARANTINED, now,
                            reason=f"its worker died {entry.deaths} times while running it",
                            error={"type": "Quarantined", "message": reason, "traceback": ""})
                return
        if entry.cancel_requested:
            self.finish(entry, TaskState.CANCELLED, now, reason="cancelled by user")
        elif entry.attempt <= entry.retries:
            self.requeue(entry, f"worker lost: {reason}", now_mono, now, delay_s)
        else:
            self.finish(entry, TaskState.FAILED, now, reason=f"worker lost: {reason}",
                        error={"type": "WorkerLost", "message": reason, "traceback": ""})

    def requeue(self, entry: TaskEntry, reason: str, now_mono: float, now: float, delay_s: float = 0.0) -> None:
        self.counters["requeued"] += 1
        logger.info("requeued task=%s attempt=%d delay=%.1fs reason=%s", entry.id, entry.attempt, delay_s, reason)
        self.store.requeue_task(entry.id, reason, now, now + delay_s if delay_s > 0 else None)
        self.enqueue(entry, delay_s, now_mono)

    def finish(self, entry: TaskEntry, state: str, now: float, *, result: dict | None = None,
               reason: str | None = None, error: dict | None = None) -> None:
        result = result or {}
        error = result.get("error") or error
        self.store.finish_task(entry.id, state, now, started_at=entry.started_at,
                               exit_code=result.get("exit_code"), value=result.get("value"), error=error,
                               reason=reason)
        del self.tasks[entry.id]
        self.tallies.ended(state, entry.name, None if entry.started_at is None else now - entry.started_at)
        if entry.state == QUEUED:   # cancelled while queued: perhaps in a lot that no worker empties
            self.parking.dropped(entry.need)
        self.quota.ended(entry.client)
        summary = {"id": entry.id, "state": state, "attempt": entry.attempt, "device_id": entry.device_id,
                   "exit_code": result.get("exit_code"), "value": result.get("value"), "error": error, "reason": reason}
        self.turn.ended(entry.id, summary, entry.notify)
        if self.alerts is not None:   # its events go into this op: committed with the task's end, or not at all
            self.alerts.task_ended(entry.id, state, summary, now)

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

    # ------------------------------------------------------------ devices: what their events do to tasks

    def register(self, identity: bytes, info: dict, credit: int, reported: set, running: list, now_mono: float,
                 now: float) -> list:
        """A worker (re-)registers; returns the [task id, attempt] pairs it runs that are no longer its own."""
        lost, disowned = self.fleet.register(identity, info, credit, reported, running, now_mono, now)
        self.lose(lost, now_mono, now)
        return disowned

    def heartbeat(self, device: DeviceEntry, running: list, held: list, metrics: dict, sent_at: float,
                  commands: list, now_mono: float, now: float, spacing_s: float = 0.0) -> None:
        if running:
            self.mark_started(device, running, now, save=True)
        self.lose(self.fleet.heartbeat(device, running, held, metrics, sent_at, commands, now_mono, now, spacing_s),
                  now_mono, now)

    def mark_started(self, device: DeviceEntry, started: list, now: float, save: bool = False) -> None:
        """Running at once in memory; in the ledger only from a heartbeat (`save`), so a short task never
        costs the write: its row goes from assigned to its outcome, with started_at from the result."""
        for task_id, attempt in started:
            entry = self.tasks.get(task_id)
            if entry is None or entry.attempt != attempt or entry.device_id != device.device_id:
                continue
            if entry.state == ASSIGNED:
                entry.state, entry.started_at = RUNNING, now
            if save and entry.state == RUNNING and not entry.running_saved:
                entry.running_saved = True
                self.store.mark_running(task_id, attempt, entry.started_at or now, now)

    def check_liveness(self, now_mono: float, now: float) -> None:
        self.lose(self.fleet.check_liveness(now_mono, now), now_mono, now)

    def mark_offline(self, device: DeviceEntry, reason: str, now_mono: float, now: float, died: bool = True) -> None:
        self.lose(self.fleet.mark_offline(device, reason, now, died), now_mono, now)

    def dispatch_failed(self, device_id: str, now_mono: float, now: float) -> None:
        """The ROUTER could not reach the worker: its attempts are lost, and it is offline until it registers."""
        device = self.fleet.devices.get(device_id)
        if device is not None:
            self.mark_offline(device, "unreachable on the ROUTER", now_mono, now)

    def lose(self, lost: list[Lost], now_mono: float, now: float) -> None:
        """Attempts whose worker is gone or disowned them: each ends as lost, and its task is re-queued or fails.
        A `death` (the worker itself went away; blame.blamed says what that is for this task) is kept as evidence
        when the task was running, and may count towards quarantine."""
        for entry, reason, death in lost:
            with self.store.op("lost"):
                self._lose_attempt(entry, reason, now_mono, now, death)
