"""Fuzzed decoders (hypothesis) and a fuzzed real master: garbage is refused with ProtocolError, never a crash.

Property tests: `protocol.decode` on random frames, random bodies under valid headers, random msgpack values,
arrays of random fields and mutated valid encodings of every kind returns a Message or raises ProtocolError;
`validate_task_spec` raises only ProtocolError, and the schema's result and [id, attempt] specs only `Bad`.
Then a few hundred random and mutated frames (tests/fuzzframes.py) go to a real master's ROUTER (raw DEALER)
and PULL (raw PUSH): it stays up, answers, counts them in `bad_messages`, and its ledger does not change.
The long run is `python tools/fuzz_long.py` (README, "Fuzzing").
"""
from __future__ import annotations

import random
import time

import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zmqgrid import protocol as p
from zmqgrid.client import build_spec
from zmqgrid.errors import ProtocolError
from zmqgrid.fields import Bad
from zmqgrid.model import validate_task_spec

from . import fuzzframes
from .helpers import Harness, db_query, wait_until

pytestmark = [pytest.mark.timeout(120), pytest.mark.open_wire]

# database=None: nothing written into the repository; the long run is tools/fuzz_long.py.
FAST = settings(max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
LEDGER_TABLES = ("tasks", "attempts", "devices", "task_output", "heartbeats", "schedules")

scalars = (st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | st.floats() | st.text(max_size=20)
           | st.binary(max_size=20))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=5)
                      | st.dictionaries(st.text(max_size=8) | st.integers(-2**63, 2**63 - 1), inner, max_size=5),
                      max_leaves=20)
classes = st.sampled_from(list(p.KINDS.values()))
headers = classes.map(lambda cls: bytes([p.VERSION]) + cls.KIND)


def decodes_or_refuses(frames: list[bytes]) -> None:
    """The property: a Message of a known kind, or ProtocolError. Anything else propagates and fails the test."""
    try:
        msg = p.decode(frames)
    except ProtocolError:
        return
    assert isinstance(msg, p.Message) and type(msg) in p.KINDS.values()


@FAST
@given(st.lists(st.binary(max_size=64), max_size=5))
def test_random_frames_decode_or_raise_protocol_error(frames):
    decodes_or_refuses(frames)


@FAST
@given(headers, st.binary(max_size=200) | st.sampled_from(fuzzframes.NASTY))
def test_random_bodies_under_valid_headers_decode_or_raise_protocol_error(header, body):
    decodes_or_refuses([header, body])


@FAST
@given(headers, values)
def test_random_msgpack_values_under_valid_headers_decode_or_raise_protocol_error(header, value):
    decodes_or_refuses([header, fuzzframes.pack(value)])


@FAST
@given(classes, st.data())
def test_arrays_of_random_fields_decode_or_raise_protocol_error(cls, data):
    count = data.draw(st.integers(max(0, cls._required - 1), len(cls._names) + 1))
    decodes_or_refuses([bytes([p.VERSION]) + cls.KIND, fuzzframes.pack(data.draw(st.lists(values, min_size=count,
                                                                                           max_size=count)))])


@FAST
@given(st.sampled_from(fuzzframes.SAMPLES), st.data())
def test_mutated_valid_encodings_of_every_kind_decode_or_raise_protocol_error(msg, data):
    frames = msg.encode()
    assert p.decode(frames) == msg
    where = data.draw(st.integers(0, 1))
    mutated = list(frames)
    mutated[where] = fuzzframes.mutate_bytes(random.Random(data.draw(st.integers(0, 2**32))), frames[where])
    decodes_or_refuses(mutated)


@FAST
@given(st.randoms(use_true_random=False))
def test_every_generator_of_the_frame_fuzzer_yields_decodable_or_refused_frames(rng):
    for generator in fuzzframes.GENERATORS:
        frames = generator(rng)
        assert frames and all(isinstance(f, bytes) for f in frames)
        decodes_or_refuses(frames)


SPEC_KEYS = ["id", "command", "source", "filename", "args", "function", "kwargs", "cwd", "env", "priority",
             "timeout", "retries", "retry_backoff", "all", "group", "limit_key", "limit_concurrency",
             "limit_per_minute", "tags", "device", "name"]
specs = st.fixed_dictionaries(
    {"kind": st.sampled_from(["shell", "script", "python"]) | values},
    optional={key: values | st.sampled_from(["true", "m:f", "a.b:c", ["x"], {"A": "1"}, 1, 0.5, True, ""])
              for key in SPEC_KEYS}) | st.dictionaries(st.text(max_size=10), values, max_size=6) | values


@settings(max_examples=200, deadline=None, database=None)
@given(specs)
def test_validate_task_spec_only_ever_raises_protocol_error(spec):
    try:
        out = validate_task_spec(spec)
    except ProtocolError:
        return
    assert out["kind"] in ("shell", "script", "python") and isinstance(out["id"], str)


@FAST
@given(values | st.fixed_dictionaries(   # id and attempt well-formed, so the checks after them are reached too
    {"id": st.text(max_size=3), "attempt": st.integers(-2**63, 2**63 - 1)},
    optional={k: values | st.sampled_from(["done", "failed", 0, 1.5, None]) for k in (
        "state", "exit_code", "started_at", "stdout", "stderr", "error", "value")}))
def test_the_result_spec_only_ever_refuses_with_bad(result):
    try:
        checked = p.RESULT.check(result)
    except Bad:
        return
    assert {"id", "attempt", "state"} <= set(checked) <= set(p.RESULT.fields)


@FAST
@given(st.lists(values, max_size=5))
def test_the_key_list_spec_only_ever_refuses_with_bad(items):
    try:
        checked = p.KEYS.check(items)
    except Bad:
        return
    assert checked == [tuple(key) for key in items]
    assert all(type(key) is tuple and type(key[0]) is str and type(key[1]) is int for key in checked)


# --- a real master under fuzz ------------------------------------------------------------------------------

FRAMES_PER_SOCKET = 300


@pytest.fixture(scope="module")
def master(tmp_path_factory):
    harness = Harness(tmp_path_factory.mktemp("fuzz"))
    try:
        harness.start_master()
        harness.seeded_id = harness.client().submit(build_spec(shell="echo seeded"))[0]
        yield harness
    finally:
        harness.stop()


def ledger(harness: Harness) -> dict:
    return {t: db_query(harness.db, f"SELECT * FROM {t} ORDER BY rowid") for t in LEDGER_TABLES}


def status(harness: Harness) -> dict:
    if not hasattr(harness, "status_client"):
        harness.status_client = harness.client(timeout_s=5)
    return harness.status_client.status()


def test_a_real_master_survives_random_and_mutated_frames_on_router_and_pull(master):
    before, bad_before = ledger(master), status(master)["bad_messages"]
    rng = random.Random(20240607)
    ctx = zmq.Context()
    dealer, push = ctx.socket(zmq.DEALER), ctx.socket(zmq.PUSH)
    for sock in (dealer, push):
        sock.setsockopt(zmq.LINGER, 0)
    dealer.connect(master.url)
    push.connect(f"tcp://127.0.0.1:{master.port + 2}")
    try:
        sent = {"router": 0, "pull": 0}
        undecodable = {"router": 0, "pull": 0}
        for socket_name, sock in (("router", dealer), ("pull", push)):
            while sent[socket_name] < FRAMES_PER_SOCKET:
                frames = fuzzframes.frames(rng)
                if fuzzframes.accepted_as_request(frames):
                    continue    # a valid Submit, Control or Register is a request, not garbage
                try:
                    msg = p.decode(frames)
                    refused = socket_name == "pull" and not isinstance(msg, p.Heartbeat)
                except ProtocolError:
                    refused = True
                undecodable[socket_name] += refused
                sock.send_multipart(frames)
                sent[socket_name] += 1
        # Every ROUTER message is answered: bad_message for what did not decode, another error for the rest.
        answers = []
        deadline = time.monotonic() + 20
        while len(answers) < sent["router"] and time.monotonic() < deadline:
            if dealer.poll(200):
                answers.append(p.decode(dealer.recv_multipart()))
        assert len(answers) == sent["router"]
        assert all(isinstance(a, (p.Error, p.Reply)) for a in answers)
        assert sum(1 for a in answers if isinstance(a, p.Error) and a.code == "bad_message") >= undecodable["router"]
        least = undecodable["router"] + undecodable["pull"]
        grew = wait_until(lambda: (n := status(master)["bad_messages"] - bad_before) >= least and n, 20,
                          f"bad_messages to grow by at least {least}")
        assert grew <= sent["router"] + sent["pull"]
        print(f"\nfuzz: sent {sent}, undecodable {undecodable}, bad_messages grew by {grew}")
    finally:
        dealer.close(0)
        push.close(0)
        ctx.term()
    assert master.master.poll() is None, "the master exited"
    client = master.client(timeout_s=5)
    assert client.task(master.seeded_id)["state"] == "queued"
    assert ledger(master) == before
