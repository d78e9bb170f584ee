"""A turn's messages leave only after its commit, in the order that keeps workers busy and clients answered; if the
commit fails, every answer that reported the turn's state becomes `unavailable`, and nothing else of it leaves."""
from __future__ import annotations

from zmqgrid.master.turn import Turn
from zmqgrid.protocol import Command, Error, Finished, Reply, ResultAck, SubmitAcks, Tasks, decode


class Wire:
    """The Outlet a turn is delivered to (the master's ROUTER and PUB), as the decoded messages each peer gets."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, object, list[str] | None]] = []
        self.published: list[tuple[bytes, object]] = []

    def send(self, identity: bytes, frames: list[bytes], task_ids: list[str] | None = None) -> None:
        self.sent.append((identity, decode(frames), task_ids))

    def publish(self, topic: bytes, frames: list[bytes]) -> None:
        self.published.append((topic, decode(frames)))


def a_full_turn() -> Turn:
    turn = Turn()
    turn.ack_results(b"w1", [["t0", 1]])
    turn.ack(b"c1", Reply(7, {"ids": ["t1"]}).encode())
    turn.ack_submit(b"c2", 8, ["t2", "t3"])
    turn.send(b"c3", Reply(9, {"tasks": []}).encode())         # an answer read from the turn's view
    turn.error(b"c4", 10, "bad_request", "no such thing")      # a refusal
    turn.send(b"w2", Command(1, "drain", {}).encode())         # a command a worker lacks
    turn.ended("t0", {"id": "t0", "state": "done"}, (b"c1",))
    turn.dispatch(b"w1", [{"id": "t1", "attempt": 1}])
    turn.ack_results(b"w2", [["t4", 2]])
    turn.publish(b"device.w2", Command(2, "resume", {}).encode())
    return turn


def test_a_turn_is_delivered_tasks_first_with_the_result_acks_riding_on_them():
    # Given a turn holding one of everything
    wire = Wire()
    # When it is taken and delivered after its commit
    a_full_turn().take().deliver(wire)
    # Then the worker's tasks go first (its result acks with them), then replies, notices, the other result acks
    kinds = [(identity, type(msg).__name__) for identity, msg, _ in wire.sent]
    assert kinds == [(b"w1", "Tasks"), (b"c1", "Reply"), (b"c2", "SubmitAcks"), (b"c3", "Reply"), (b"c4", "Error"),
                     (b"w2", "Command"), (b"c1", "Finished"), (b"w2", "ResultAck")]
    tasks = wire.sent[0]
    assert tasks[1] == Tasks([{"id": "t1", "attempt": 1}], [("t0", 1)]) and tasks[2] == ["t1"]
    assert wire.sent[2][1] == SubmitAcks([[8, ["t2", "t3"]]])
    assert wire.sent[6][1] == Finished([{"id": "t0", "state": "done"}])
    assert wire.sent[7][1] == ResultAck([("t4", 2)])
    assert [topic for topic, _ in wire.published] == [b"device.w2"]


def test_a_turn_whose_commit_failed_answers_unavailable_and_sends_nothing_else():
    # Given a turn holding one of everything, whose commit failed
    wire = Wire()
    a_full_turn().take().refuse(wire, "disk I/O error")
    # Then the refusal stands, each answer that reported the turn's state is `unavailable` under its request id
    assert [(identity, msg) for identity, msg, _ in wire.sent] == [
        (b"c4", Error(10, "bad_request", "no such thing")),
        (b"c1", Error(7, "unavailable", "the master could not commit: disk I/O error")),
        (b"c2", Error(8, "unavailable", "the master could not commit: disk I/O error")),
        (b"c3", Error(9, "unavailable", "the master could not commit: disk I/O error"))]
    # And no task, notice, result ack, command or publication leaves
    assert wire.published == []


def test_taking_a_turn_hands_over_what_it_holds_and_starts_an_empty_one():
    turn = a_full_turn()
    taken = turn.take()
    assert taken.finished == {"t0": {"id": "t0", "state": "done"}} and taken.dispatched
    assert vars(turn) == vars(Turn())
    wire = Wire()
    turn.deliver(wire)
    assert (wire.sent, wire.published) == ([], [])
