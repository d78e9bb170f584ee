"""What `submit --wait` shows while its tasks run: one task's output as it comes (like ssh), a batch's outcomes as
they end, why a task waits, and what becomes of the tasks when the wait ends early (--wait-timeout, Ctrl-C)."""
from __future__ import annotations

import functools
import json
import time
from typing import Any

import click

from ..client import Client
from ..errors import EXIT_FAILED, EXIT_OK, MasterUnavailable, WaitTimedOut
from ..model import FINAL_STATES, TaskState
from ..text import printable
from .render import FIELD_LIMIT, describe_error, echo_output, emit_json, field, seconds, table

POLL_S = 0.3           # how often a queued task is asked about (as `tasks logs --follow` asks for output)
TICK_S = 0.5           # a wait looks at the clock (and, every RECHECK_WAITING_S, the waiting reasons) this often
RECHECK_WAITING_S = 2.0
NOT_RETRIED = ", not retried: "


class Deadline:
    """--wait-timeout on the monotonic clock; None: no limit."""

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds
        self.at = None if seconds is None else time.monotonic() + seconds

    def left(self) -> float | None:
        return None if self.at is None else max(0.0, self.at - time.monotonic())

    def passed(self) -> bool:
        return self.at is not None and time.monotonic() >= self.at


class SubmitWait:
    """Waits for the tasks of one `submit --wait` and reports them. `names`: each id's label, as submitted.

    Text mode writes the tasks' own output and the outcomes on stdout, and everything about the wait (ids, why a
    task waits, the status line) on stderr, so `submit --wait > out.txt` keeps only what the tasks produced.
    `quiet` prints only the outcome lines at the end; `as_json` one JSON document that holds at least what the text
    says (every task's output included).
    """

    def __init__(self, client: Client, ids: list[str], names: dict[str, str], *, wait_timeout_s: float | None,
                 quiet: bool, as_json: bool) -> None:
        self.c = client
        self.ids = ids
        self.names = names
        self.deadline = Deadline(wait_timeout_s)
        self.quiet, self.as_json = quiet, as_json
        self.state: dict[str, str] = dict.fromkeys(ids, TaskState.QUEUED)   # last seen, for a wait that ends early
        self.waiting: dict[str, str] = {}                            # id -> the reason it waits, as last told
        self.told: set[str] = set()                                 # reasons told for a batch (each once)
        self.device: dict[str, str] = {}
        self.checked_at = float("-inf")
        self.lines: list[str] = []                                  # outcome lines not yet written (flush)

    def note(self, text: str) -> None:
        if not self.quiet:
            click.echo(text, err=True)

    def note_submitted(self) -> None:
        """A line per id, written at once: 20,000 writes of one line each cost more than the wait they precede."""
        if self.ids:
            self.note("\n".join(f"submitted {task_id}" for task_id in self.ids))

    def flush(self) -> None:
        """Write the outcome lines kept since the last flush, in one write (`collect` flushes every TICK_S)."""
        if self.lines:
            click.echo("\n".join(self.lines))
            self.lines.clear()

    # ------------------------------------------------------------ the three shapes of a wait

    def one(self) -> int:
        """A single task: its stdout and stderr as they come, then one status line on stderr."""
        task_id = self.ids[0]
        self.note(f"submitted {task_id}")
        if self.quiet or self.as_json:
            return self.report(self.collect())
        self.until_started(task_id)
        try:
            for item in self.c.follow(task_id, poll_s=POLL_S, timeout_s=self.deadline.left()):
                if item.stream != "attempt":
                    echo_output(item.text, err=item.stream != "stdout")
                elif item.attempt > 1:   # a retry: its output follows the first attempt's, so say where it begins
                    self.note(f"--- attempt {item.attempt}{' on ' + item.text if item.text else ''} ---")
        except MasterUnavailable:
            if self.deadline.passed():
                raise self.timed_out() from None
            raise
        summary = self.collect()[task_id]
        value = summary.get("value")
        if summary["state"] == TaskState.DONE and value is not None:
            click.echo(json.dumps(value, default=str))
        click.echo(status_line(summary), err=True)
        return EXIT_OK if summary["state"] == TaskState.DONE else EXIT_FAILED

    def batch(self) -> int:
        """Several tasks (--file): one line per task as it ends, its last output line when it did not succeed."""
        self.note_submitted()
        printing = not (self.quiet or self.as_json)
        results = self.collect(self.outcome_line if printing else None)
        if printing:
            done = sum(1 for r in results.values() if r["state"] == TaskState.DONE)
            click.echo(f"{done} of {len(results)} tasks done", err=True)
            return EXIT_OK if done == len(results) else EXIT_FAILED
        return self.report(results)

    def fan_out(self) -> int:
        """One task per worker (--all): a row per worker, like an ad-hoc command across a fleet."""
        self.note_submitted()
        results = self.collect()
        rows = []
        for task_id in self.ids:
            r, task, out = results[task_id], self.c.task(task_id), self.c.logs(task_id)
            took = task["finished_at"] - task["started_at"] if task["started_at"] and task["finished_at"] else None
            rows.append({**r, "took_s": None if took is None else round(took, 3), "stdout": out["stdout"],
                         "stderr": out["stderr"]})
        ok = sum(1 for r in rows if r["state"] == TaskState.DONE)
        if self.as_json:
            emit_json(rows)
        else:
            table(([r.get("device_id"), r["state"], r.get("exit_code"), seconds(r["took_s"]),
                    last_line(r, ("stdout", "stderr"), describe_error(r.get("error")))] for r in rows),
                  ["DEVICE", "STATE", "EXIT", "TOOK", "OUTPUT (LAST LINE)"])
            click.echo(f"{ok}/{len(rows)} workers succeeded")
        return EXIT_OK if ok == len(rows) else EXIT_FAILED

    # ------------------------------------------------------------ waiting

    def collect(self, on_end: Any = None) -> dict[str, dict]:
        """Every task's summary once it ended; on each tick, write the outcome lines kept since the last (so a
        line shows at most TICK_S after its task ended, and 20,000 lines cost a few writes, not 20,000), say why
        tasks wait and keep the deadline. The lines kept are written also when the wait ends early."""
        results: dict[str, dict] = {}
        try:
            for item in self.c.as_finished(self.ids, tick_s=TICK_S):
                if item is None:
                    self.flush()
                    if self.deadline.passed():
                        raise self.timed_out([i for i in self.ids if i not in results])
                    self.tell_waiting(results)
                    continue
                task_id, summary = item
                results[task_id] = summary
                self.state[task_id] = summary["state"]
                if on_end is not None:
                    on_end(summary)
        finally:
            self.flush()
        return results

    def until_started(self, task_id: str) -> None:
        """While the task is queued, say why (the master's own reason, as `tasks show` gives it)."""
        while True:
            task = self.c.task(task_id)
            self.state[task_id], self.device[task_id] = task["state"], task.get("device_id")
            if task["state"] != TaskState.QUEUED:
                return
            self.tell(task_id, task.get("waiting"))
            if self.deadline.passed():
                raise self.timed_out()
            time.sleep(POLL_S if self.deadline.left() is None else min(POLL_S, self.deadline.left()))

    def tell_waiting(self, ended: dict[str, dict]) -> None:
        """Ask about the first and the last unfinished task (a batch runs in order: the last waits longest)."""
        now = time.monotonic()
        if now - self.checked_at < RECHECK_WAITING_S:
            return
        unfinished = [i for i in self.ids if i not in ended]
        if not unfinished:
            return
        self.checked_at = now
        for task_id in dict.fromkeys((unfinished[0], unfinished[-1])):
            task = self.c.task(task_id)
            self.state[task_id], self.device[task_id] = task["state"], task.get("device_id")
            if task["state"] == TaskState.QUEUED:
                self.tell(task_id, task.get("waiting"))

    def tell(self, task_id: str, reason: str | None) -> None:
        """Say a reason once when it starts: per task for one task, per reason for a batch (one line, not 1,000)."""
        if not reason or self.waiting.get(task_id) == reason or (len(self.ids) > 1 and reason in self.told):
            return
        self.waiting[task_id] = reason
        self.told.add(reason)
        self.note(f"task {task_id} waiting: {printable(reason, 200)}")

    # ------------------------------------------------------------ reports

    def outcome_line(self, summary: dict) -> None:
        """One batch task as it ends: its outcome, and what it last printed when it did not succeed."""
        task_id = summary["id"]
        line = f"{summary['state']:<9} {task_id}  {_field(self.names.get(task_id), 60)}"
        if summary.get("device_id"):
            line += f"  on {_field(summary['device_id'], 64)}"
        if summary["state"] == TaskState.DONE:
            value = summary.get("value")
            if type(value) is int:   # json.dumps of an int is its str(), without the encoder's setup per call
                line += f"  = {printable(str(value), 60)}"
            elif value is not None:
                line += f"  = {printable(json.dumps(value, default=str), 60)}"
        else:
            line += f"  {describe_error(summary.get('error'), 200) or field(summary.get('reason'), 200)}"
            out = self.c.logs(task_id)
            tail = last_line(out)
            if tail != "-":
                line += f"; last output: {tail}"
        self.lines.append(line)

    def report(self, results: dict[str, dict]) -> int:
        """The end of a quiet or --json wait: the old outcome lines, or every task with its output."""
        ordered = [results[i] for i in self.ids]
        if self.as_json:
            rows = []
            for r in ordered:
                out = self.c.logs(r["id"])
                rows.append({**r, "name": self.names.get(r["id"]), "stdout": out["stdout"], "stderr": out["stderr"]})
            emit_json(rows)
        else:
            for r in ordered:
                detail = f" exit={r['exit_code']}" if r.get("exit_code") is not None else ""
                detail += f" value={json.dumps(r['value'], default=str)}" if r.get("value") is not None else ""
                failed = r.get("error") and r["state"] != TaskState.DONE
                detail += f" error={describe_error(r.get('error'))}" if failed else ""
                self.lines.append(f"{field(r['id'])} {r['state']} on {_field(r.get('device_id'))}{detail}")
            self.flush()
        return EXIT_OK if all(r["state"] == TaskState.DONE for r in ordered) else EXIT_FAILED

    # ------------------------------------------------------------ when the wait ends early

    def where(self, task_id: str) -> str:
        """The last seen state of an unfinished task, in words: 'queued (no online worker has tag gpu)'."""
        state = self.state.get(task_id, TaskState.QUEUED)
        if state == TaskState.QUEUED and task_id in self.waiting:
            return f"queued ({self.waiting[task_id]})"
        return f"{state} on {self.device[task_id]}" if self.device.get(task_id) else state

    def timed_out(self, unfinished: list[str] | None = None) -> WaitTimedOut:
        unfinished = unfinished if unfinished is not None else self.ids
        first = unfinished[0]
        if len(self.ids) == 1:
            return WaitTimedOut(f"task {first} not finished within --wait-timeout {self.deadline.seconds:g}s: still "
                                f"{self.where(first)}", f"it stays on the master: {follow_or_cancel(first)}")
        return WaitTimedOut(f"{len(unfinished)} of {len(self.ids)} tasks not finished within --wait-timeout "
                            f"{self.deadline.seconds:g}s (task {first} is {self.where(first)})",
                            f"they stay on the master: {follow_or_cancel(first)}")

    def interrupted(self) -> str:
        """The line for Ctrl-C: the tasks go on without us, and how to follow or cancel them."""
        unfinished = [i for i in self.ids if self.state.get(i) not in FINAL_STATES]
        if not unfinished:
            return "interrupted; every task had ended"
        first = unfinished[0]
        if len(self.ids) == 1:
            return f"interrupted; task {first} stays on the master, {self.where(first)}: {follow_or_cancel(first)}"
        return (f"interrupted; {len(unfinished)} of {len(self.ids)} tasks stay on the master (task {first} is "
                f"{self.where(first)}): {follow_or_cancel(first)}")


_field_of_text = functools.lru_cache(maxsize=4096)(field)


def _field(value: Any, limit: int = FIELD_LIMIT) -> str:
    """`field`, each text made printable once: the names and devices of a batch repeat from line to line."""
    return _field_of_text(value, limit) if type(value) is str else field(value, limit)


def follow_or_cancel(task_id: str) -> str:
    return (f"follow it with: python main.py tasks logs {task_id} --follow; "
            f"cancel it with: python main.py tasks cancel {task_id}")


def last_line(out: dict, streams: tuple = ("stderr", "stdout"), otherwise: str = "-") -> str:
    """The last line a task printed, from the first of `streams` that has one (for a failure, stderr says why)."""
    for stream in streams:
        lines = [line for line in (out.get(stream) or "").splitlines() if line.strip()]
        if lines:
            return printable(lines[-1], 160)
    return otherwise or "-"


def status_line(summary: dict) -> str:
    """A single task's end, on stderr after its output: `failed: task ID on w1 (attempt 1, exit 3): ...`."""
    where = f" on {field(summary['device_id'], 64)}" if summary.get("device_id") else ""
    how = [f"attempt {summary.get('attempt') or 0}"]
    if summary.get("exit_code") is not None:
        how.append(f"exit {summary['exit_code']}")
    line = f"{summary['state']}: task {summary['id']}{where} ({', '.join(how)})"
    if summary["state"] != TaskState.DONE:
        error = describe_error(summary.get("error"))
        line += f": {error}" if error else ""
        reason = summary.get("reason") or ""
        if NOT_RETRIED in reason:
            line += f"; not retried: {printable(reason.split(NOT_RETRIED, 1)[1], 200)}"
        elif not error and reason:
            line += f": {printable(reason, 200)}"
    return line
