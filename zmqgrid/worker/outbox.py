"""The worker's outbox: every result is kept until the master acknowledges it, and re-sent until then."""
from __future__ import annotations

import time

from ..protocol import Results

RESEND_AFTER_S = 5.0
# What the master reads of a result besides its key and state (it times the attempt's end itself).
_RECORDED = ("exit_code", "value", "error", "stdout", "stderr", "started_at")


class Outbox:
    """Results by (task id, attempt), with when each was last sent, and the slots freed since the last send."""

    def __init__(self, max_message_bytes: int) -> None:
        self.entries: dict[tuple[str, int], list] = {}   # key -> [result, last sent (monotonic)]
        self.freed = 0
        self.batch_bytes = max_message_bytes // 2

    def __len__(self) -> int:
        return len(self.entries)

    def keys(self) -> list[list]:
        return [list(k) for k in list(self.entries)]

    def add(self, result: dict) -> None:
        """Keep `result` as it goes on the wire: what the master records, nothing that is nil or empty output."""
        wire = {"id": result["id"], "attempt": result["attempt"], "state": result["state"]}
        for key in _RECORDED:
            value = result.get(key)
            if value is not None and not (value == "" and key in ("stdout", "stderr")):
                wire[key] = value
        self.entries[(result["id"], result["attempt"])] = [wire, 0.0]
        self.freed += 1

    def ack(self, keys: list) -> None:
        for key in keys:
            self.entries.pop(tuple(key), None)

    def resend_all(self) -> None:
        for entry in self.entries.values():
            entry[1] = 0.0

    def messages(self, now: float, started: list | None = None) -> list[Results]:
        """Results messages for what is due (new, or unacknowledged for RESEND_AFTER_S), with credit and the
        `started` keys on the last. Batched, each batch well under MAXMSGSIZE."""
        due = [entry for entry in self.entries.values() if now - entry[1] >= RESEND_AFTER_S]
        if not due and not self.freed:
            return [Results([], 0, started)] if started else []
        out, batch, size = [], [], 0
        for entry in due:
            entry[1] = now
            cost = len(entry[0].get("stdout") or "") + len(entry[0].get("stderr") or "") + 512
            if batch and size + cost > self.batch_bytes:
                out.append(Results(batch, 0))
                batch, size = [], 0
            batch.append(entry[0])
            size += cost
        out.append(Results(batch, self.freed, started or []))
        self.freed = 0
        return out


def cancelled_result(task: dict, reason: str) -> dict:
    """The result of an attempt stopped before it produced one of its own."""
    return {"id": task["id"], "attempt": task["attempt"], "state": "cancelled", "exit_code": None, "value": None,
            "error": {"type": "Cancelled", "message": reason, "traceback": ""}, "stdout": "", "stderr": "",
            "started_at": None, "finished_at": time.time(), "duration_s": 0.0}


def failed_result(task_id: str, attempt: int, error: Exception) -> dict:
    result = cancelled_result({"id": task_id, "attempt": attempt}, "")
    result.update(state="failed", error={"type": type(error).__name__, "message": str(error), "traceback": ""})
    return result
