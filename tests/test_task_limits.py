"""Task spec limits and paged replies, against a real master: one hostile Submit costs its sender a refusal and
nobody else anything; no row of the ledger, however large, can make a listing fail (docs/architecture.md,
"A task dict" and "Replies are paged")."""
from __future__ import annotations

import sqlite3

import msgpack
import pytest

from zmqgrid.client import Client, build_spec
from zmqgrid.errors import ProtocolError, UsageError
from zmqgrid.model import compact_spec, validate_task_spec
from zmqgrid.protocol import Error, Reply, Submit, SubmitAcks

from .helpers import Harness, run_cli, wait_until

pytestmark = pytest.mark.timeout(120)

HUGE = "x" * (9 * 1024 * 1024)     # a 9 MB text: two of them pass any client's 16 MiB message limit
SMALL_CLIENT = 64 * 1024            # a client that accepts at most 64 KiB a message


def raw_submit(client: Client, req_id: int, spec: dict) -> None:
    """A Submit sent as a hostile client would: no validation on this side."""
    client._send(Submit(req_id, [spec], False))


def answer_to(client: Client, req_id: int) -> object:
    """The master's answer to `req_id`: a Reply, a SubmitAcks line or an Error (None if none came in 15 s)."""
    while (msg := client._receive(15)) is not None:
        if isinstance(msg, (Reply, Error)) and msg.req_id == req_id:
            return msg
        if isinstance(msg, SubmitAcks) and any(r == req_id for r, _ in msg.pairs()):
            return msg
    return None


# ------------------------------------------------------------------ the limits themselves

@pytest.mark.parametrize("field, value, says", [
    ("timeout", 2 ** 63, "30 days"), ("timeout", float("inf"), "30 days"), ("timeout", float("nan"), "timeout"),
    ("retry_backoff", 2 ** 63, "retry_backoff"), ("retry_backoff", float("inf"), "retry_backoff"),
    ("limit_concurrency", 2 ** 63, "limit_concurrency"), ("name", "n" * 201, "200 characters"),
    ("tags", ["t" * 65], "64 characters"), ("tags", [f"t{i}" for i in range(33)], "32 tags"), ("tags", [""], "tag"),
    ("cwd", "/" * 4097, "4096"), ("env", {f"K{i}": "v" for i in range(257)}, "256 entries"),
    ("env", {"K": "v" * (32 * 1024 + 1)}, "env"), ("env", {"K" * 257: "v"}, "env"), ("command", "c" * (128 * 1024 + 1), "command"),
    ("command", ["c"] * 4097, "command"), ("limit_key", "k" * 201, "limit_key"), ("device", "d" * 201, "device"),
    ("group", "g" * 65, "group"),
    ("retry_on", "ValueError", "list"), ("retry_on", [f"E{i}" for i in range(33)], "32 names"),
    ("retry_on", ["E" * 129], "128 characters"), ("no_retry_on", ["requests.ConnectionError"], "class name alone"),
    ("no_retry_on", [""], "Python identifiers"), ("no_retry_on", [7], "Python identifiers"),
], ids=lambda v: v if isinstance(v, str) and len(v) < 20 else type(v).__name__)
def test_every_field_of_a_shell_task_is_bounded_and_the_refusal_names_the_field(field, value, says):
    spec = {"id": "t1", "kind": "shell", "command": "true", "limit_key": "k", field: value}
    with pytest.raises(ProtocolError) as refused:
        validate_task_spec(spec)
    assert field in refused.value.message and says in refused.value.message, refused.value.message


def nested(depth: int) -> list:
    value: list = []
    for _ in range(depth - 1):
        value = [value]
    return value


@pytest.mark.parametrize("args, kwargs, says", [
    ([nested(33)], {}, "32 deep"), ([], {"k": nested(40)}, "32 deep"), (["a" * (1 << 20)], {}, "1 MiB"),
    ([["a" * 1000] * 1100], {}, "1 MiB"), ([], {"k" * 100: "v" * (1 << 20)}, "1 MiB"),
])
def test_python_arguments_are_bounded_in_size_and_depth_also_in_a_batch_of_calls(args, kwargs, says):
    from zmqgrid.model import validate_batch
    spec = {"id": "p1", "kind": "python", "function": "tests.tasks:add", "args": args, "kwargs": kwargs}
    with pytest.raises(ProtocolError, match=says):
        validate_task_spec(spec)
    with pytest.raises(ProtocolError, match=says):   # the fast path of Client.map's batches checks them too
        validate_batch([{"id": "a1", "args": [1]}, {"id": "a2", "args": args, "kwargs": kwargs}],
                       {"kind": "python", "function": "tests.tasks:add"})


def test_the_largest_values_within_the_limits_are_accepted():
    spec = validate_task_spec({"id": "t1", "kind": "shell", "command": "c" * (128 * 1024), "name": "n" * 200,
                               "tags": ["t" * 64] * 32, "cwd": "/" * 4096, "timeout": 30 * 86400,
                               "retry_backoff": 86400, "env": {f"K{i}": "v" * 1000 for i in range(256)},
                               "limit_key": "k" * 200, "limit_concurrency": 2 ** 31 - 1})
    assert spec["timeout"] == 30 * 86400 and len(spec["env"]) == 256
    call = validate_task_spec({"id": "p1", "kind": "python", "function": "tests.tasks:add",
                               "args": [nested(32), "a" * 1000], "kwargs": {"k": 1.5}})
    assert call["args"][1] == "a" * 1000


def test_retry_lists_are_kept_normalised_and_may_not_name_one_type_twice():
    spec = validate_task_spec({"id": "p1", "kind": "python", "function": "tests.tasks:add",
                               "retry_on": ("ConnectionError", "E" * 128), "no_retry_on": []})
    assert spec["retry_on"] == ["ConnectionError", "E" * 128] and spec["no_retry_on"] is None
    assert compact_spec(spec)["retry_on"] == ["ConnectionError", "E" * 128] and "no_retry_on" not in compact_spec(spec)
    assert build_spec(python="tests.tasks:add", no_retry_on="ValueError")["no_retry_on"] == ["ValueError"]
    with pytest.raises(UsageError, match="both name KeyError"):
        build_spec(shell="true", retry_on=["KeyError", "OSError"], no_retry_on=["KeyError"])


def test_build_spec_refuses_with_a_usage_error_naming_the_field():
    with pytest.raises(UsageError, match="name"):
        build_spec(shell="true", name=HUGE)


# ------------------------------------------------------------------ against a real master

@pytest.fixture
def master(tmp_path):
    harness = Harness(tmp_path)
    try:
        harness.start_master()
        yield harness
    finally:
        harness.stop()


def test_a_submit_with_timeout_2_63_is_refused_and_the_other_clients_submits_of_its_turn_are_committed(master):
    hostile, honest = master.client(), master.client()
    good = [compact_spec(build_spec(shell="true")) for _ in range(2)]
    # When an honest client's Submits go out around a hostile one's, so that they share the master's turns
    raw_submit(honest, 1, good[0])
    raw_submit(hostile, 7, {"id": "evil-1", "kind": "shell", "command": "true", "timeout": 2 ** 63})
    raw_submit(honest, 2, good[1])
    # Then the hostile Submit alone is refused, naming the field; the honest ones are acknowledged
    refused = answer_to(hostile, 7)
    assert isinstance(refused, Error) and refused.code == "bad_request" and "timeout" in refused.message, refused
    for req_id, spec in ((1, good[0]), (2, good[1])):
        acked = answer_to(honest, req_id)
        assert isinstance(acked, Reply) and acked.data["ids"] == [spec["id"]], acked
    # and no turn failed to commit, so nothing was withheld or reloaded
    assert honest.task(good[1]["id"])["state"] == "queued"
    with pytest.raises(Exception, match="no task"):
        honest.task("evil-1")
    log = (master.dir / "master.log").read_text()
    assert "could not commit" not in log and "withheld" not in log, log[-2000:]


def test_tasks_with_9_mb_names_are_refused_and_tasks_list_still_works(master):
    hostile = master.client(timeout_s=20)
    for req_id in (1, 2):
        raw_submit(hostile, req_id, {"id": f"big-{req_id}", "kind": "shell", "command": "true", "name": HUGE})
        refused = answer_to(hostile, req_id)
        assert isinstance(refused, Error) and refused.code == "bad_request" and "name" in refused.message, refused
    listed = run_cli("tasks", "list", "--master", master.url, cwd=master.dir)
    assert listed.returncode == 0, listed.stderr


def test_listing_works_with_huge_rows_already_in_the_ledger_also_after_a_restart(master):
    # Given a worker's device row and two tasks, whose host and names are then made 9 MB each in the ledger
    # itself (rows written before the limits existed)
    client = master.client()
    ids = client.submit([build_spec(shell="true") for _ in range(2)])
    master.start_worker("w1")
    master.wait_online(client, "w1")
    wait_until(lambda: all(client.task(i)["state"] == "done" for i in ids), 60, "both tasks done")
    master.stop()
    master.workers.clear()
    with sqlite3.connect(master.db) as db:
        db.execute("UPDATE devices SET hostname = ?", (HUGE,))
        db.execute("INSERT INTO devices (device_id, hostname, state, metrics, tags) "
                   "VALUES ('legacy', ?, 'offline', '{\"cpu_percent\": \"x\"}', '[1, \"t\"]')", (HUGE,))
        db.execute("UPDATE tasks SET name = ?", (HUGE,))
    # When the master starts again over that ledger
    master.clients.clear()
    master.start_master()
    # Then `devices list` and `tasks list` answer, with the long texts cut
    for args in (("devices", "list"), ("tasks", "list"), ("devices", "list", "--json"), ("tasks", "list", "--json"),
                 ("tasks", "show", ids[0])):
        result = run_cli(*args, "--master", master.url, cwd=master.dir)
        assert result.returncode == 0, (args, result.stderr)
        assert len(result.stdout) < (100_000 if "show" in args else 20_000), args   # one task: cut to fit
    rows = master.client().devices()
    assert {r["device_id"] for r in rows} == {"w1", "legacy"}
    assert all(r["hostname"].startswith("xxx") and len(r["hostname"]) <= 1025 for r in rows)


def test_a_client_with_a_small_message_limit_gets_every_row_and_all_output_in_pages(master):
    # Given 300 tasks with 200-character names (about 90 KiB of listing) and a task with 200 KiB of output
    client = master.client()
    ids = client.submit([build_spec(shell="true", name=f"{i:03d}" + "n" * 197) for i in range(300)])
    loud = client.submit(build_spec(python="tests.tasks:print_bytes", args=[200_000]))[0]
    master.start_worker("w1", concurrency=4)
    wait_until(lambda: client.task(loud)["state"] in ("done", "failed"), 60, "the loud task to end")
    # When a client that accepts at most 64 KiB a message lists them and reads the output
    with Client(master.url, timeout_s=10, max_message_bytes=SMALL_CLIENT, curve=master.curve) as small:
        rows = small.tasks(limit=1000)
        out = small.logs(loud)
        shown = small.task(ids[0])
    # Then it gets every row, the whole output and the task, each answer within its limit
    assert {r["id"] for r in rows} == set(ids) | {loud}
    assert len(out["stdout"]) == out["stdout_length"] >= 200_000
    assert shown["name"] == "000" + "n" * 197


def test_client_map_refuses_an_oversized_call_before_sending_anything(tmp_path):
    # No master at all: the refusal comes before anything is sent
    with Client("tcp://127.0.0.1:9", timeout_s=0.5) as client:
        with pytest.raises(UsageError, match="item 1 of map's arguments: .*args"):
            client.map("tests.tasks:echo", [(1,), (nested(40),)])


def test_a_page_fits_its_budget_and_always_moves_on_whatever_the_rows_hold():
    from zmqgrid.master import paging
    rows = [{"id": str(i), "name": "n" * 50_000, "metrics": {str(k): list(range(200)) for k in range(200)},
             "deep": nested(50)} for i in range(5)]
    for room in (2048, 20_000, 300_000):
        seen, start = [], 0
        while start < len(rows):
            shown, cut = paging.page(rows[start:], room)
            assert shown and paging.size(shown) <= room, (room, paging.size(shown))
            seen += [r["id"] for r in shown]
            start += len(shown)
        assert seen == [r["id"] for r in rows]
    assert paging.fit({"text": "t" * 100_000}, 5000)["text"].endswith(paging.CUT)


def test_a_refused_task_of_a_batch_is_named_by_its_place_in_the_submit():
    from zmqgrid.model import validate_batch
    good = {"id": "a1", "kind": "shell", "command": "true"}
    with pytest.raises(ProtocolError, match=r"^task 3 of 3 in this Submit: task field 'timeout'"):
        validate_batch([good, dict(good, id="a2"), dict(good, id="a3", timeout=2 ** 63)])
    with pytest.raises(ProtocolError, match=r"^task 2 of 2 in this Submit: .*args"):
        validate_batch([{"id": "c1", "args": [1]}, {"id": "c2", "args": [nested(40)]}],
                       {"kind": "python", "function": "tests.tasks:add"})
    with pytest.raises(ProtocolError, match=r"^task field 'timeout'"):   # one task: no place to name
        validate_batch([dict(good, timeout=-1)])


@pytest.mark.parametrize("field, value", [("id", "abc\n"), ("group", "g\n"), ("device", "w1\n"), ("device", "a b"),
                                          ("function", "zmqgrid.samples:noop\n")])
def test_an_id_a_device_or_a_function_with_a_final_newline_or_a_space_is_refused(field, value):
    # `$` in a regular expression also matches before a final newline: such an id would pass the spec check and
    # then be refused in every worker message that names it
    spec = {"kind": "python", "function": "zmqgrid.samples:noop", field: value}
    with pytest.raises(ProtocolError) as refused:
        validate_task_spec(spec)
    assert field in str(refused.value)


DEEP = [msgpack.unpackb(b"\x91" * 1000 + b"\xc0"), msgpack.unpackb(b"\x81\xa1a" * 1000 + b"\xc0")]


@pytest.mark.parametrize("field", ["id", "kind", "function", "args", "kwargs", "env", "tags", "name", "command", "cwd",
                                   "priority", "timeout", "retries", "device", "group", "limit_key", "source"])
def test_a_value_nested_1000_deep_in_any_field_is_refused_as_a_bad_spec_never_a_recursion_error(field):
    # The wire's schema bounds a spec's nesting too; this check must hold on its own (the CLI and build_spec use it)
    for deep in DEEP:
        for spec in ({"kind": "python", "function": "m:f", field: deep}, {"kind": "shell", "command": "true", field: deep}):
            try:
                validate_task_spec(spec)
            except ProtocolError:
                continue
