"""A turn's Submits are applied together (one ledger look-up for re-sent ids): its faults answer every Submit and
change nothing; an id that ended earlier in the same turn is not taken as new."""
from __future__ import annotations

import time

import pytest

from zmqgrid.client import build_spec
from zmqgrid.master.board import Board
from zmqgrid.master.handlers import Handlers
from zmqgrid.master.turn import SUBMIT_ACKS_MAX_IDS, submit_acks_messages
from zmqgrid.model import compact_spec, validate_task_spec
from zmqgrid.protocol import Control, Error, Reply, Submit, decode

from ..helpers import db_query
from .in_process import handlers_on

pytestmark = pytest.mark.timeout(30)


def receive(handlers: Handlers, message) -> None:
    handlers.on_router(b"client", decode(message.encode()), time.monotonic(), time.time())


def answers(handlers: Handlers, board: Board) -> dict[int, object]:
    turn = board.turn.take()
    frames = [f for _, f in turn.acks] + [f for _, f in turn.sends]
    return {m.req_id: m for m in map(decode, frames)}


def test_a_failed_look_up_answers_every_submit_unavailable_and_takes_none(tmp_path):
    store, board, handlers = handlers_on(tmp_path / "ledger.db")
    # A task whose id sorts above the new ones (a client with a faster clock): their look-up needs the ledger
    store.insert_tasks([(validate_task_spec({"kind": "shell", "command": "true", "id": "f" * 24}), 0, None)], 1.0)
    store.commit()
    specs = [build_spec(python="tests.tasks:add", args=[i, 1]) for i in range(3)]
    for n, spec in enumerate(specs, 1):
        receive(handlers, Submit(n, [compact_spec(spec)], False))
    # When the ledger cannot be read as the turn's Submits are applied (a real closed connection, not a stub)
    store.db.conn.close()
    handlers.apply_submits(time.time())
    # Then every Submit is answered `unavailable`, none is acknowledged, and nothing is queued
    replies = answers(handlers, board)
    assert sorted(replies) == [1, 2, 3]
    assert all(isinstance(m, Error) and m.code == "unavailable" for m in replies.values()), replies
    assert board.tasks == {} and not board.queue and store.commit() == 0   # nothing staged


def test_a_submit_that_fails_part_way_is_answered_and_leaves_no_task_without_its_row(tmp_path):
    store, board, handlers = handlers_on(tmp_path / "ledger.db")
    specs = [[build_spec(python="tests.tasks:add", args=[n, i]) for i in range(3)] for n in range(3)]
    for n, batch in enumerate(specs, 1):
        receive(handlers, Submit(n, [compact_spec(s) for s in batch], False))
    # When the second Submit's last task cannot be written (a bug's stand-in: a value its row cannot be packed
    # from, though it passed validation), after its first two were looked at
    handlers.submits[1][2][2]["args"] = [object()]
    handlers.apply_submits(time.time())
    store.commit()
    # Then that Submit is answered with an error, the other two are acknowledged, and the tasks held in memory and
    # queued are exactly the acknowledged ones, each with its row in the ledger
    replies = answers(handlers, board)
    assert isinstance(replies[2], Error) and replies[2].code == "bad_request"
    acked = replies[1].data["ids"] + replies[3].data["ids"]
    assert acked == [s["id"] for s in specs[0] + specs[2]]
    assert set(board.tasks) == set(acked)
    queued = []
    while (popped := board.queue.pop()):
        queued.append(popped)
    assert len(queued) == len(acked)
    assert {r[0] for r in db_query(store.path, "SELECT id FROM tasks")} == set(acked)


def test_a_task_cancelled_in_the_turn_it_was_submitted_is_not_created_again_by_a_resend(tmp_path):
    store, board, handlers = handlers_on(tmp_path / "ledger.db")
    spec = compact_spec(build_spec(python="tests.tasks:add", args=[1, 1]))
    # When one turn holds: the Submit, a cancel of it, and the same Submit re-sent
    receive(handlers, Submit(1, [spec], False))
    receive(handlers, Control(2, "cancel", {"ids": [spec["id"]]}))
    receive(handlers, Submit(3, [spec], False))
    handlers.apply_submits(time.time())
    store.commit()
    # Then both Submits are acknowledged with the id, the cancel found it, and it stays cancelled, once
    replies = answers(handlers, board)
    assert isinstance(replies[1], Reply) and replies[1].data == {"ids": [spec["id"]]}
    assert isinstance(replies[3], Reply) and replies[3].data == {"ids": [spec["id"]]}
    assert replies[2].data == {spec["id"]: "cancelled"}
    assert spec["id"] not in board.tasks and not board.queue.pop()
    assert db_query(store.path, "SELECT state, count(*) FROM tasks GROUP BY state") == [("cancelled", 1)]
    store.close()


def test_submits_with_batch_acks_are_answered_together_in_arrival_order(tmp_path):
    store, board, handlers = handlers_on(tmp_path / "ledger.db")
    specs = [compact_spec(build_spec(python="tests.tasks:add", args=[i, 1])) for i in range(4)]
    # When one turn holds three Submits with batch_acks from one client and one without
    for n in (3, 1, 2):
        receive(handlers, Submit(n, [specs[n]], False, {}, True))
    receive(handlers, Submit(9, [specs[0]], False))
    handlers.apply_submits(time.time())
    store.commit()
    # Then the three are one SubmitAcks line each, in the order they came; the other gets its own Reply
    lines = board.turn.submit_acks
    assert lines == {b"client": [[3, [specs[3]["id"]]], [1, [specs[1]["id"]]], [2, [specs[2]["id"]]]]}
    replies = answers(handlers, board)
    assert list(replies) == [9] and replies[9] == Reply(9, {"ids": [specs[0]["id"]]})
    (message,) = submit_acks_messages(lines[b"client"])
    assert decode(message.encode()).pairs() == [(3, [specs[3]["id"]]), (1, [specs[1]["id"]]), (2, [specs[2]["id"]])]
    assert db_query(store.path, "SELECT count(*) FROM tasks") == [(4,)]
    store.close()


def test_a_turn_of_many_ids_is_answered_in_several_submit_acks_without_splitting_a_submit():
    lines = [[n, [f"t{n}-{i}" for i in range(20_000)]] for n in range(1, 5)] + [[5, ["last"]]]
    messages = submit_acks_messages(lines)
    # 20,000 ids a Submit, at most 50,000 a message: two Submits per message, the fifth with the fourth
    assert [[n for n, _ in m.pairs()] for m in messages] == [[1, 2], [3, 4, 5]]
    assert all(sum(len(ids) for _, ids in m.pairs()) <= SUBMIT_ACKS_MAX_IDS for m in messages)
    assert [line for m in messages for line in m.acks] == lines


def one_task_submits(handlers: Handlers, count: int, notify=lambda n: False, client: bytes = b"client") -> list[dict]:
    specs = [compact_spec(build_spec(python="tests.tasks:add", args=[i, 1])) for i in range(count)]
    for n, spec in enumerate(specs, 1):
        handlers.on_router(client, decode(Submit(n, [spec], notify(n)).encode()), time.monotonic(), time.time())
    return specs


def test_a_clients_one_task_submits_of_a_turn_are_staged_as_one_and_answered_each_with_its_own_id(tmp_path):
    store, board, handlers = handlers_on(tmp_path / "ledger.db")
    specs = one_task_submits(handlers, 50)
    handlers.apply_submits(time.time())
    # Then the 50 inserts are one staged change (one executemany), and each Submit is acknowledged with its id
    assert len(store._ops) == 1
    store.commit()
    replies = answers(handlers, board)
    assert replies == {n: Reply(n, {"ids": [spec["id"]]}) for n, spec in enumerate(specs, 1)}
    assert [board.queue.pop() for _ in specs] == [spec["id"] for spec in specs]   # queued in submit order
    assert db_query(store.path, "SELECT count(*) FROM tasks WHERE state = 'queued'") == [(50,)]
    store.close()


def test_submits_that_together_pass_the_per_client_cap_are_taken_one_by_one_as_if_alone(tmp_path):
    store, board, handlers = handlers_on(tmp_path / "ledger.db")
    board.quota.most = 3
    specs = one_task_submits(handlers, 5)
    handlers.apply_submits(time.time())
    store.commit()
    # Then the first three are taken and the last two refused, as five Submits in five turns would be
    replies = answers(handlers, board)
    assert [type(replies[n]).__name__ for n in range(1, 6)] == ["Reply"] * 3 + ["Error"] * 2
    assert {replies[n].code for n in (4, 5)} == {"too_large"}
    assert set(board.tasks) == {spec["id"] for spec in specs[:3]}
    assert db_query(store.path, "SELECT count(*) FROM tasks") == [(3,)]
    store.close()


def test_a_fan_out_submit_between_one_task_submits_gets_its_own_ids_and_notify_is_kept_per_submit(tmp_path):
    store, board, handlers = handlers_on(tmp_path / "ledger.db")
    first = one_task_submits(handlers, 2)
    # A task for all workers, of which none is online: it fans out to no task at all
    receive(handlers, Submit(3, [compact_spec(build_spec(shell="uptime", all=True))], False))
    later = [compact_spec(build_spec(python="tests.tasks:add", args=[9, i])) for i in range(2)]
    receive(handlers, Submit(4, [later[0]], False))
    receive(handlers, Submit(5, [later[1]], True))
    handlers.apply_submits(time.time())
    store.commit()
    replies = answers(handlers, board)
    assert [replies[n].data["ids"] for n in range(1, 6)] == [[first[0]["id"]], [first[1]["id"]], [],
                                                             [later[0]["id"]], [later[1]["id"]]]
    assert [board.tasks[spec["id"]].notify for spec in first + later] == [(), (), (), (b"client",)]
    store.close()


def test_one_task_submits_of_two_clients_in_one_turn_stay_each_clients_own(tmp_path):
    store, board, handlers = handlers_on(tmp_path / "ledger.db")
    specs = [compact_spec(build_spec(python="tests.tasks:add", args=[i, 2])) for i in range(4)]
    # When client a, a, b, a each send a one-task Submit with notify, in one turn
    for n, (client, spec) in enumerate(zip((b"a", b"a", b"b", b"a"), specs), 1):
        handlers.on_router(client, decode(Submit(n, [spec], True).encode()), time.monotonic(), time.time())
    handlers.apply_submits(time.time())
    store.commit()
    # Then each task is its own client's: answered to it, counted for it, and finishing tells it alone
    assert [(identity, decode(frames).data["ids"]) for identity, frames in board.turn.acks] == \
        [(c, [s["id"]]) for c, s in zip((b"a", b"a", b"b", b"a"), specs)]
    assert [(board.tasks[s["id"]].client, board.tasks[s["id"]].notify) for s in specs] == \
        [(b"a", (b"a",)), (b"a", (b"a",)), (b"b", (b"b",)), (b"a", (b"a",))]
    assert board.quota.held == {b"a": 3, b"b": 1}
    store.close()
