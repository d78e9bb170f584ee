"""Per-kind handlers of the master: apply what a peer sent (checked whole at decode), queue the reply."""
from __future__ import annotations

import logging
from collections import Counter
from typing import TYPE_CHECKING

from ..errors import AmbiguousTaskId, LimitExceeded, ProtocolError, StoreError, TaskNotFound, ZmqgridError
from ..projects.messages import ProjectChunk, ProjectFetch, ProjectPush
from ..model import validate_batch
from ..protocol import (MAX_IDS_PER_REQUEST, Control, Heartbeat, Message, Output, Query, Register, RegisterAck,
                        Reply, Results, Submit)
from . import controls, paging, queries
from .board import Board, DeviceEntry
from .fetches import Fetches
from .projects import Projects
from .returns import take_back
from .schedules import Schedules

if TYPE_CHECKING:
    from ..alerts.book import Alerts
    from .keyring import KeyRing
    from .syncs import Syncs

logger = logging.getLogger(__name__)
MAX_TASKS_PER_SUBMIT = 10_000
CANCEL_LINE_BYTES = 64   # a bulk cancel's reply line: a task id and its outcome, packed


def _runs(submits: list[tuple]) -> list[list[tuple]]:
    """The turn's (identity, Submit, specs, account) in order, cut into runs of consecutive Submits of one client
    with the same notify that can be staged as one; a Submit that fans out (its ids are not its tasks') is alone."""
    runs: list[list[tuple]] = []
    last = None
    for item in submits:
        identity, msg, specs, account = item
        key = None if any(spec["all"] for spec in specs) else (identity, msg.notify, account)
        if key is not None and key == last:
            runs[-1].append(item)
        else:
            runs.append([item])
        last = key
    return runs


class Handlers:
    """Routes one decoded ROUTER or PULL message to the board; replies go into the board's turn."""

    def __init__(self, board: Board, settings: dict, schedules: Schedules | None = None) -> None:
        self.board = board
        self.schedules = schedules
        self.settings = settings   # pub_port, heartbeat_port, heartbeat_interval_s, device_timeout_s, ...
        self.account: bytes | None = None   # with CURVE, the key of the message being handled (set by the guard)
        self.keyring: KeyRing | None = None  # with CURVE: status tells an admin key how many keys are pending
        self.submits: list[tuple[bytes, Submit, list[dict], bytes]] = []   # validated, not applied yet (see submit)
        self.bad_messages = 0
        # CURVE on: ROUTER identity -> device id, set by a Register the Guard admitted (a CURVE peer's identity is
        # chosen by the ROUTER, not the device id). None when open: there the identity is the device id.
        self.peers: dict[bytes, str] | None = None
        self.projects: Projects | None = None   # pushes, listing and removal of projects (set by the master)
        self.fetches: Fetches | None = None     # workers' fetches of project versions (set by the master)
        self.syncs: Syncs | None = None         # projects sync, and what workers' caches hold (set by the master)
        self.alerts: Alerts | None = None       # alert rules (set by the master)

    def reply_error(self, identity: bytes, req_id: int, code: str, message: str) -> None:
        self.board.turn.error(identity, req_id, code, message)

    def on_router(self, identity: bytes, msg: Message, now_mono: float, now: float) -> None:
        handler = getattr(self, "handle_" + type(msg).__name__.lower(), None)
        if handler is None:
            raise ProtocolError(f"{type(msg).__name__} is not a request the master accepts")
        if self.submits and not isinstance(msg, Submit):
            self.apply_submits(now)   # a watch or cancel right after a submit must find its tasks
        handler(identity, msg, now_mono, now)

    def worker(self, identity: bytes, now_mono: float) -> DeviceEntry | None:
        """The registered device behind a worker message, or None after telling it to register again."""
        device_id = identity.decode("utf-8", "replace") if self.peers is None else self.peers.get(identity, "")
        device = self.board.fleet.devices.get(device_id)
        if device is None or not device.registered or device.identity != identity:
            self.reply_error(identity, 0, "not_registered", "register first: this master does not know the device")
            return None
        device.last_seen = now_mono
        return device

    # ------------------------------------------------------------ workers

    def handle_register(self, identity: bytes, msg: Register, now_mono: float, now: float) -> None:
        if self.peers is None and identity != msg.device_id.encode():
            raise ProtocolError(f"Register: device_id {msg.device_id!r} does not match the socket identity")
        running = msg.running
        reported = set(running) | set(msg.outbox)
        info = {"device_id": msg.device_id, "name": msg.name, "hostname": msg.hostname, "os": msg.os,
                "python_version": msg.python_version, "python_executable": msg.python_executable,
                "tags": list(msg.tags), "concurrency": msg.concurrency, "pid": msg.pid, "version": msg.version,
                "weight": msg.weight, "python_envs": msg.python_envs}
        disowned = self.board.register(identity, info, msg.credit, reported, running, now_mono, now)
        s = self.settings
        self.board.turn.ack(identity, RegisterAck(self.board.incarnation, s["pub_port"], s["heartbeat_port"],
                                                s["heartbeat_interval_s"], s["device_timeout_s"], disowned).encode())

    def handle_output(self, identity: bytes, msg: Output, now_mono: float, now: float) -> None:
        device = self.worker(identity, now_mono)
        if device is not None:
            self.board.append_output(device, msg.chunks)

    def handle_results(self, identity: bytes, msg: Results, now_mono: float, now: float) -> None:
        # Every result was checked whole at decode, before anything here changes state.
        device = self.worker(identity, now_mono)
        if device is None:
            return
        if msg.started:
            self.board.mark_started(device, msg.started, now)
        acked = []
        for result in msg.results:
            if self.board.record_result(device, result, now_mono, now):
                acked.append([result["id"], result["attempt"]])
        if msg.returned:
            take_back(self.board, device, msg.returned, now)
        if msg.leaving and not device.leaving:
            logger.info("device=%s is stopping: nothing more is sent to it", device.device_id)
            device.leaving = True
        # A stopping worker frees the slots of the attempts it stopped; their tasks must go elsewhere.
        device.credit = 0 if device.leaving else device.credit + msg.credit
        if acked:   # sent after the commit, riding on this turn's Tasks to the worker if there are any
            self.board.turn.ack_results(identity, acked)

    def on_heartbeat(self, msg: Heartbeat, now_mono: float, now: float) -> None:
        running, held = msg.running, msg.held
        device = self.board.fleet.devices.get(msg.device_id)
        if device is None or not device.registered or msg.incarnation != self.board.incarnation:
            # PULL cannot answer; the ROUTER can, if the worker's DEALER is connected.
            to = device.identity if device is not None else msg.device_id.encode()
            self.reply_error(to, 0, "not_registered", "register again")
            return
        self.board.heartbeat(device, running, held, msg.metrics, msg.sent_at, msg.commands, now_mono, now,
                               0.5 * self.settings["heartbeat_interval_s"])
        if self.syncs is not None and msg.projects is not None:
            self.syncs.report(device.device_id, msg.projects)

    # ------------------------------------------------------------ clients

    def handle_submit(self, identity: bytes, msg: Submit, now_mono: float, now: float) -> None:
        if len(msg.tasks) > MAX_TASKS_PER_SUBMIT:
            self.reply_error(identity, msg.req_id, "too_large",
                             f"{len(msg.tasks)} tasks in one submit; at most {MAX_TASKS_PER_SUBMIT}, split the batch")
            return
        try:
            specs = validate_batch(msg.tasks, msg.common)
            if any(spec["project"] for spec in specs):
                self._pin(specs)
        except ProtocolError as e:
            self.reply_error(identity, msg.req_id, "bad_request", str(e))
            return
        except ZmqgridError as e:   # not_found: an unknown project or version; bad_request: an ambiguous one
            self.reply_error(identity, msg.req_id, e.code, str(e))
            return
        # Refused ones never get here: a refusal leaves the turn's other Submits (and their runs) as they are
        self.submits.append((identity, msg, specs, self.account or identity))

    def _pin(self, specs: list[dict]) -> None:
        """Each spec's `project` as NAME@<full version>, resolved now (docs/architecture.md, Projects, "Pinning at
        submit"): raises for the first that names no project or version, before anything of the Submit is kept."""
        if self.projects is None:
            raise ProtocolError("this master keeps no projects")
        pinned: dict[str, str] = {}   # the tasks of a Submit mostly name one project: resolved once
        for spec in specs:
            ref = spec["project"]
            if ref is not None:
                full = pinned.get(ref)
                if full is None:
                    full = pinned[ref] = self.projects.pin(ref)
                spec["project"] = full

    def _pinned(self) -> Counter:
        """NAME@VERSION -> how many unfinished tasks pin it (a walk over them: for a project's removal only)."""
        return Counter(need.project for entry in self.board.tasks.values() if (need := entry.need).project)

    def apply_submits(self, now: float) -> None:
        """Submit the turn's validated Submits, in the order they came, after one look in the ledger for the ids
        it already holds (a re-sent Submit's): one SELECT per 500 ids instead of one per Submit. A client's
        consecutive Submits are staged as one (see `_runs`), each still answered as if alone."""
        submits, self.submits = self.submits, []
        if not submits:
            return
        tasks = self.board.tasks
        unseen = [spec["id"] for _, _, specs, _ in submits for spec in specs if spec["id"] not in tasks]
        try:
            looked_up = (set(unseen), self.board.store.existing_ids(unseen))
        except Exception as e:   # StoreError, or a bug: the master goes on and every Submit is answered
            if isinstance(e, StoreError):
                logger.error("ledger read failed: %s", e)
            else:
                logger.exception("looking up %d submitted ids failed", len(unseen))
            for identity, msg, _, _ in submits:
                self.reply_error(identity, msg.req_id, "unavailable", str(e))
            return
        for run in _runs(submits):
            if len(run) == 1 or not self._submit_together(run, now, looked_up):
                for identity, msg, specs, account in run:
                    self._submit_one(identity, msg, specs, account, now, looked_up)

    def _submit_together(self, run: list[tuple], now: float, looked_up: tuple[set[str], set[str]]) -> bool:
        """Stage a run of one client's Submits as one; False if nothing was staged and each must go alone."""
        identity, first, _, account = run[0]
        specs = [spec for _, _, run_specs, _ in run for spec in run_specs]
        try:
            ids = self.board.submit(specs, identity, first.notify, now, account=account, looked_up=looked_up)
        except Exception:
            # The cap, a failed look-up or a task that cannot be staged all raise in Board.submit before it
            # stages or queues anything (keep it so: the fallback counts on it): alone, each gets its own answer.
            return False
        start = 0
        for _, msg, run_specs, _ in run:
            self._ack(identity, msg, ids[start:start + len(run_specs)])
            start += len(run_specs)
        return True

    def _submit_one(self, identity: bytes, msg: Submit, specs: list[dict], account: bytes, now: float,
                    looked_up: tuple[set[str], set[str]]) -> None:
        try:
            ids = self.board.submit(specs, identity, msg.notify, now, account=account, looked_up=looked_up)
        except LimitExceeded as e:   # checked before anything is staged: nothing of this submit is inserted
            self.reply_error(identity, msg.req_id, "too_large", str(e))
            return
        except StoreError as e:      # the look-up of a fan-out's ids failed: nothing of this submit is staged
            logger.error("ledger read failed: %s", e)
            self.reply_error(identity, msg.req_id, "unavailable", str(e))
            return
        except Exception:  # a bug must not stop the master, nor leave the other Submits unanswered
            logger.exception("submit failed for peer %s", identity.hex())
            self.reply_error(identity, msg.req_id, "bad_request", "the master could not handle this")
            return
        self._ack(identity, msg, ids)

    def _ack(self, identity: bytes, msg: Submit, ids: list[str]) -> None:
        if msg.batch_acks:
            self.board.turn.ack_submit(identity, msg.req_id, ids)
        else:
            self.board.turn.ack(identity, Reply(msg.req_id, {"ids": ids}).encode())

    # ------------------------------------------------------------ projects

    def handle_projectpush(self, identity: bytes, msg: ProjectPush, now_mono: float, now: float) -> None:
        self._project(identity, msg.req_id, lambda by: self.projects.push(msg, self.account or identity, by,
                                                                          now_mono, now))

    def handle_projectchunk(self, identity: bytes, msg: ProjectChunk, now_mono: float, now: float) -> None:
        self._project(identity, msg.req_id, lambda by: self.projects.chunk(msg, self.account or identity, by,
                                                                           now_mono, now))

    def handle_projectfetch(self, identity: bytes, msg: ProjectFetch, now_mono: float, now: float) -> None:
        device = self.worker(identity, now_mono)
        if device is None:
            return
        try:
            if self.fetches is None:
                raise ProtocolError("this master keeps no projects")
            self.fetches.admit(identity, device, self.board.tasks, msg, now_mono)   # answered by Fetches.serve
        except ZmqgridError as e:   # forbidden, not_found, too_large
            self.reply_error(identity, msg.req_id, e.code, str(e))

    def _project(self, identity: bytes, req_id: int, call) -> None:
        """Run a Projects call; an answer that reports this turn's writes goes after the commit."""
        by = self.account.decode()[:12] if self.keyring is not None and self.account else "open"
        try:
            if self.projects is None:
                raise ProtocolError("this master keeps no projects")
            data, durable = call(by)
        except ZmqgridError as e:   # too_large, not_found, bad_request, unavailable: each type carries its code
            self.reply_error(identity, req_id, e.code, str(e))
            return
        frames = Reply(req_id, data).encode()
        (self.board.turn.ack if durable else self.board.turn.send)(identity, frames)

    def handle_query(self, identity: bytes, msg: Query, now_mono: float, now: float) -> None:
        if msg.what == "projects":
            self._project(identity, msg.req_id, lambda by: (self.projects.query(msg.params,
                                                                                paging.budget(msg.params)), False))
            return
        try:
            if msg.what == "schedules" and self.schedules is not None:
                data = self.schedules.rows()
            elif msg.what == "alerts" and self.alerts is not None:
                data = self.alerts.rows(msg.params)
            else:
                data = queries.answer(self.board, msg.what, msg.params, now_mono, self.settings)
                if msg.what == "status" and self.keyring is not None:
                    pending = self.keyring.pending_count_for(self.account.decode() if self.account else None)
                    if pending is not None:
                        data["pending_keys"] = pending
        except ZmqgridError as e:
            self.reply_error(identity, msg.req_id, e.code, str(e))   # not_found, ambiguous, unavailable, bad_request
            return
        self.board.turn.send(identity, Reply(msg.req_id, data).encode())

    def handle_control(self, identity: bytes, msg: Control, now_mono: float, now: float) -> None:
        params = msg.params
        if msg.action == "project" and params.get("op") in ("remove", "sync"):
            self._project(identity, msg.req_id, lambda by: self.projects.remove(params, self._pinned)
                          if params["op"] == "remove" else self.syncs.sync(params, now_mono))
            return
        book = {"schedule": self.schedules, "alert": self.alerts}.get(msg.action)
        if book is not None:
            try:
                self.board.turn.ack(identity, Reply(msg.req_id, book.control(params, now)).encode())
            except ZmqgridError as e:   # not_found, bad_request: each error type carries its code
                self.reply_error(identity, msg.req_id, e.code, str(e))
            return
        if msg.action in ("drain", "resume", "shutdown", "reload"):
            devices = params.get("devices")   # a list of device ids, if present (the message's schema)
            if not devices:
                self.reply_error(identity, msg.req_id, "bad_request", f"{msg.action}: 'devices' must list device ids")
                return
            outcome = {d: self.board.fleet.control_device(msg.action, d, now_mono) for d in devices}
            self.board.turn.ack(identity, Reply(msg.req_id, outcome).encode())
            return
        if msg.action in ("cancel", "watch"):
            try:
                room = paging.budget(params)
                if msg.action == "cancel" and "ids" not in params:
                    # A bulk cancel takes at most a reply's worth of tasks a request; the client asks until none
                    # is left (a task being cancelled is not selected again).
                    limit = max(1, min(MAX_IDS_PER_REQUEST, room // CANCEL_LINE_BYTES))
                    params = dict(params, ids=controls.select_ids(self.board, params.get("state"), params.get("tag"), limit))
            except ZmqgridError as e:
                self.reply_error(identity, msg.req_id, "bad_request", str(e))
                return
        ids = params.get("ids")   # a list of task ids, if present (the message's schema)
        if ids is None:
            self.reply_error(identity, msg.req_id, "bad_request", f"{msg.action}: 'ids' must be a list of task ids")
            return
        if msg.action in ("cancel", "requeue"):
            self.board.turn.ack(identity, Reply(msg.req_id, self._act_on_refs(msg.action, ids, now_mono, now)).encode())
        elif msg.action == "watch":
            self._watch(identity, msg.req_id, ids, room)
        else:
            self.reply_error(identity, msg.req_id, "bad_request", f"unknown action {msg.action!r}; allowed: cancel, requeue, watch, drain, resume, shutdown, reload, schedule, alert")

    def _act_on_refs(self, action: str, refs: list[str], now_mono: float, now: float) -> dict[str, str]:
        """Cancel or re-queue the task each reference names (docs/architecture.md, "Task references"): one line
        per reference, keyed by the id it resolved to, else by itself with `not found` or `ambiguous: IDS`."""
        board = self.board
        outcome: dict[str, str] = {}
        for ref in refs:
            try:
                task_id = queries.resolve_task(board, ref)
            except AmbiguousTaskId as e:
                outcome[ref] = f"ambiguous: {e.candidates}"
                continue
            except TaskNotFound:
                outcome[ref] = "not found"
                continue
            if task_id in outcome:   # named twice (an id and its prefix): acted on once
                continue
            if action == "requeue":
                outcome[task_id] = controls.reopen(board, task_id, now_mono, now)
                continue
            state = controls.cancel(board, task_id, now_mono, now)
            if state == "unknown":   # final: in the ledger, or ended in this very turn
                found = board.turn.finished.get(task_id) or board.store.get_task(task_id)
                state = f"already {found['state']}" if found else "not found"
            outcome[task_id] = state
        return outcome

    def _watch(self, identity: bytes, req_id: int, ids: list[str], room: int) -> None:
        """Unfinished tasks notify `identity` when they end; finished ones are answered now, as many summaries as
        fit the client's budget (a result's value may take 4 MiB), the rest named in `later` to be asked again."""
        finished: dict[str, dict | None] = {}
        later: list[str] = []
        used = 64
        for task_id in ids:
            entry = self.board.tasks.get(task_id)
            if entry is not None:
                if identity not in entry.notify:
                    entry.notify = (*entry.notify, identity)
                continue
            if later:
                later.append(task_id)
                continue
            if task_id in self.board.turn.finished:
                # It ended in this very turn: the ledger shows that only after this turn's commit.
                summary = self.board.turn.finished[task_id]
            else:
                row = self.board.store.get_task(task_id)
                summary = queries.summary(row) if row else None
            cost = paging.size(summary) + len(task_id) + 8
            if used + cost > room:
                if finished:
                    later.append(task_id)
                    continue
                # Alone and still too big for this client: its value is left out, and the summary says so (a value
                # cut to fit would read as the task's real value)
                summary = paging.fit(dict(summary, value=None, value_left_out=True), room - used)
            finished[task_id] = summary
            used += cost
        data: dict = {"finished": finished}
        if later:
            data["later"] = later
        self.board.turn.send(identity, Reply(req_id, data).encode())
