"""The worker's outbox: every result is kept until the master acknowledges it, and re-sent until then."""
from __future__ import annotations

from ..errors import ProtocolError
from ..fields import Bad
from ..model import TaskError, TaskState
from ..text import cut_middle
from ..protocol import (MAX_ERROR_MESSAGE, MAX_ERROR_TRACEBACK, MAX_ERROR_TYPE, MAX_RESULTS_PER_MESSAGE, MAX_TEXT,
                        RESULT, Results, packb)
from .results import AttemptResult

RESEND_AFTER_S = 5.0


class Outbox:
    """Results by (task id, attempt), with when each was last sent; `freed`: results added since the last send."""

    def __init__(self, max_message_bytes: int) -> None:
        self.entries: dict[tuple[str, int], list] = {}   # key -> [result, last sent (monotonic), bytes]
        self.freed = 0
        self.batch_bytes = max_message_bytes // 2

    def __len__(self) -> int:
        return len(self.entries)

    def keys(self) -> list[list]:
        return [list(k) for k in list(self.entries)]

    def add(self, result: AttemptResult) -> None:
        """Keep `result` as it goes on the wire (`to_wire()`), fitted to the master's schema."""
        wire = result.to_wire()
        # What it adds to a Results message, packed once here (a non-ASCII output or a long traceback counts as the
        # bytes it takes, not as its characters), so a message is cut well under the master's max_message_bytes.
        # A result of its id, attempt, state and start only (a no-op call's) fits as it is and costs a few bytes.
        if result.stdout or result.stderr or result.value is not None or result.error is not None:
            wire = fit(wire)
            cost = len(packb(wire)) + 64
        else:
            cost = 512
        self.entries[(result.id, result.attempt)] = [wire, 0.0, cost]
        self.freed += 1

    def ack(self, keys: list[tuple[str, int]]) -> None:
        for key in keys:
            self.entries.pop(key, None)

    def resend_all(self) -> None:
        for entry in self.entries.values():
            entry[1] = 0.0

    def messages(self, now: float, started: list | None = None, credit: int = 0,
                 returned: list | None = None) -> list[Results]:
        """Results messages for what is due (new, or unacknowledged for RESEND_AFTER_S), with `credit` (the slots'
        owner counts it), the `started` and `returned` keys on the last. Batched, each batch well under MAXMSGSIZE."""
        due = [entry for entry in self.entries.values() if now - entry[1] >= RESEND_AFTER_S]
        if not due:
            self.freed = 0
            if not (started or credit or returned):
                return []
            return [Results([], credit, started or [], returned=returned or [])]
        out, batch, size = [], [], 0
        for entry in due:
            entry[1] = now
            cost = entry[2]
            if batch and (size + cost > self.batch_bytes or len(batch) >= MAX_RESULTS_PER_MESSAGE):
                out.append(Results(batch, 0))
                batch, size = [], 0
            batch.append(entry[0])
            size += cost
        out.append(Results(batch, credit, started or [], returned=returned or []))
        self.freed = 0
        return out


def fit(wire: dict) -> dict:
    """The result as the master's schema takes it (protocol.RESULT): an error's texts cut to their bounds, and a
    result that still does not fit (a value nested too deep, a type msgpack cannot carry) turned into a failed one
    saying why. A result the master refused would stay in the outbox, re-sent for ever, its task never ending."""
    for stream in ("stdout", "stderr"):
        if isinstance(wire.get(stream), str):
            wire[stream] = cut_middle(wire[stream], MAX_TEXT)
    error = wire.get("error")
    if isinstance(error, dict):
        wire["error"] = TaskError(str(error.get("type") or "")[:MAX_ERROR_TYPE],   # one line: no cut marker in it
                                  cut_middle(str(error.get("message") or ""), MAX_ERROR_MESSAGE),
                                  cut_middle(str(error.get("traceback") or ""), MAX_ERROR_TRACEBACK),
                                  error.get("permanent") is True).to_wire()   # permanent: the master does not retry it
    try:
        RESULT.check(wire)
    except Bad as e:
        why = ProtocolError(f"result{e.where()}: expected {e.allowed}, got {e.got}")
        return AttemptResult(wire["id"], wire["attempt"], TaskState.FAILED,
                             error=TaskError("UnsendableResult", cut_middle(str(why), MAX_ERROR_MESSAGE))).to_wire()
    return wire
