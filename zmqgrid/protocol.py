"""Wire messages: one frozen dataclass per kind, each encoded as [header, msgpack body].

The header is two bytes, protocol version then kind letter. The body is a msgpack array of the
fields in declaration order (arrays, not maps: smaller and faster). Every decoding or validation
failure becomes one ProtocolError whose text names what was wrong.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

import msgpack

from .errors import ProtocolError
from .fields import (INT64_MAX, SCALAR, Bad, Bool, Enum, Field, Float, Id, Int, List, Opaque,
                     Record, Spec, Text, Tuple, Value)
from .model import ATTEMPT_OUTCOMES, PYTHON_ENV_PATTERN

VERSION = 1
DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024

_packer = msgpack.Packer(use_bin_type=True)


def packb(obj: Any) -> bytes:
    return _packer.pack(obj)


def unpackb(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=False, use_list=True)


class Message:
    """Base of all wire messages. Subclasses are frozen dataclasses with KIND and SCHEMA (field name -> spec, in
    field order); `FIELDS` is the same as a tuple of `fields.Field`, for whoever walks the schema."""

    KIND: ClassVar[bytes]
    SCHEMA: ClassVar[dict[str, Spec]]
    FIELDS: ClassVar[tuple[Field, ...]]
    _header: ClassVar[bytes]
    _names: ClassVar[tuple]
    _checks: ClassVar[tuple]
    _required: ClassVar[int]
    _keywords: ClassVar[bool]

    def encode(self) -> list[bytes]:
        return [self._header, packb([getattr(self, n) for n in self._names])]

    @classmethod
    def from_body(cls, body: bytes) -> "Message":
        """Unpack and check every field against its spec: the message whole, or a ProtocolError naming the field."""
        try:
            values = unpackb(body)
        except Exception as e:
            raise ProtocolError(f"{cls.__name__}: body is not valid msgpack ({type(e).__name__})") from e
        if type(values) is not list:
            raise ProtocolError(f"{cls.__name__}: body must be an array, got {type(values).__name__}")
        if not cls._required <= len(values) <= len(cls._names):
            raise ProtocolError(f"{cls.__name__}: expected {cls._required}..{len(cls._names)} fields, got {len(values)}")
        checks, i = cls._checks, 0
        try:
            for i, value in enumerate(values):
                values[i] = checks[i](value)
        except Bad as e:
            raise ProtocolError(f"{cls.__name__}.{cls._names[i]}{e.where()}: expected {e.allowed}, "
                                f"got {e.got}") from None
        if cls._keywords:
            return cls(**dict(zip(cls._names, values)))
        return cls(*values)


KINDS: dict[int, type[Message]] = {}


def message(kind: str, keywords: bool = False):
    """Class decorator: register a frozen dataclass as the message of wire kind `kind`. `keywords`: built with
    keyword arguments only (a message of many fields of the same types, where a position is easily mistaken)."""

    def wrap(cls):
        cls = dataclass(frozen=True, slots=True, kw_only=keywords)(cls)
        fields = dataclasses.fields(cls)
        assert [f.name for f in fields] == list(cls.SCHEMA), cls   # one spec per field, in wire order
        cls.KIND = kind.encode()
        cls._header = bytes([VERSION, ord(kind)])
        cls._names = tuple(f.name for f in fields)
        cls.FIELDS = tuple(Field(name, spec) for name, spec in cls.SCHEMA.items())
        cls._checks = tuple(spec.check for spec in cls.SCHEMA.values())
        cls._keywords = keywords
        cls._required = sum(1 for f in fields if f.default is dataclasses.MISSING
                            and f.default_factory is dataclasses.MISSING)
        assert ord(kind) not in KINDS, kind
        KINDS[ord(kind)] = cls
        return cls

    return wrap


def decode(frames: list[bytes]) -> Message:
    """Decode [header, body] (the ROUTER identity already removed) into its message dataclass."""
    if len(frames) != 2:
        raise ProtocolError(f"expected 2 frames (header, body), got {len(frames)}")
    header, body = frames
    if len(header) != 2:
        raise ProtocolError(f"header must be 2 bytes, got {len(header)}")
    if header[0] != VERSION:
        raise ProtocolError(f"protocol version {header[0]} is not supported; this side speaks {VERSION}")
    cls = KINDS.get(header[1])
    if cls is None:
        raise ProtocolError(f"unknown message kind {header[1:2]!r}")
    return cls.from_body(body)


# ---------------------------------------------------------------- the schema's bounds (docs/architecture.md, Security)

ID = Id()   # a task id (model.validate_task_spec's charset); device ids use the same
ATTEMPT = Int(1, 1 << 31)
KEY = Tuple(ID, ATTEMPT, what="[task id, attempt >= 1]")   # decoded as a (task id, attempt) tuple, a set's key
KEYS = List(KEY, 1 << 20)
INT64 = Int()
SEQ = Int(0, INT64_MAX)
CREDIT = Int(0, 1 << 20)
WALL_TIME = Float(0.0, 1e11)   # Unix seconds (year 5138): a worker's clock, shown and stored, never trusted
NAME = Text(255, line=True)
PATH = Text(4096, line=True)
MAX_RESULTS_PER_MESSAGE = 100_000
MAX_OUTPUT_CHUNKS = 16_384
MAX_IDS_PER_REQUEST = 10_000      # Control ids/devices: a client sends more in several requests
MAX_TEXT = 1 << 24                # stdout, stderr, an output chunk: bounded in fact by max_message_bytes
MAX_ERROR_TYPE, MAX_ERROR_MESSAGE, MAX_ERROR_TRACEBACK = 256, 16_384, 262_144
MAX_VALUE_DEPTH = 32
MAX_VALUE_BYTES = 4 << 20         # a python task's return value, packed: the ledger keeps it with the task row
# A task spec's keys and values are model.validate_task_spec's to check; here only how deep it nests (a value nested
# 1,000 deep would pass msgpack and then exhaust the stack of whatever turns it into JSON).
TASK_SPEC = Value(MAX_VALUE_DEPTH, what="a task spec (checked by model.validate_task_spec)")
TAG = Text(64, 1, line=True)
# permanent: the worker judged that the failure recurs on every attempt (docs/architecture.md, "Failures that are
# not retried")
ERROR = Record({"type": Text(MAX_ERROR_TYPE, line=True), "message": Text(MAX_ERROR_MESSAGE),
                "traceback": Text(MAX_ERROR_TRACEBACK), "permanent": Bool(nullable=True)}, max_keys=8, nullable=True)
RESULT = Record({"id": ID, "attempt": ATTEMPT, "state": Enum(ATTEMPT_OUTCOMES), "exit_code": Int(nullable=True),
                 "started_at": Float(0.0, 1e11, nullable=True), "stdout": Text(MAX_TEXT, nullable=True),
                 "stderr": Text(MAX_TEXT, nullable=True), "error": ERROR,
                 "value": Value(MAX_VALUE_DEPTH, max_bytes=MAX_VALUE_BYTES)},
                max_keys=32, required=("id", "attempt", "state"))
OUTPUT_CHUNK = Tuple(ID, ATTEMPT, Enum(("stdout", "stderr")), Text(MAX_TEXT),
                     what="[task id, attempt, 'stdout'|'stderr', text]")
_PERCENT, _LOAD = Float(0.0, 100.0), Float(0.0, 1e6)
METRICS = Record({"cpu_percent": _PERCENT, "memory_percent": _PERCENT, "disk_percent": _PERCENT, "load_1m": _LOAD,
                  "load_5m": _LOAD, "load_15m": _LOAD, "memory_available_mb": Float(0.0, 1e12),
                  "cpu_count": Int(0, 1 << 20), "memory_total_mb": Int(0, 1 << 40), "hostname": NAME, "os": NAME,
                  "python_version": NAME, "python_executable": PATH, "prefetch": CREDIT,
                  "prefetch_adaptive": Bool()}, max_keys=64)
# A worker's other interpreters (docs/architecture.md, "Worker: interpreters per worker"): name, the version it
# answered, its path. Shown to people only as text.
PYTHON_ENVS = List(Tuple(Text(48, 1, pattern=PYTHON_ENV_PATTERN, what="a python env name"), Text(64, line=True), PATH,
                         what="[name, version, executable]"), 16)
# What a worker's project cache holds, one entry per version (docs/architecture.md, Projects, "Sync and what workers
# hold"): [version, its copy's state, its environment's state, the seq of the last sync applied to it, a reason].
PROJECT_COPY_STATES = ("fetching", "cached", "failed")
PROJECT_ENV_STATES = ("unknown", "not_built", "building", "ready", "failed", "none")
MAX_CACHED_REPORTED = 64
MAX_CACHED_REASON = 200
CACHED = Tuple(Text(64, 64, pattern=r"[0-9a-f]{64}"), Enum(PROJECT_COPY_STATES), Enum(PROJECT_ENV_STATES), SEQ,
               Text(MAX_CACHED_REASON, line=True),
               what="[version, copy state, environment state, sync seq, reason]")
_WORD = Text(32, line=True, nullable=True)
_OFFSET = Int(0, 1 << 62, nullable=True)
_NAME64 = Text(64, line=True, nullable=True)
QUERY_PARAMS = Record({"id": _NAME64, "state": _WORD, "device": _NAME64, "tag": _NAME64,
                       "limit": Int(0, 1 << 31, nullable=True), "offset": _OFFSET,
                       "attempt": Int(0, 1 << 31, nullable=True), "stdout_from": _OFFSET, "stderr_from": _OFFSET},
                      max_keys=32, extra=SCALAR)
_IDS = List(ID, MAX_IDS_PER_REQUEST, nullable=True)
CONTROL_PARAMS = Record({"ids": _IDS, "devices": _IDS, "tags": List(TAG, 32, nullable=True), "state": _WORD, "tag": _NAME64, "op": _WORD,
                         "name": _NAME64, "cron": Text(256, line=True, nullable=True), "missed": _WORD,
                         "spec": TASK_SPEC},
                        max_keys=32, extra=SCALAR)


# ---------------------------------------------------------------- worker <-> master (ROUTER/DEALER)

@message("R", keywords=True)
class Register(Message):
    """Worker -> master: who I am, what I can do, what I am running and what waits in my outbox."""
    SCHEMA = {"device_id": ID, "name": Text(128, line=True), "hostname": NAME, "os": NAME, "python_version": NAME,
              "python_executable": PATH, "tags": List(TAG, 64), "concurrency": Int(1, 4096), "credit": CREDIT,
              "running": KEYS, "outbox": KEYS, "pid": Int(0, 1 << 31), "version": Text(64, line=True),
              "weight": Float(1e-6, 1e6, as_float=True), "python_envs": PYTHON_ENVS}
    device_id: str
    name: str
    hostname: str
    os: str
    python_version: str
    python_executable: str
    tags: list
    concurrency: int
    credit: int
    running: list          # [(task_id, attempt), ...]
    outbox: list           # [(task_id, attempt), ...]
    pid: int
    version: str = ""
    weight: float = 1.0    # for the weighted strategy
    python_envs: list = field(default_factory=list)   # [(name, version, executable), ...] its other interpreters


@message("r")
class RegisterAck(Message):
    """Master -> worker: accepted; the other ports, the timing to use, and tasks to stop."""
    SCHEMA = {"incarnation": Text(64, line=True), "pub_port": Int(1, 65535), "heartbeat_port": Int(1, 65535),
              "heartbeat_interval_s": Float(0.0, 1e6), "device_timeout_s": Float(0.0, 1e6), "cancel": KEYS}
    incarnation: str
    pub_port: int
    heartbeat_port: int
    heartbeat_interval_s: float
    device_timeout_s: float
    cancel: list = field(default_factory=list)   # [(task_id, attempt), ...] the master no longer gives this worker


@message("T")
class Tasks(Message):
    """Master -> worker: tasks to run, each a spec dict plus 'attempt' (never more than the worker's credit),
    and the [task_id, attempt] of its results committed this turn (so no separate ResultAck is needed)."""
    SCHEMA = {"tasks": List(TASK_SPEC, 1 << 20), "acks": KEYS}
    tasks: list
    acks: list = field(default_factory=list)


@message("D")
class Results(Message):
    """Worker -> master: finished attempts (dicts, see docs/architecture.md), credit freed by them, and the
    attempts that began to run since the last message (sent alone when nothing finished this turn). `leaving`: the
    worker is stopping, so nothing is to be sent to it again ("When the worker stops"). `returned`: held attempts it
    hands back unstarted ("Worker: credit and prefetch")."""
    SCHEMA = {"results": List(RESULT, MAX_RESULTS_PER_MESSAGE), "credit": CREDIT, "started": KEYS, "leaving": Bool(),
              "returned": KEYS}
    results: list
    credit: int = 0
    started: list = field(default_factory=list)
    leaving: bool = False
    returned: list = field(default_factory=list)

    def encode(self) -> list[bytes]:
        # `returned` only when there is one: the four fields that a master older than returns reads as before.
        fields = [self.results, self.credit, self.started, self.leaving]
        if self.returned:
            fields.append(self.returned)
        return [self._header, packb(fields)]


@message("d")
class ResultAck(Message):
    """Master -> worker: these [task_id, attempt] are committed (or known stale); drop them from the outbox."""
    SCHEMA = {"keys": KEYS}
    keys: list


# ---------------------------------------------------------------- heartbeat (PUSH -> PULL), beacon (PUB)

@message("H", keywords=True)
class Heartbeat(Message):
    """Worker -> master over PUSH: liveness, the attempts it runs, and psutil metrics."""
    SCHEMA = {"device_id": ID, "incarnation": Text(64, line=True), "seq": SEQ, "running": KEYS, "held": KEYS,
              "metrics": METRICS, "sent_at": WALL_TIME, "commands": List(SEQ, 1024),
              "projects": List(CACHED, MAX_CACHED_REPORTED, nullable=True)}
    device_id: str
    incarnation: str       # the master incarnation this worker registered with ("" if none yet)
    seq: int
    running: list          # [(task_id, attempt), ...] executing now
    held: list             # [(task_id, attempt), ...] waiting for a free slot, or in the outbox
    metrics: dict
    sent_at: float         # the worker's wall clock: shown, never used for liveness
    commands: list = field(default_factory=list)   # seqs of the commands applied lately (this incarnation)
    # [(version, copy, env, sync seq, reason), ...] its project cache holds; None: as the last list said
    projects: list | None = None

    def encode(self) -> list[bytes]:
        # With nothing new of the project cache the field is left out: the heartbeat is what it was before it.
        names = self._names if self.projects is not None else self._names[:-1]
        return [self._header, packb([getattr(self, n) for n in names])]


@message("B")
class Beacon(Message):
    """Master -> all over PUB (topic b'beacon'): I am alive, and this is my incarnation."""
    SCHEMA = {"incarnation": Text(64, line=True), "sent_at": WALL_TIME}
    incarnation: str
    sent_at: float


@message("M")
class Command(Message):
    """Master -> workers over PUB (topic b'device.<id>'), or re-sent over the ROUTER
    to a worker whose heartbeats do not list it as applied: drain, resume, shutdown, cancel, reload, sync (a project
    version to fetch and build now)."""
    SCHEMA = {"seq": SEQ, "action": Text(32, line=True),
              "params": Record({}, 64, extra=Opaque("command parameters"), extra_key=Text(64, 1))}
    seq: int
    action: str
    params: dict = field(default_factory=dict)


@message("O")
class Output(Message):
    """Worker -> master: output of running tasks as it comes, [(task_id, attempt, stream, text), ...]."""
    SCHEMA = {"chunks": List(OUTPUT_CHUNK, MAX_OUTPUT_CHUNKS)}
    chunks: list


BEACON_TOPIC = b"beacon"
# A worker whose allowed_kinds leave a kind out says so in Register.tags ("no-kind:shell"): the master sends it none.
NO_KIND_TAG = "no-kind:"

# ---------------------------------------------------------------- client <-> master (DEALER/ROUTER)


@message("S")
class Submit(Message):
    """Client -> master: tasks to queue. Acknowledged (Reply with the ids, or a line of a SubmitAcks with
    batch_acks) only after they are committed."""
    SCHEMA = {"req_id": INT64, "tasks": List(TASK_SPEC, 1 << 20), "notify": Bool(),
              "common": Record({}, 64, extra=TASK_SPEC, extra_key=Text(64, 1)), "batch_acks": Bool()}
    req_id: int
    tasks: list
    notify: bool = False   # also send Finished to this client when each task ends
    common: dict = field(default_factory=dict)   # shared by every task: task i is {**common, **tasks[i]}
    batch_acks: bool = False   # answer with the client's other Submits of the turn, in one SubmitAcks

    def encode(self) -> list[bytes]:
        # Only the fields in use, so that what older masters know still reaches them as they know it.
        if self.batch_acks:
            fields = [self.req_id, self.tasks, self.notify, self.common, True]
        elif self.common:
            fields = [self.req_id, self.tasks, self.notify, self.common]
        else:
            fields = [self.req_id, self.tasks, self.notify]
        return [self._header, packb(fields)]


@message("Q")
class Query(Message):
    """Client -> master: read-only request ('status', 'tasks', 'task', 'logs', 'devices')."""
    SCHEMA = {"req_id": INT64, "what": Text(32, line=True), "params": QUERY_PARAMS}
    req_id: int
    what: str
    params: dict = field(default_factory=dict)


@message("X")
class Control(Message):
    """Client -> master: a state-changing request ('cancel', 'watch')."""
    SCHEMA = {"req_id": INT64, "action": Text(32, line=True), "params": CONTROL_PARAMS}
    req_id: int
    action: str
    params: dict = field(default_factory=dict)


@message("A")
class Reply(Message):
    """Master -> client: the answer to request `req_id`."""
    SCHEMA = {"req_id": INT64, "data": Opaque("any reply data")}
    req_id: int
    data: Any = None


@message("K")
class SubmitAcks(Message):
    """Master -> client: its Submits with batch_acks committed this turn, [[req_id, ids], ...] in arrival order."""
    SCHEMA = {"acks": List(Opaque("[req_id, [ids]] (see pairs)"), 1 << 20)}
    acks: list

    def pairs(self) -> list[tuple[int, list]]:
        """The (req_id, ids) lines, each checked (ProtocolError names a malformed one)."""
        out = []
        for line in self.acks:
            if not (isinstance(line, list) and len(line) == 2 and type(line[0]) is int and isinstance(line[1], list)):
                raise ProtocolError(f"SubmitAcks: each line must be [req_id, [ids]], got {line!r:.80}")
            out.append((line[0], line[1]))
        return out


@message("E")
class Error(Message):
    """Master -> any peer: the request failed; `code` is a stable word, `message` a sentence for a person."""
    SCHEMA = {"req_id": INT64, "code": Text(32, line=True), "message": Text(MAX_TEXT)}
    req_id: int            # 0 when the request could not be read far enough to know it
    code: str
    message: str


@message("F")
class Finished(Message):
    """Master -> the client that submitted with notify (or watches): tasks that reached a final state this turn,
    each a summary {id, state, attempt, device_id, exit_code, value, error, reason}."""
    SCHEMA = {"tasks": List(Opaque("a task summary"), 1 << 20)}
    tasks: list

