"""Hostile values in otherwise valid messages: shared by tests/test_hostile_values.py (every field once) and
tools/fuzz_long.py --hostile (long, random combinations).

A case is (message kind, path, hostile value): the path names one field of a valid message of that kind, at the
top (`Register.pid`) or inside it (`Results.results.0.error.message`, `Submit.tasks.0.env.K`). The value replaces
that field; everything else in the message stays valid, so the message gets past the frame checks and reaches
what would use the field. `encode(case)` gives the frames ([header, body]) to send.

The values (`HOSTILE`) are what a hostile peer sends first: the wrong type, 2^63 (one past SQLite's INTEGER),
-1, NaN, a value nested 1,000 deep (more than Python's recursion limit, less than msgpack's stack), 10 MB of text,
and control characters that forge log lines and drive terminals.
"""
from __future__ import annotations

import copy
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import psutil
import zmq

from zmqgrid import protocol as p
from zmqgrid.client import Client, build_spec
from zmqgrid.projects.messages import ProjectChunk, ProjectData, ProjectFetch, ProjectPush
from zmqgrid.transport import Curve

from .helpers import Harness, db_query, wait_until

DEEP = b"\x91" * 1000 + b"\xc0"          # [[[ ... [nil] ... ]]], 1,000 deep, as msgpack bytes
BIG = "A" * (10 * 1024 * 1024)             # 10 MB: below max_message_bytes (16 MiB), so it is delivered
CONTROL = "\x1b]0;owned\x07\x1b[2J\r\n2026-01-01 00:00:00 WARNING forged line\x00\u202e\x9b31m"


class Raw:
    """Bytes spliced into the packed message as they are (msgpack's own packer refuses nesting past 511)."""

    def __init__(self, data: bytes) -> None:
        self.data = data


def wrong_type(valid: Any) -> Any:
    """A value of another msgpack type than `valid`."""
    if isinstance(valid, bool):
        return "yes"
    if isinstance(valid, (int, float)):
        return "x"
    if isinstance(valid, str):
        return 7
    if isinstance(valid, list):
        return {"a": 1}
    if isinstance(valid, dict):
        return [1, 2]
    return [1]


HOSTILE: dict[str, Any] = {
    "wrong type": wrong_type,      # a function of the valid value
    "2^63": 1 << 63,
    "-1": -1,
    "NaN": float("nan"),
    "nested 1000": Raw(DEEP),
    "10 MB": BIG,
    "control characters": CONTROL,
}

RESULT = {"id": "TASK", "attempt": 1, "state": "done", "exit_code": 0, "value": [1, {"a": None}],
          "error": {"type": "E", "message": "m", "traceback": "t", "permanent": False}, "stdout": "out\n",
          "stderr": "err\n", "started_at": 1.7e9}
SHELL = {"kind": "shell", "command": "true", "timeout": 5.0, "retries": 0, "priority": 1, "tags": ["fz"],
         "name": "n", "cwd": "/tmp", "env": {"K": "v"}, "retry_backoff": 1.0, "limit_key": "site",
         "limit_concurrency": 2, "limit_per_minute": 30, "device": "fz1", "group": "g",
         "retry_on": ["OSError"], "no_retry_on": ["PermissionError"]}
PYTHON = {"kind": "python", "function": "zmqgrid.samples:noop", "args": [1], "kwargs": {"x": 1}}
# A task run once on every worker with the tag (only fz1 has it), and one that names a project nobody pushed.
FAN_OUT = {"id": "fz-all", "kind": "shell", "command": "true", "all": True, "tags": ["fz"]}
PROJECT = {"kind": "python", "function": "fz.main:run", "project": "nosuch"}
PYTHON_ENV = {"kind": "python", "function": "fz.main:run", "python_env": "nosuch"}   # no worker has it: it waits
# The shared part of a batch of calls (Client.map): the master validates it once and each call's keys apart.
CALLS = {"kind": "python", "function": "zmqgrid.samples:noop", "timeout": 5.0, "priority": 1, "tags": ["fz"],
         "retries": 0}
PAGE = {"page": True, "max_bytes": 1 << 20}   # what a client sends with every query it pages
SCRIPT = {"kind": "script", "source": "print(1)\n", "filename": "a.py", "args": ["-v"]}
SCHEDULE = {"op": "add", "name": "fz", "cron": "0 0 1 1 *", "spec": {"kind": "shell", "command": "true"},
            "missed": "skip"}
METRICS = {"cpu_percent": 1.5, "memory_percent": 20.0, "memory_available_mb": 100.0, "disk_percent": 50.0,
           "load_1m": 0.5, "load_5m": 0.4, "load_15m": 0.3, "cpu_count": 2, "memory_total_mb": 2048, "hostname": "h",
           "os": "Linux", "python_version": "3.11.7", "python_executable": "/usr/bin/python3", "prefetch": 2,
           "prefetch_adaptive": True}


def base_messages(device_id: str, incarnation: str) -> dict[str, p.Message]:
    """One valid message of each kind a peer sends the master (the ids and incarnation filled in per run)."""
    return {
        "Register": p.Register(device_id=device_id, name="fuzz worker", hostname="host", os="Linux",
                               python_version="3.11.7", python_executable="/usr/bin/python3", tags=["fz"],
                               concurrency=2, credit=2, running=[["TASK", 1]], outbox=[["TASK", 1]], pid=4242,
                               version="0.1.0", weight=1.0, python_envs=[["py39", "3.9.18", "/opt/py39/bin/python"]]),
        "Results": p.Results([dict(RESULT)], 1, [["TASK", 1]], returned=[["TASK", 1]]),
        "Output": p.Output([["TASK", 1, "stdout", "line\n"]]),
        "Heartbeat": p.Heartbeat(device_id=device_id, incarnation=incarnation, seq=1, running=[["TASK", 1]],
                                 held=[["TASK", 1]], metrics=dict(METRICS), sent_at=1.7e9, commands=[1],
                                 projects=[["0f" * 32, "cached", "failed", 1, "pip install exited with code 1"]]),
        "Submit": p.Submit(1, [dict(SHELL)], True, {}, False),
        "Submit(python)": p.Submit(1, [dict(PYTHON), dict(PYTHON)], False, {}, False),
        "Submit(script)": p.Submit(1, [dict(SCRIPT)], False, {}, False),
        "Submit(all)": p.Submit(1, [dict(FAN_OUT)], False, {}, False),
        "Submit(project)": p.Submit(1, [dict(PROJECT)], False, {}, False),
        "Submit(python_env)": p.Submit(1, [dict(PYTHON_ENV)], False, {}, False),
        "Submit(calls)": p.Submit(1, [{"args": [1]}, {"args": [2], "kwargs": {"x": 1}, "id": "fz-call-2"}], False,
                                  dict(CALLS), True),
        "Query(tasks)": p.Query(1, "tasks", {"state": "queued", "limit": 10, "offset": 0, "device": device_id,
                                             "tag": "fz", **PAGE}),
        "Query(devices)": p.Query(1, "devices", {"limit": 10, "offset": 0, **PAGE}),
        "Query(task)": p.Query(1, "task", {"id": "TASK", "max_bytes": 1 << 20}),
        "Query(logs)": p.Query(1, "logs", {"id": "TASK", "attempt": 1, "stdout_from": 0, "stderr_from": 0,
                                           "max_bytes": 1 << 20}),
        "Query(status)": p.Query(1, "status", {}),
        "Query(schedules)": p.Query(1, "schedules", {}),
        "Control(cancel)": p.Control(1, "cancel", {"ids": ["nosuch"], "max_bytes": 1 << 20}),
        "Control(cancel by tag)": p.Control(1, "cancel", {"state": "queued", "tag": "nosuch-tag",
                                                          "max_bytes": 1 << 20}),
        "Control(watch)": p.Control(1, "watch", {"ids": ["TASK"], "max_bytes": 1 << 20}),
        "Control(requeue)": p.Control(1, "requeue", {"ids": ["nosuch"]}),
        "Control(drain)": p.Control(1, "drain", {"devices": ["nosuch-device"]}),
        "Control(resume)": p.Control(1, "resume", {"devices": ["nosuch-device"]}),
        "Control(shutdown)": p.Control(1, "shutdown", {"devices": ["nosuch-device"]}),
        "Control(reload)": p.Control(1, "reload", {"devices": ["nosuch-device"]}),
        "Control(schedule pause)": p.Control(1, "schedule", {"op": "pause", "name": "fz"}),
        "Control(schedule)": p.Control(1, "schedule", dict(SCHEDULE)),
        "Control(project)": p.Control(1, "project", {"op": "remove", "name": "nosuch", "version": "ab" * 3}),
        "Control(project sync)": p.Control(1, "project", {"op": "sync", "name": "nosuch", "tags": ["fz"],
                                                          "rebuild": True}),
        "Query(projects)": p.Query(1, "projects", {"name": "nosuch", "version": "ab" * 3}),
        "ProjectPush": ProjectPush(1, "fz", "0f" * 32, 10, 1),
        "ProjectChunk": ProjectChunk(1, 1, 0, b"x"),
        "ProjectFetch": ProjectFetch(1, "0f" * 32, 0, 1 << 20),
        # Messages only the master sends: a peer sending them is refused, after their fields are decoded.
        "Tasks": p.Tasks([{"id": "TASK", "attempt": 1, "kind": "shell", "command": "true"}], [["TASK", 1]]),
        "Reply": p.Reply(1, {"ids": ["TASK"]}),
        "Error": p.Error(1, "bad_request", "no"),
        "ProjectData": ProjectData(1, "0f" * 32, 0, 1, b"x"),
    }


def paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path into a valid value: each field, each map value and the first item of each list, recursively."""
    out = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, item in value.items():
            out += paths(item, (*prefix, key))
    elif isinstance(value, list) and value:
        out += paths(value[0], (*prefix, 0))
    return out


def message_paths(msg: p.Message) -> list[tuple]:
    out = []
    for name in msg._names:
        out += paths(getattr(msg, name), (name,))
    return out


@dataclass(frozen=True)
class Case:
    kind: str          # a key of base_messages
    path: tuple        # (field name, key or index, ...)
    value: str         # a key of HOSTILE

    def __str__(self) -> str:
        return f"{self.kind}.{'.'.join(map(str, self.path))} = {self.value}"


def all_cases(messages: dict[str, p.Message]) -> list[Case]:
    return [Case(kind, path, value) for kind, msg in messages.items() for path in message_paths(msg)
            for value in HOSTILE]


def random_case(rng: random.Random, messages: dict[str, p.Message]) -> Case:
    kind = rng.choice(list(messages))
    return Case(kind, rng.choice(message_paths(messages[kind])), rng.choice(list(HOSTILE)))


def _placeholder(n: int) -> str:
    return f"\x00hostile-{n}\x00"


def encode(msg: p.Message, substitutions: list[tuple[tuple, Any]]) -> list[bytes]:
    """[header, body] of `msg` with each (path, value) substituted; `value` may be a function of the valid value
    or a Raw, which is spliced in as packed bytes."""
    fields = {name: copy.deepcopy(getattr(msg, name)) for name in msg._names}
    raws: dict[str, bytes] = {}
    for n, (path, value) in enumerate(substitutions):
        holder, key = fields, path[0]
        for step in path[1:]:
            holder, key = holder[key], step
        if callable(value):
            value = value(holder[key])
        if isinstance(value, Raw):
            raws[_placeholder(n)] = value.data
            value = _placeholder(n)
        holder[key] = value
    body = msgpack.packb([fields[name] for name in msg._names], use_bin_type=True)
    for placeholder, data in raws.items():
        body = body.replace(msgpack.packb(placeholder), data, 1)
    return [bytes([p.VERSION]) + msg.KIND, body]


def frames(case: Case, messages: dict[str, p.Message]) -> list[bytes]:
    return encode(messages[case.kind], [(case.path, HOSTILE[case.value])])


def with_task(messages: dict[str, p.Message], task_id: str, attempt: int) -> dict[str, p.Message]:
    """The messages with the placeholder TASK (and its attempt) replaced by a task really dispatched to the sender,
    so that hostile results, output and heartbeats reach the code that acts on a live attempt."""
    def fill(value: Any) -> Any:
        if value == "TASK":
            return task_id
        if isinstance(value, list):
            if len(value) in (2, 4) and value[0] == "TASK":
                return [task_id, attempt, *value[2:]]
            return [fill(v) for v in value]
        if isinstance(value, dict):
            out = {k: fill(v) for k, v in value.items()}
            if out.get("id") == task_id and "attempt" in out:
                out["attempt"] = attempt
            return out
        return value

    return {kind: type(msg)(**{name: fill(getattr(msg, name)) for name in msg._names})
            for kind, msg in messages.items()}


class FuzzWorker:
    """A raw DEALER with identity `fz1` registered as a worker: it holds one task dispatched to it (finishing any
    other it gets, like a worker that runs them at once) and sends hostile frames on the ROUTER or, for
    heartbeats, the PULL."""

    def __init__(self, url: str, heartbeat_port: int, device_id: str = "fz1", curve: Curve | None = None) -> None:
        self.device_id = device_id
        self.ctx = zmq.Context()
        self.dealer = self.ctx.socket(zmq.DEALER)
        if curve is None:
            self.dealer.setsockopt(zmq.IDENTITY, device_id.encode())   # open: the identity is the device id
        self.push = self.ctx.socket(zmq.PUSH)
        for sock in (self.dealer, self.push):
            sock.setsockopt(zmq.LINGER, 0)
            if curve is not None:   # CURVE: an accepted worker key, bound to this device id when it registers
                sock.curve_serverkey, sock.curve_publickey, sock.curve_secretkey = \
                    curve.server_key, curve.public, curve.secret
        self.dealer.connect(url)
        self.push.connect(f"tcp://127.0.0.1:{heartbeat_port}")
        self.incarnation = ""
        self.registered = False
        self.held: dict[str, int] = {}      # task id -> attempt: the live attempt hostile results refer to
        self.keep_next = False

    def close(self) -> None:
        self.dealer.close(0)
        self.push.close(0)
        self.ctx.term()

    def messages(self) -> dict[str, p.Message]:
        msgs = base_messages(self.device_id, self.incarnation)
        if self.held:
            task_id, attempt = next(iter(self.held.items()))
            msgs = with_task(msgs, task_id, attempt)
        return msgs

    def register(self) -> None:
        self.registered = False
        self.send_register()
        # behind up to a check's worth of hostile messages on the same connection, some of them 10 MB
        wait_until(lambda: self.pump(registering=True) or self.registered, 30, "fz1's RegisterAck")

    def send_register(self) -> None:
        reg = p.Register(device_id=self.device_id, name="fuzz worker", hostname="host", os="Linux",
                         python_version="3.11.7", python_executable="/usr/bin/python3", tags=["fz"], concurrency=4,
                         credit=4, running=[[t, a] for t, a in self.held.items()], outbox=[], pid=4242,
                         version="0.1.0", weight=1.0)
        self.dealer.send_multipart(reg.encode())

    def pump(self, registering: bool = False) -> bool:
        """Read what the master sent: finish the tasks not to be held. `registering`: register again when told
        to, as a worker does (a turn's RegisterAck goes out before its refusals, so the `not_registered` answer
        to a message sent before the Register can come after the ack)."""
        while self.dealer.poll(0):
            msg = p.decode(self.dealer.recv_multipart())
            if isinstance(msg, p.RegisterAck):
                self.incarnation, self.registered = msg.incarnation, True
                for task_id, _ in msg.cancel:
                    self.held.pop(task_id, None)
            elif isinstance(msg, p.Error) and msg.code == "not_registered":
                self.registered = False
                if registering:
                    self.send_register()
            elif isinstance(msg, p.Tasks):
                done = []
                for task in msg.tasks:
                    if self.keep_next and task.get("name") == "fz-target":
                        self.held = {task["id"]: task["attempt"]}
                        self.keep_next = False
                    else:
                        done.append({"id": task["id"], "attempt": task["attempt"], "state": "done"})
                self.dealer.send_multipart(p.Results(done, len(done), []).encode())
        return False

    def hold_a_task(self, client: Client) -> None:
        """Have the master dispatch a task to fz1, and keep it, unless one is held already."""
        if self.held:
            return
        self.register()   # it sends no heartbeats of its own: the master may have judged it offline meanwhile
        self.keep_next = True
        client.submit(build_spec(shell="true", device=self.device_id, name="fz-target"))
        wait_until(lambda: self.pump() or bool(self.held), 10, "a task dispatched to fz1")

    def send(self, substitutions: list[tuple[str, tuple, Any]]) -> None:
        """One message of a kind with each (kind, path, value) of `substitutions` (all of one kind) applied."""
        kind = substitutions[0][0]
        frames = encode(self.messages()[kind], [(path, value) for _, path, value in substitutions])
        (self.push if kind == "Heartbeat" else self.dealer).send_multipart(frames)


LIVE_KINDS = ("Results", "Output", "Heartbeat")   # their cases need an attempt dispatched to the sender


class HostileRun:
    """A real master in `folder` with a real worker `w1`, the FuzzWorker beside it, and a bystander client:
    `send(case)` sends one hostile message, `check()` says whether the master is alive and the bystander's tasks
    are still acknowledged and run, `findings()` what the run left in the ledger and the log. `secured`: CURVE on,
    the FuzzWorker speaking with the accepted worker key of `w2` (the bystander with an admin key)."""

    def __init__(self, folder: Path, secured: bool = False) -> None:
        self.harness = Harness(folder, secured=secured)
        self.fz: FuzzWorker | None = None
        try:
            self.harness.start_master()
            self.harness.start_worker("w1")
            self.client = self.harness.client(timeout_s=15)
            self.harness.wait_online(self.client, "w1")
            if self.harness.secured:
                self.fz = FuzzWorker(self.harness.url, self.harness.port + 2, "w2", self.harness.client_curve("w2"))
            else:
                self.fz = FuzzWorker(self.harness.url, self.harness.port + 2)
            self.fz.register()
        except BaseException:
            self.close()
            raise
        self.master = psutil.Process(self.harness.master.pid)
        self.rss_before = self.master.memory_info().rss

    def close(self) -> None:
        if self.fz is not None:
            self.fz.close()
        self.harness.stop()

    def send(self, cases: list[Case]) -> None:
        if cases[0].kind in LIVE_KINDS:
            self.fz.hold_a_task(self.client)
        self.fz.send([(c.kind, c.path, HOSTILE[c.value]) for c in cases])
        self.fz.pump()

    def check(self, bystander_tasks: int = 4) -> str | None:
        """None while all is well, else what went wrong."""
        if self.harness.master.poll() is not None:
            return f"the master exited with {self.harness.master.returncode}"
        try:
            self.client.status(timeout_s=10)
            ids = self.client.submit([build_spec(python="zmqgrid.samples:noop", args=[i])
                                      for i in range(bystander_tasks)])
            outcome = self.client.wait(ids, timeout_s=30)
        except Exception as e:
            return f"the bystander client failed: {e!r}"
        if {t["state"] for t in outcome.values()} != {"done"}:
            return f"the bystander's tasks ended {sorted(t['state'] for t in outcome.values())}"
        self.fz.pump()
        if not self.fz.registered:
            self.fz.register()
        return None

    def rss_growth_mib(self) -> float:
        return (self.master.memory_info().rss - self.rss_before) / 2**20

    def findings(self) -> list[str]:
        return findings(self.harness.db, self.harness.dir / "master.log")


MAX_LEDGER_VALUE = 5 << 20   # no value in the ledger is larger (script 1 MiB, output 1 MiB a stream, a return value 4 MiB)


def findings(db: Path, log_path: Path) -> list[str]:
    """What a hostile run must not leave behind: a damaged ledger, an oversized value in it, a traceback or a
    failed commit in the master's log, raw control characters or forged lines there, or a flood of log lines."""
    found = []
    if db_query(db, "PRAGMA integrity_check") != [("ok",)]:
        found.append("the ledger fails SQLite's integrity check")
    for table, in db_query(db, "SELECT name FROM sqlite_master WHERE type = 'table'"):
        for column in [c[1] for c in db_query(db, f"PRAGMA table_info({table})")]:
            (largest,) = db_query(db, f"SELECT max(length(CAST({column} AS BLOB))) FROM {table}")[0]
            if (largest or 0) > MAX_LEDGER_VALUE:
                found.append(f"the ledger's {table}.{column} holds a value of {largest} bytes")
    log = log_path.read_text(errors="replace")
    for sign in ("Traceback", "could not commit", "handler failed", "commit of"):
        if sign in log:
            line = next(l for l in log.splitlines() if sign in l)
            found.append(f"master log: {line[:300]!r}")
    if "\x1b" in log or "\x00" in log:
        found.append("a raw control character reached the master log")
    if "\n2026-01-01 00:00:00 WARNING forged" in log:
        found.append("a peer forged a line of the master log")
    if len(log) > 5 << 20:
        found.append(f"the master log grew to {len(log)} bytes")
    return found
