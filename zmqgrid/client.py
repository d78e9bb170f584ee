"""Client: the Python API (and what the CLI and dashboard use) to submit, inspect, wait for and cancel tasks."""
from __future__ import annotations

import itertools
import time
from typing import Any, Callable, Iterable, Iterator

import zmq

from . import handshake
from .config import Config, load_config
from .errors import MasterUnavailable, ProtocolError, SubmitRefused, UsageError, from_wire
from .finishing import as_finished
from .follow import Followed, follow, read_output
from .model import FINAL_STATES, build_spec, check_call_value, compact_spec, factor_batch, new_task_id
from .protocol import (DEFAULT_MAX_MESSAGE_BYTES, MAX_IDS_PER_REQUEST, Control, Error, Finished, Query, Reply,
                       Submit, SubmitAcks, decode)
from .security import client_curve
from .transport import Curve, connect, make_socket, send_frames

DEFAULT_MASTER = "tcp://127.0.0.1:8000"


class Client:
    """A DEALER connection to the master's ROUTER. Not thread-safe: one Client per thread."""

    def __init__(self, master_url: str = DEFAULT_MASTER, *, timeout_s: float = 5.0,
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES, curve: Curve | None = None) -> None:
        """`curve`: this client's keys and the master's public key, for a master with CURVE on (`from_config`
        finds them as the CLI does)."""
        self.master_url = master_url
        self.timeout_s = timeout_s
        self.max_message_bytes = max_message_bytes   # told to the master, which keeps its answers under it
        self.curve = curve
        self.ctx = zmq.Context()
        self.sock = make_socket(self.ctx, zmq.DEALER, max_message_bytes=max_message_bytes, sndhwm=0, rcvhwm=0,
                                curve=curve)
        connect(self.sock, master_url)
        self._req_ids = itertools.count(1)
        self.finished: dict[str, dict] = {}      # Finished notifications not yet consumed
        self.notified: set[str] = set()          # ids submitted with notify: their Finished will come unasked

    @classmethod
    def from_config(cls, config: Config | None = None, *, timeout_s: float = 5.0) -> Client:
        """A Client as the CLI makes one: the master's address and, with `curve` on, this machine's client key and
        the master's public key, from `config`; by default the master config as a client reads it
        (config/distribution_master.json < ZMQGRID_* environment)."""
        config = config or load_config("master")
        return cls(config.master_url, timeout_s=timeout_s, curve=client_curve(config))

    def close(self) -> None:
        self.sock.close(0)
        self.ctx.term()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ request/reply

    def _send(self, msg: Any) -> None:
        send_frames(self.sock, msg.encode())

    def _receive(self, timeout_s: float) -> Any | None:
        """One message from the master, or None on timeout. Finished notifications are stored as they pass."""
        if not self.sock.poll(int(timeout_s * 1000)):
            return None
        msg = decode(self.sock.recv_multipart())
        if isinstance(msg, Finished):
            for summary in msg.tasks:
                if isinstance(summary, dict) and summary.get("state") in FINAL_STATES:
                    self.finished[summary.get("id")] = summary
        return msg

    def _wait_reply(self, req_id: int, timeout_s: float | None = None, about: str = "task") -> Any:
        deadline = time.monotonic() + (self.timeout_s if timeout_s is None else timeout_s)
        while True:
            left = deadline - time.monotonic()
            msg = self._receive(max(left, 0)) if left > 0 else None
            if msg is None:
                waited = self.timeout_s if timeout_s is None else timeout_s
                raise self._unanswered(f"did not answer within {waited:g}s")
            if isinstance(msg, Reply) and msg.req_id == req_id:
                return msg.data
            if isinstance(msg, Error) and msg.req_id in (req_id, 0):
                raise from_wire(msg.code, msg.message, about)

    def _unanswered(self, what: str, more: str = "") -> MasterUnavailable:
        """The error for a master that stayed silent, with the cause a probe connection sees (handshake.probe)."""
        why = handshake.probe(self.ctx, self.master_url, self.curve)
        error = MasterUnavailable(f"the master at {self.master_url} {what}: {why.reason}", why.hint + more)
        error.command = why.command
        return error

    def request(self, msg_type: type, *args: Any, timeout_s: float | None = None, about: str = "task") -> Any:
        """Send a Query or Control and wait for its answer; `about` names what a not_found refers to (from_wire)."""
        req_id = next(self._req_ids)
        self._send(msg_type(req_id, *args))
        return self._wait_reply(req_id, timeout_s, about)

    # ------------------------------------------------------------ the API

    def submit(self, tasks: dict | Iterable[dict], *, notify: bool = False, batch_size: int = 1000,
               window: int = 8) -> list[str]:
        """Submit tasks (specs from `build_spec`); returns their ids once the master has committed them.

        Batches of `batch_size` go out with up to `window` unacknowledged at once. `tasks` may be a generator: it is
        read a batch at a time as they go out, so building the next tasks overlaps the master committing the
        previous ones, and a million tasks need not be in memory at once. If it raises part-way, the batches sent
        before stay submitted (their ids are lost to the caller with the exception; resubmitting them is safe).
        If the master refuses a batch, no further batch is sent, the answers of those in flight are awaited, and
        SubmitRefused is raised with the ids that were committed (`.submitted`).
        """
        specs = iter([tasks] if isinstance(tasks, dict) else tasks)

        def batches() -> Iterator[tuple[dict, list]]:
            while chunk := list(itertools.islice(specs, batch_size)):
                for spec in chunk:
                    if isinstance(spec, dict) and "id" not in spec:   # else the master's to refuse, with a clear error
                        spec["id"] = new_task_id()
                # A batch of calls of one function goes as their shared part once and each call's id and arguments.
                yield factor_batch([compact_spec(s) if isinstance(s, dict) else s for s in chunk])
        return self.send_batches(batches(), notify=notify, window=window)

    def map(self, python: str, arguments: Iterable[list | tuple], *, notify: bool = False, batch_size: int = 1000,
            window: int = 8, **options: Any) -> list[str]:
        """Submit one call of `python` ('module:function') per item of `arguments`, each item the call's
        positional arguments (like itertools.starmap); `options` are `build_spec`'s (timeout, retries, tag,
        priority, kwargs shared by every call, ...). Returns the ids, in order, once the master has committed them.

        The fast way to queue many calls: each batch carries the options once, so neither side checks them per call.
        """
        if "args" in options or "id" in options:
            raise UsageError("map gives each call a new id and takes its arguments from `arguments`",
                             "pass e.g. client.map('mod:fn', [(1,), (2,)])")
        common = compact_spec(build_spec(python=python, **options))
        del common["id"]
        items = list(arguments)
        for n, item in enumerate(items):   # all checked before anything is sent: a bad item submits nothing
            if not isinstance(item, (list, tuple)):
                raise UsageError(f"each item of map's arguments must be a list or tuple of positional arguments, "
                                 f"got {type(item).__name__}", "for one argument per call, wrap it: [(x,) for x in values]")
            try:
                check_call_value("args", item)
            except ProtocolError as e:
                raise UsageError(f"item {n} of map's arguments: {e.message}") from None

        def batches() -> Iterator[tuple[dict, list]]:
            for i in range(0, len(items), batch_size):
                yield common, [{"id": new_task_id(), "args": list(item)} for item in items[i:i + batch_size]]
        return self.send_batches(batches(), notify=notify, window=window)

    def send_batches(self, batches: Iterable[tuple[dict, list]], *, notify: bool = False, window: int = 8) -> list[str]:
        """Send Submits of (common, tasks), as model.factor_batch makes them, each task with its id, with up to
        `window` unacknowledged; the ids once all are committed (refusals: `submit`). Each batch is read from
        `batches` just before it is sent, while the master commits the ones before it."""
        batches = iter(batches)
        pending: dict[int, int] = {}
        ids: list[list[str]] = []
        batch = next(batches, None)
        following = next(batches, None)
        # With more than one batch in flight, the master may answer a turn's worth of them in one SubmitAcks;
        # a single batch goes in the form every master knows.
        batch_acks = window > 1 and following is not None
        refusal: Error | None = None   # the first refused Submit: nothing more is sent, the rest are awaited
        while (batch is not None and refusal is None) or pending:
            while batch is not None and refusal is None and len(pending) < window:
                req_id = next(self._req_ids)
                common, tasks = batch
                if notify:
                    self.notified.update(t["id"] for t in tasks if isinstance(t, dict) and "id" in t)
                self._send(Submit(req_id, tasks, notify, common, batch_acks))
                pending[req_id] = len(ids)
                ids.append([])
                batch, following = following, next(batches, None)
            msg = self._receive(self.timeout_s)
            if msg is None:
                raise self._unanswered(f"did not acknowledge the submission within {self.timeout_s:g}s",
                                       "; resubmitting is safe")
            if isinstance(msg, SubmitAcks):
                for req_id, got in msg.pairs():
                    if req_id in pending:
                        ids[pending.pop(req_id)] = got
            elif isinstance(msg, Reply) and msg.req_id in pending:
                ids[pending.pop(msg.req_id)] = msg.data["ids"]
            elif isinstance(msg, Error) and msg.req_id in pending:
                del pending[msg.req_id]
                refusal = refusal or msg
            elif isinstance(msg, Error) and msg.req_id == 0:   # not tied to one Submit: nothing to wait for
                raise from_wire(msg.code, msg.message)
        submitted = [i for chunk in ids for i in chunk]
        if refusal is not None:
            note = f" ({len(submitted)} tasks of the other batches were committed)" if submitted else ""
            raise SubmitRefused(refusal.code, refusal.message + note, submitted)
        return submitted

    def status(self, timeout_s: float | None = None) -> dict:
        return self.request(Query, "status", {}, timeout_s=timeout_s)

    def tasks(self, state: str | None = None, *, limit: int = 50, offset: int = 0, device: str | None = None,
              tag: str | None = None) -> list:
        """Up to `limit` tasks from `offset`, newest first; long texts of each row are cut (`task` has them whole).
        Asked for in as many answers as the master needs to keep each under this client's max_message_bytes."""
        params = {k: v for k, v in (("state", state), ("device", device), ("tag", tag)) if v is not None}
        return self._pages("tasks", params, offset, limit)

    def task(self, task_id: str) -> dict:
        return self.request(Query, "task", {"id": task_id, "max_bytes": self.max_message_bytes})

    def logs(self, task_id: str, attempt: int | None = None) -> dict:
        """A task's stdout and stderr, whole: asked for again from where an answer ended until none is left."""
        return read_output(self, task_id, attempt)

    def metrics(self) -> dict:
        """What `/metrics` shows, compact (docs/architecture.md, "What `metrics` and `samples` answer")."""
        answer = more = self.request(Query, "metrics", {})
        while more["next_offset"] is not None:   # more than 5,000 devices
            answer["devices"] += (more := self.request(Query, "metrics", {"offset": more["next_offset"]}))["devices"]
        return answer

    def samples(self, device: str, limit: int = 60) -> list:   # its newest `limit` (<= 600), oldest first
        return self.request(Query, "samples", {"device": device, "limit": limit}, about="device")

    def devices(self) -> list:
        """Every device; a row's long texts are cut."""
        return self._pages("devices", {}, 0, None)

    def _pages(self, what: str, params: dict, offset: int, limit: int | None) -> list:
        """The rows of a paged query (docs/architecture.md, "Replies are paged"): `limit` of them (all if None)
        from `offset`, following `next_offset` from answer to answer. A master older than paging answers a list."""
        rows: list = []
        while limit is None or len(rows) < limit:
            asked = {**params, "offset": offset, "page": True, "max_bytes": self.max_message_bytes}
            if limit is not None:
                asked["limit"] = min(limit - len(rows), 1000)
            got = self.request(Query, what, asked)
            if isinstance(got, list):
                return rows + got
            rows += got["rows"]
            if got["next_offset"] is None or not got["rows"]:
                break
            offset = got["next_offset"]
        return rows

    def cancel(self, task_ids: list[str] | None = None, *, state: str | None = None, tag: str | None = None) -> dict:
        """Cancel by ids, or every unfinished task in `state` and/or requiring `tag`: {id: outcome}."""
        if task_ids is not None:
            return self._control_ids("cancel", list(task_ids))
        selector = {k: v for k, v in (("state", state), ("tag", tag)) if v is not None}
        out: dict = {}
        while True:   # the master cancels a reply's worth a request and never selects a task twice
            reply = self.request(Control, "cancel", {**selector, "max_bytes": self.max_message_bytes})
            out.update(reply)
            if not reply:
                return out

    def _control_ids(self, action: str, ids: list[str]) -> dict:
        """A Control over task ids, sent in requests of at most MAX_IDS_PER_REQUEST ids (what the master takes in
        one), the replies merged; a watch asks again for the finished tasks its reply had no room for (`later`)."""
        out: dict = {}
        # At most what the master takes in one request, and few enough that the answer (a line per id) fits this
        # client's own message limit
        step = max(1, min(MAX_IDS_PER_REQUEST, self.max_message_bytes // 256))
        for start in range(0, len(ids), step) or [0]:   # no ids: still asked once
            chunk = ids[start:start + step]
            while True:
                reply = self.request(Control, action, {"ids": chunk, "max_bytes": self.max_message_bytes})
                if action != "watch":
                    out.update(reply)
                    break
                out.setdefault("finished", {}).update(reply["finished"])
                chunk = reply.get("later") or []
                if not chunk:
                    break
        return out

    def control_devices(self, action: str, device_ids: list[str]) -> dict:
        """drain, resume or shutdown devices: {device id: what happened}."""
        return self.request(Control, action, {"devices": list(device_ids)})

    def schedule_add(self, name: str, cron: str, spec: dict, missed: str = "run_once") -> dict:
        """Fire `spec` (from `build_spec`; its id is dropped) at every tick of `cron`, in the master's local time.

        `missed`: what to do with ticks that passed while the master was down: "run_once" or "skip".
        Returns the schedule as `schedules()` lists it.
        """
        spec = {k: v for k, v in spec.items() if k != "id"}
        return self._schedule("add", name, cron=cron, spec=spec, missed=missed)

    def schedule_remove(self, name: str) -> dict:
        return self._schedule("remove", name)

    def schedule_pause(self, name: str) -> dict:
        return self._schedule("pause", name)

    def schedule_resume(self, name: str) -> dict:
        """Go on from the next tick after now; ticks that passed while paused are not fired."""
        return self._schedule("resume", name)

    def schedules(self) -> list:
        """Every schedule: name, cron, missed, state (active|paused), next_at, last_fired_at, fired_count, spec."""
        return self.request(Query, "schedules", {})

    def _schedule(self, op: str, name: str, **params: Any) -> dict:
        return self.request(Control, "schedule", {"op": op, "name": name, **params}, about="schedule")

    def alert_add(self, name: str, on: str | list[str], *, webhook: str | None = None, command: str | None = None,
                  tags: str | list[str] | None = None, pattern: str | None = None, template: str = "json") -> dict:
        """Add an alert rule (docs/architecture.md, Alerts): events `on` (failed, timed_out, quarantined, offline,
        revoked) of tasks or devices with every one of `tags` and a name matching the glob `pattern`, sent to
        `webhook` (an http or https URL) or run as `command`; `template` is json, slack, dingtalk, wecom, feishu, or
        a custom template's JSON text. Returns the rule as `alerts()` lists it."""
        params = {"on": on if isinstance(on, str) else ",".join(on), "template": template,
                  "tags": [t for t in tags.split(",") if t] if isinstance(tags, str) else tags, "pattern": pattern,
                  "webhook": webhook, "command": command}
        return self._alert("add", name, **{k: v for k, v in params.items() if v is not None})

    def alert_remove(self, name: str) -> dict:
        return self._alert("remove", name)

    def alert_test(self, name: str) -> dict:
        """Queue a sample event for one rule: {name, state, seq}; `alert_event(seq)` tells how it went."""
        return self._alert("test", name)

    def alerts(self) -> list:
        """Every alert rule with its delivery counters: pending, delivered, failed, dropped, last_error, ..."""
        return self.request(Query, "alerts", {})

    def alert_event(self, seq: int) -> dict:
        """One alert event's outcome: {seq, rule, event, attempts, delivered_at, last_error}."""
        return self.request(Query, "alerts", {"seq": seq}, about="alert")

    def _alert(self, op: str, name: str, **params: Any) -> dict:
        return self.request(Control, "alert", {"op": op, "name": name, **params}, about="alert")

    def push_project(self, folder: str, name: str | None = None) -> dict:
        """Pack `folder` and store it on the master as project `name` (default: the folder's name): {name, version,
        size, files, have, sent_bytes}; the same content gives the same version, and is not sent again."""
        from .projects.push import push_project
        return push_project(self, folder, name)

    def projects(self, name: str | None = None) -> list:
        """Every project with its latest version; with `name`, that project's versions, newest first."""
        return self.request(Query, "projects", {} if name is None else {"name": name}, about="project")

    def remove_project(self, name: str, version: str | None = None) -> dict:
        """Remove a project, or one version of it (the full hash or a unique prefix): {name, removed}."""
        params = {"op": "remove", "name": name, **({"version": version} if version else {})}
        return self.request(Control, "project", params, about="project")

    def sync_project(self, ref: str, *, tags: Iterable[str] = (), rebuild: bool = False, timeout_s: float = 900.0,
                     progress: Callable[[str, str, str], None] | None = None) -> dict:
        """Fetch and build NAME[@VERSION] (default: the latest) on every online worker that runs projects and has
        `tags`, and wait until each is ready or failed, or `timeout_s`: see projects.sync.sync_project."""
        from .projects.sync import sync_project
        return sync_project(self, ref, tags, rebuild, timeout_s, progress)

    def follow(self, task_id: str, poll_s: float = 0.3, timeout_s: float | None = None, *,
               first_attempt: int = 1, stopped: Callable[[], bool] | None = None) -> Iterator[Followed]:
        """Yield a task's output as it grows, attempt after attempt, until the task is final or `stopped()` is
        true (zmqgrid.follow)."""
        return follow(self, task_id, poll_s, timeout_s, first_attempt, stopped)

    def requeue(self, task_ids: list[str]) -> dict:
        """Queue final tasks (not done) again: {id: "queued" | "already <state>" | "not found"}."""
        return self._control_ids("requeue", list(task_ids))

    def wait(self, task_ids: Iterable[str], timeout_s: float | None = None, *, rewatch_s: float = 3.0) -> dict:
        """Block until every task is final; returns {id: summary}.

        Tasks submitted here with notify=True are simply awaited; others are watched. When nothing arrives for
        `rewatch_s`, the master is asked again (it may have restarted and forgotten who waits).
        """
        return dict(item for item in self.as_finished(task_ids, timeout_s, rewatch_s=rewatch_s) if item is not None)

    def as_finished(self, task_ids: Iterable[str], timeout_s: float | None = None, *, rewatch_s: float = 3.0,
                    tick_s: float | None = None) -> Iterator[tuple[str, dict] | None]:
        """Yield (id, summary) for each task as it becomes final, until every one has (`wait`, one at a time).

        With `tick_s`, also yield None every `tick_s` seconds: the caller's turn to do something else (say what is
        still waiting, give up). Its own requests meanwhile are fine: the Finished notices they receive are kept
        and yielded here.
        """
        return as_finished(self, task_ids, timeout_s, rewatch_s, tick_s)

    def run(self, task: dict, timeout_s: float | None = None) -> dict:
        """Submit one task and wait for it; returns its summary (state, exit_code, value, error)."""
        task_id = self.submit(task, notify=True)[0]
        return self.wait([task_id], timeout_s)[task_id]
