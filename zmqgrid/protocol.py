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

VERSION = 1
DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024

# Field type tags used by validation (kept as plain tuples: isinstance is the hot path).
STR, INT, NUM, BOOL, LIST, DICT, ANY = (str,), (int,), (int, float), (bool,), (list,), (dict,), None

_packer = msgpack.Packer(use_bin_type=True)


def packb(obj: Any) -> bytes:
    return _packer.pack(obj)


def unpackb(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=False, use_list=True)


class Message:
    """Base of all wire messages. Subclasses are frozen dataclasses with KIND and TYPES."""

    KIND: ClassVar[bytes]
    TYPES: ClassVar[tuple]  # one type tag per field, in order; None = any msgpack value
    NULLABLE: ClassVar[frozenset] = frozenset()
    _header: ClassVar[bytes]
    _names: ClassVar[tuple]
    _required: ClassVar[int]

    def encode(self) -> list[bytes]:
        return [self._header, packb([getattr(self, n) for n in self._names])]

    @classmethod
    def from_body(cls, body: bytes) -> "Message":
        try:
            values = unpackb(body)
        except Exception as e:
            raise ProtocolError(f"{cls.__name__}: body is not valid msgpack ({type(e).__name__})") from e
        if not isinstance(values, list):
            raise ProtocolError(f"{cls.__name__}: body must be an array, got {type(values).__name__}")
        if not cls._required <= len(values) <= len(cls._names):
            raise ProtocolError(f"{cls.__name__}: expected {cls._required}..{len(cls._names)} fields, got {len(values)}")
        for name, types, value in zip(cls._names, cls.TYPES, values):
            if types is None or (value is None and name in cls.NULLABLE):
                continue
            if not isinstance(value, types) or (isinstance(value, bool) and types is not BOOL):
                raise ProtocolError(f"{cls.__name__}.{name}: expected {'/'.join(t.__name__ for t in types)}, "
                                    f"got {type(value).__name__}")
        return cls(*values)


KINDS: dict[int, type[Message]] = {}


def message(kind: str):
    """Class decorator: register a frozen dataclass as the message of wire kind `kind`."""

    def wrap(cls):
        cls = dataclass(frozen=True, slots=True)(cls)
        fields = dataclasses.fields(cls)
        assert len(fields) == len(cls.TYPES), cls
        cls.KIND = kind.encode()
        cls._header = bytes([VERSION, ord(kind)])
        cls._names = tuple(f.name for f in fields)
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


# ---------------------------------------------------------------- worker <-> master (ROUTER/DEALER)

@message("R")
class Register(Message):
    """Worker -> master: who I am, what I can do, what I am running and what waits in my outbox."""
    TYPES = (STR, STR, STR, STR, STR, STR, LIST, INT, INT, LIST, LIST, INT, STR, NUM)
    device_id: str
    name: str
    hostname: str
    os: str
    python_version: str
    python_executable: str
    tags: list
    concurrency: int
    credit: int
    running: list          # [[task_id, attempt], ...]
    outbox: list           # [[task_id, attempt], ...]
    pid: int
    version: str = ""
    weight: float = 1.0    # for the weighted strategy


@message("r")
class RegisterAck(Message):
    """Master -> worker: accepted; the other ports, the timing to use, and tasks to stop."""
    TYPES = (STR, INT, INT, NUM, NUM, LIST)
    incarnation: str
    pub_port: int
    heartbeat_port: int
    heartbeat_interval_s: float
    device_timeout_s: float
    cancel: list = field(default_factory=list)   # [[task_id, attempt], ...] the master no longer gives this worker


@message("C")
class Credit(Message):
    """Worker -> master: `slots` more tasks may be sent (additive, so it never races with dispatch)."""
    TYPES = (INT,)
    slots: int


@message("T")
class Tasks(Message):
    """Master -> worker: tasks to run, each a spec dict plus 'attempt' (never more than the worker's credit),
    and the [task_id, attempt] of its results committed this turn (so no separate ResultAck is needed)."""
    TYPES = (LIST, LIST)
    tasks: list
    acks: list = field(default_factory=list)


@message("D")
class Results(Message):
    """Worker -> master: finished attempts (dicts, see docs/architecture.md), credit freed by them, and the
    attempts that began to run since the last message (sent alone when nothing finished this turn)."""
    TYPES = (LIST, INT, LIST)
    results: list
    credit: int = 0
    started: list = field(default_factory=list)


@message("d")
class ResultAck(Message):
    """Master -> worker: these [task_id, attempt] are committed (or known stale); drop them from the outbox."""
    TYPES = (LIST,)
    keys: list


# ---------------------------------------------------------------- heartbeat (PUSH -> PULL), beacon (PUB)

@message("H")
class Heartbeat(Message):
    """Worker -> master over PUSH: liveness, the attempts it runs, and psutil metrics."""
    TYPES = (STR, STR, INT, LIST, LIST, DICT, NUM, LIST)
    device_id: str
    incarnation: str       # the master incarnation this worker registered with ("" if none yet)
    seq: int
    running: list          # [[task_id, attempt], ...] executing now
    held: list             # [[task_id, attempt], ...] waiting for a free slot, or in the outbox
    metrics: dict
    sent_at: float         # the worker's wall clock: shown, never used for liveness
    commands: list = field(default_factory=list)   # seqs of the commands applied lately (this incarnation)


@message("B")
class Beacon(Message):
    """Master -> all over PUB (topic b'beacon'): I am alive, and this is my incarnation."""
    TYPES = (STR, NUM)
    incarnation: str
    sent_at: float


@message("M")
class Command(Message):
    """Master -> workers over PUB (topic b'all', b'device.<id>' or b'tag.<tag>'), or re-sent over the ROUTER
    to a worker whose heartbeats do not list it as applied: drain, resume, shutdown, cancel, reload."""
    TYPES = (INT, STR, DICT)
    seq: int
    action: str
    params: dict = field(default_factory=dict)


@message("O")
class Output(Message):
    """Worker -> master: output of running tasks as it comes, [[task_id, attempt, stream, text], ...]."""
    TYPES = (LIST,)
    chunks: list


BEACON_TOPIC = b"beacon"
# A worker whose allowed_kinds leave a kind out says so in Register.tags ("no-kind:shell"): the master sends it none.
NO_KIND_TAG = "no-kind:"
COMMAND_ACTIONS = ("drain", "resume", "shutdown", "cancel", "reload")

# ---------------------------------------------------------------- client <-> master (DEALER/ROUTER)


@message("S")
class Submit(Message):
    """Client -> master: tasks to queue. Acknowledged (Reply with the ids, or a line of a SubmitAcks with
    batch_acks) only after they are committed."""
    TYPES = (INT, LIST, BOOL, DICT, BOOL)
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
    TYPES = (INT, STR, DICT)
    req_id: int
    what: str
    params: dict = field(default_factory=dict)


@message("X")
class Control(Message):
    """Client -> master: a state-changing request ('cancel', 'watch')."""
    TYPES = (INT, STR, DICT)
    req_id: int
    action: str
    params: dict = field(default_factory=dict)


@message("A")
class Reply(Message):
    """Master -> client: the answer to request `req_id`."""
    TYPES = (INT, ANY)
    req_id: int
    data: Any = None


@message("K")
class SubmitAcks(Message):
    """Master -> client: its Submits with batch_acks committed this turn, [[req_id, ids], ...] in arrival order."""
    TYPES = (LIST,)
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
    TYPES = (INT, STR, STR)
    req_id: int            # 0 when the request could not be read far enough to know it
    code: str
    message: str


@message("F")
class Finished(Message):
    """Master -> the client that submitted with notify (or watches): tasks that reached a final state this turn,
    each a summary {id, state, attempt, device_id, exit_code, value, error, reason}."""
    TYPES = (LIST,)
    tasks: list


ERROR_CODES = ("bad_message", "bad_request", "not_found", "not_registered", "too_large", "unavailable")
