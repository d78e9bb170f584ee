"""A worker sends only results the master's schema takes (protocol.RESULT): an error's long texts are cut to their
bounds, and a result that cannot fit is reported failed (`UnsendableResult`) instead of being refused and re-sent
for ever. Real master, real worker, real python tasks."""
from __future__ import annotations

import pytest

from zmqgrid import protocol as p
from zmqgrid.client import build_spec
from zmqgrid.model import TaskError
from zmqgrid.worker.outbox import Outbox
from zmqgrid.worker.results import AttemptResult

from ..tasks import nested

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def cluster(shared_cluster):
    """One cluster for the module: its tests kill nothing and read only their own tasks (and a count of bad
    messages that must stay 0 all along)."""
    return shared_cluster


def test_a_value_nested_past_the_bound_ends_failed_with_the_reason_and_the_worker_goes_on(cluster):
    client = cluster.client()
    deep = client.run(build_spec(python="tests.tasks:nested", args=[p.MAX_VALUE_DEPTH + 5], retries=0), timeout_s=30)
    assert deep["state"] == "failed", deep
    assert deep["error"]["type"] == "UnsendableResult" and "nested at most 32 deep" in deep["error"]["message"]
    fits = client.run(build_spec(python="tests.tasks:nested", args=[p.MAX_VALUE_DEPTH]), timeout_s=30)
    assert fits["state"] == "done" and fits["value"] == nested(p.MAX_VALUE_DEPTH)
    assert client.status()["bad_messages"] == 0


def test_an_exception_with_a_huge_message_is_cut_to_the_bound_not_refused(cluster):
    client = cluster.client()
    result = client.run(build_spec(python="tests.tasks:raise_value_error", args=["x" * 100_000], retries=0),
                        timeout_s=30)
    assert result["state"] == "failed" and result["error"]["type"] == "ValueError"
    message = result["error"]["message"]
    assert len(message) == p.MAX_ERROR_MESSAGE and "zmqgrid: cut from 100000" in message
    assert client.status()["bad_messages"] == 0


def test_a_return_value_past_the_size_bound_ends_failed_with_the_reason(cluster):
    client = cluster.client()
    big = client.run(build_spec(python="tests.tasks:text", args=[p.MAX_VALUE_BYTES + 1], retries=0),
                     timeout_s=60)
    assert big["state"] == "failed", {k: v for k, v in big.items() if k != "value"}
    assert big["error"]["type"] == "UnsendableResult" and f"at most {p.MAX_VALUE_BYTES} bytes" in big["error"]["message"]
    assert client.status()["bad_messages"] == 0


def test_results_with_big_values_go_in_messages_the_master_accepts():
    # Six results whose values take 3 MiB each: more than one message of a 16 MiB limit can carry
    outbox = Outbox(p.DEFAULT_MAX_MESSAGE_BYTES)
    for n in range(6):
        outbox.add(AttemptResult(f"t{n}", 1, "done", value="x" * (3 << 20)))
    messages = outbox.messages(now=100.0)
    # Each message fits the master's max_message_bytes, and together they carry every result
    assert all(len(b"".join(m.encode())) < p.DEFAULT_MAX_MESSAGE_BYTES for m in messages), \
        [len(b"".join(m.encode())) for m in messages]
    assert sorted(r["id"] for m in messages for r in m.results) == [f"t{n}" for n in range(6)]


def test_an_exception_type_name_past_its_bound_is_cut_on_one_line_not_made_unsendable():
    outbox = Outbox(p.DEFAULT_MAX_MESSAGE_BYTES)
    outbox.add(AttemptResult("t1", 1, "failed", error=TaskError("E" * (p.MAX_ERROR_TYPE + 50), "m")))
    (message,) = outbox.messages(now=100.0)
    (result,) = message.results
    assert result["error"]["type"] == "E" * p.MAX_ERROR_TYPE
