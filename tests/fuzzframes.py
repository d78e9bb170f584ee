"""Random and mutated zmqgrid frames, from a seeded `random.Random`: shared by tests/test_fuzz.py (a few hundred
against a real master) and tools/fuzz_long.py (hundreds of thousands).

`frames(rng)` returns one message as a list of frames (at least one: ZeroMQ cannot send zero), drawn from:
random bytes in random frame counts, valid headers over random bodies or random msgpack values, arrays of the
right length with random or type-confused fields, and valid encodings of every kind mutated byte-wise or
frame-wise (flip, truncate, insert, delete, splice, change version or kind, drop, repeat or add frames).
"""
from __future__ import annotations

import random
from typing import Any, Callable

import msgpack

from zmqgrid import protocol as p
from zmqgrid.model import validate_task_spec

TASK = {"id": "t1", "attempt": 1, "kind": "shell", "command": "true", "timeout": 5.0, "tags": ["x"]}
RESULT = {"id": "t1", "attempt": 1, "state": "done", "exit_code": 0, "value": [1, {"a": None}], "error": None,
          "stdout": "out\n", "stderr": "", "started_at": 1.0}
SAMPLES: list[p.Message] = [
    p.Register(device_id="w1", name="W 1", hostname="host", os="Linux", python_version="3.11.7",
               python_executable="/usr/bin/python3", tags=["gpu"], concurrency=3, credit=5, running=[("a", 1)],
               outbox=[("b", 2)], pid=42, version="0.1", weight=1.5),
    p.RegisterAck("inc", 8001, 8002, 1.0, 5.0, [("a", 1)]),
    p.Tasks([TASK]),
    p.Results([RESULT], 1, [("b", 1)]),
    p.ResultAck([("a", 1)]),
    p.Heartbeat(device_id="w1", incarnation="inc", seq=7, running=[("a", 1)], held=[("b", 2)],
                metrics={"cpu_percent": 1.5, "hostname": "h"}, sent_at=1.7e9, commands=[3, 4]),
    p.Beacon("inc", 1.7e9),
    p.Submit(1, [{"kind": "shell", "command": "true", "id": "fuzz-never"}], True),
    p.Submit(1, [{"kind": "python", "function": "m:f", "args": [1], "kwargs": {"a": 1}, "priority": 3,
                  "timeout": 1.0, "retries": 2, "tags": ["x"], "limit_key": "k", "limit_concurrency": 1},
                 {"kind": "script", "source": "print(1)", "filename": "a.py", "env": {"A": "1"}, "all": True}]),
    p.Query(2, "task", {"id": "a"}),
    p.Query(2, "tasks", {"state": "queued", "limit": 10, "offset": 0, "device": "w1"}),
    p.Query(2, "logs", {"id": "a", "attempt": 1, "stdout_from": 0, "stderr_from": 0}),
    p.Query(2, "status", {}),
    p.Query(2, "devices", {}),
    p.Query(2, "schedules", {}),
    p.Control(3, "watch", {"ids": ["a"]}),
    p.Reply(4, {"ids": ["a"]}),
    p.Error(5, "bad_request", "no"),
    p.Finished([{"id": "a", "state": "done"}]),
    p.Command(7, "drain", {"devices": ["w1"]}),
    p.Output([("a", 1, "stdout", "line\n")]),
]
INT_EDGES = [0, 1, -1, 2**31 - 1, 2**31, -2**31, 2**32, 2**53 + 1, 2**63 - 1, 2**63, 2**64 - 1, -2**63]
FLOAT_EDGES = [0.0, -0.0, 1e308, -1e308, 5e-324, float("inf"), float("-inf"), float("nan")]
# Byte strings a decoder must survive: declared sizes larger than the data, deep nesting, reserved codes.
NASTY = [b"\xc1", b"\xdd\xff\xff\xff\xff", b"\xdf\xff\xff\xff\xff", b"\xdb\xff\xff\xff\xff", b"\xc6\xff\xff\xff\xff",
         b"\x91" * 5000 + b"\xc0", b"\x81" * 3000 + b"\xc0", b"\xd4\x01\x02", b"\xc7\xff\x05",
         b"\xd9\x05\xff\xfe\xfd\xfc\xfb", b"\xa3\xed\xa0\x80", b"\x92\x01", b""]


def text(rng: random.Random, n: int = 12) -> str:
    alphabet = "abc:-_.\u00e9\u4e2d\U0001f600 \n\x00"
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, n)))


def value(rng: random.Random, depth: int = 0) -> Any:
    """A random msgpack-packable value, nested a few levels."""
    roll = rng.random()
    if depth < 3 and roll < 0.15:
        return [value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    if depth < 3 and roll < 0.25:
        keys = [text(rng, 6) if rng.random() < 0.7 else rng.choice(INT_EDGES) for _ in range(rng.randint(0, 4))]
        return {k: value(rng, depth + 1) for k in keys}
    return rng.choice([None, True, False, rng.choice(INT_EDGES), rng.randint(-1000, 1000), rng.choice(FLOAT_EDGES),
                       rng.uniform(-1e6, 1e6), text(rng), rng.randbytes(rng.randint(0, 8))])


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def header(rng: random.Random) -> bytes:
    return bytes([p.VERSION]) + rng.choice(list(p.KINDS.values())).KIND


def fields_of(msg: p.Message) -> list:
    return [getattr(msg, n) for n in msg._names]


def mutate_bytes(rng: random.Random, data: bytes) -> bytes:
    data = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(6)
        i = rng.randint(0, len(data))
        if op == 0 and data:                       # flip bits of one byte
            data[i % len(data)] ^= 1 << rng.randrange(8)
        elif op == 1:                               # truncate
            del data[i:]
        elif op == 2:                               # insert random bytes
            data[i:i] = rng.randbytes(rng.randint(1, 8))
        elif op == 3:                               # delete a slice
            del data[i:i + rng.randint(1, 8)]
        elif op == 4 and data:                      # set a byte to a msgpack edge code
            data[i % len(data)] = rng.choice([0xc0, 0xc1, 0xc2, 0xc3, 0xdc, 0xdd, 0xde, 0xdf, 0xd9, 0xc4, 0x90, 0x80])
        else:                                       # splice in a nasty sequence
            data[i:i] = rng.choice(NASTY)[:64]
    return bytes(data)


def _random_frames(rng: random.Random) -> list[bytes]:
    return [rng.randbytes(rng.randint(0, 40)) for _ in range(rng.randint(1, 5))]


def _random_body(rng: random.Random) -> list[bytes]:
    return [header(rng), rng.choice([rng.randbytes(rng.randint(0, 64)), rng.choice(NASTY)])]


def _random_value_body(rng: random.Random) -> list[bytes]:
    return [header(rng), pack(value(rng))]


def _random_fields(rng: random.Random) -> list[bytes]:
    cls = rng.choice(list(p.KINDS.values()))
    count = rng.randint(max(0, cls._required - 1), len(cls._names) + 1)
    return [bytes([p.VERSION]) + cls.KIND, pack([value(rng) for _ in range(count)])]


def _type_confused(rng: random.Random) -> list[bytes]:
    msg = rng.choice(SAMPLES)
    values = fields_of(msg)
    for _ in range(rng.randint(1, 2)):
        values[rng.randrange(len(values))] = value(rng)
    return [bytes([p.VERSION]) + msg.KIND, pack(values)]


def _nested_confused(rng: random.Random) -> list[bytes]:
    """A valid message whose list or map field holds one wrong entry: what the handlers validate."""
    msg = rng.choice(SAMPLES)
    values = fields_of(msg)
    slots = [i for i, v in enumerate(values) if isinstance(v, (list, dict)) and v]
    if slots:
        i = rng.choice(slots)
        if isinstance(values[i], list):
            inner = list(values[i])
            j = rng.randrange(len(inner))
            if isinstance(inner[j], dict) and inner[j] and rng.random() < 0.7:
                entry = dict(inner[j])
                entry[rng.choice(list(entry))] = value(rng)
                inner[j] = entry
            else:
                inner[j] = value(rng)
            values[i] = inner
        else:
            entry = dict(values[i])
            entry[rng.choice(list(entry))] = value(rng)
            values[i] = entry
    return [bytes([p.VERSION]) + msg.KIND, pack(values)]


def _mutated(rng: random.Random) -> list[bytes]:
    frames = list(rng.choice(SAMPLES).encode())
    roll = rng.random()
    if roll < 0.6:
        frames[1] = mutate_bytes(rng, frames[1])
    elif roll < 0.75:
        frames[0] = mutate_bytes(rng, frames[0])
    elif roll < 0.82:
        frames = [frames[0]]                                       # a frame dropped
    elif roll < 0.88:
        frames = frames + [rng.choice(frames)]                     # a frame repeated
    elif roll < 0.94:
        frames = [frames[1], frames[0]]                            # frames swapped
    else:
        frames = [bytes([rng.choice([0, 2, 255]), frames[0][1]]), frames[1]]   # another protocol version
    return frames


GENERATORS: list[Callable[[random.Random], list[bytes]]] = [
    _random_frames, _random_body, _random_value_body, _random_fields, _type_confused, _nested_confused, _mutated,
    _mutated, _mutated]


def frames(rng: random.Random) -> list[bytes]:
    """One random or mutated message, as frames (never zero of them)."""
    return rng.choice(GENERATORS)(rng)


def accepted_as_request(message: list[bytes]) -> bool:
    """Whether the master could act on it as a request that changes its state: a Register, a Control other than
    `watch`, or a Submit whose every task is valid. The fuzzer does not send those, so the ledger must stay
    exactly as it was; a Submit with one bad task is refused whole, so it is sent."""
    try:
        msg = p.decode(message)
    except Exception:
        return False
    if isinstance(msg, p.Submit):
        try:
            for spec in msg.tasks:
                validate_task_spec(spec)
        except Exception:
            return False
        return True
    return isinstance(msg, p.Register) or (isinstance(msg, p.Control) and msg.action != "watch")
