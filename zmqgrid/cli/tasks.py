"""`tasks list|show|logs|requeue|cancel`."""
from __future__ import annotations

import json
from typing import Callable

import click

from ..client import Client
from ..errors import (EXIT_FAILED, EXIT_OK, AmbiguousTaskId, TaskNotFound, UsageError, ZmqgridError,
                      exit_code_for_state)
from ..model import TASK_STATES, UNFINISHED_STATES, TaskState
from .common import client_options, json_option
from .render import describe_error, echo_output, emit_json, field, seconds, table, when
from .task_view import spec_lines


@click.group()
def tasks() -> None:
    """Inspect and control tasks."""


@tasks.command("list")
@click.option("--state", type=click.Choice(TASK_STATES), help="Only tasks in this state.")
@click.option("--device", help="Only tasks of this device.")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True,
              help="Show at most this many tasks (1-1000).")
@click.option("--offset", type=click.IntRange(0), default=0, show_default=True, help="Skip this many (paging).")
@json_option
@client_options
def list_tasks(client: Callable[[], Client], state: str | None, device: str | None, limit: int, offset: int,
               as_json: bool) -> None:
    """List tasks, newest first.  Example: python main.py tasks list --state failed"""
    with client() as c:
        rows = c.tasks(state, limit=limit, offset=offset, device=device)
    if as_json:
        emit_json(rows)
        return
    table(([r["id"], r["kind"], r["name"], r["state"], r["device_id"], r["attempt"], r["exit_code"],
            seconds((r["finished_at"] or 0) - r["started_at"] if r["started_at"] and r["finished_at"] else None)]
           for r in rows), ["ID", "KIND", "TASK", "STATE", "DEVICE", "ATTEMPT", "EXIT", "TOOK"])


@tasks.command("show")
@click.argument("task_id")
@json_option
@client_options
def show_task(client: Callable[[], Client], task_id: str, as_json: bool) -> None:
    """Show one task: what it runs (command, script or call, cwd, env names, tags, limits), state, attempts,
    result.  Example: python main.py tasks show 675e1f2a00c3b4  (an id or a unique prefix of one)"""
    with client() as c:
        task = c.task(task_id)
    if as_json:
        emit_json(task)
        return
    lines = [("id", field(task.get("id"))), ("name", field(task.get("name"))), *spec_lines(task),
             ("state", field(task.get("state"))),
             ("attempt", f"{task.get('attempt')} of {(task.get('retries') or 0) + 1}"),
             ("device", field(task.get("device_id"))), ("exit_code", field(task.get("exit_code"))),
             ("reason", field(task.get("reason")))]
    if task.get("waiting"):
        lines.append(("waiting", field(task["waiting"])))
    for label, text in lines:
        click.echo(f"{label + ':':<11} {text}")
    took = task["finished_at"] - task["started_at"] if task.get("started_at") and task.get("finished_at") else None
    click.echo(f"{'created:':<11} {when(task['created_at'])}   started: {when(task.get('started_at'))}   "
               f"finished: {when(task['finished_at'])}   took: {seconds(took)}")
    if task.get("value") is not None:
        click.echo(f"{'value:':<11} {json.dumps(task['value'], default=str)}")
    if task.get("error"):
        click.echo(f"{'error:':<11} {describe_error(task['error'])}")
        if task["error"].get("traceback"):
            echo_output(str(task["error"]["traceback"]).rstrip() + "\n")
    if task.get("evidence"):
        click.echo(f"{'deaths:':<11} {task['deaths']} (its worker died while running it)")
        for e in task["evidence"]:
            noted = "  [noted, not counted: it had started before others]" if e.get("counted") is False else ""
            click.echo(f"  attempt {e['attempt']} on {field(e['device_id'])} at {when(e['at'])}: "
                       f"{field(e['reason'])}{noted}")
    click.echo("attempts:")
    table(([a["attempt"], a["device_id"], a["state"], when(a["started_at"]), when(a["finished_at"]), a["exit_code"],
            "yes" if a["stale"] else "", describe_error(a["error"])] for a in task["attempts"]),
          ["#", "DEVICE", "STATE", "STARTED", "FINISHED", "EXIT", "STALE", "ERROR"])


@tasks.command("logs")
@click.argument("task_id")
@click.option("--attempt", type=click.IntRange(1), help="Which attempt [the last; with --follow, the first to show].")
@click.option("--follow", "-f", is_flag=True,
              help="Print the output as it comes, attempt after attempt, until the task ends; exit as `submit --wait`.")
@json_option
@client_options
def task_logs(client: Callable[[], Client], task_id: str, attempt: int | None, follow: bool, as_json: bool) -> int:
    """Print a task's stdout and stderr (stderr on stderr).

    With --follow, a line on stderr starts each attempt and one ends the task; the exit code is the task's outcome
    (0 done, 1 failed, timed out, cancelled or quarantined).

    \b
    python main.py tasks logs 675e1f2a00c3b4
    python main.py tasks logs 675e1f2a00c3b4 --follow
    """
    if follow:
        return follow_logs(client, task_id, attempt or 1)
    with client() as c:
        out = c.logs(task_id, attempt)
    had = out.get("task_attempt") or 0
    if attempt is not None and attempt > had:
        now = f"it had {had}" if out.get("state") not in UNFINISHED_STATES else f"it is at attempt {had}"
        raise UsageError(f"task {out['task_id']} has no attempt {attempt}: {now}",
                         f"see its attempts with: python main.py tasks show {out['task_id']}"
                         + ("" if out.get("state") not in UNFINISHED_STATES else "; --follow waits for one"))
    if as_json:
        emit_json(out)
        return EXIT_OK
    echo_output(out["stdout"] if out["stdout"].endswith("\n") else out["stdout"] + "\n")
    if out["stderr"]:
        echo_output(out["stderr"] if out["stderr"].endswith("\n") else out["stderr"] + "\n", err=True)
    return EXIT_OK


def follow_logs(client: Callable[[], Client], ref: str, first_attempt: int) -> int:
    """`tasks logs --follow`: each attempt's output under a header line, then the outcome; its exit code."""
    ended_line = True   # a header starts on a line of its own, even after output that did not end one
    with client() as c:
        task_id = c.task(ref)["id"]
        for item in c.follow(task_id, first_attempt=first_attempt):
            if item.stream == "attempt":
                on = f" on {field(item.text)}" if item.text else ""
                click.echo(("" if ended_line else "\n") + f"--- attempt {item.attempt}{on} ---", err=True)
                ended_line = True
                continue
            echo_output(item.text, err=item.stream == "stderr")
            ended_line = item.text.endswith("\n")
        summary = c.wait([task_id])[task_id]
    attempts = summary.get("attempt") or 0
    what = summary["state"] + (f" after {attempts} attempt{'s' if attempts != 1 else ''}" if attempts else "")
    if summary["state"] != TaskState.DONE:
        detail = describe_error(summary.get("error")) or field(summary.get("reason"))
        what += f" ({detail})" if detail != "-" else ""
    click.echo(("" if ended_line else "\n") + f"--- task {task_id} {what} ---", err=True)
    return exit_code_for_state(summary["state"])


def unresolved(outcome: dict) -> ZmqgridError | None:
    """The one error for the references of a cancel or requeue that named no task, or named several (the same
    line and exit code as `tasks show` gives them: docs/architecture.md, "Task references")."""
    unknown = [ref for ref, line in outcome.items() if line == "not found"]
    if unknown:
        return TaskNotFound.of(unknown)
    for ref, line in outcome.items():
        if line.startswith("ambiguous: "):
            return AmbiguousTaskId.of(ref, line.removeprefix("ambiguous: "))
    return None


def report(outcome: dict, as_json: bool) -> None:
    """Print a cancel's or requeue's line per task it reached (all lines with --json); then fail for the rest."""
    error = unresolved(outcome)
    if as_json:
        emit_json(outcome)
    else:
        for task_id, line in outcome.items():
            if line != "not found" and not line.startswith("ambiguous: "):
                click.echo(f"{task_id} {line}")
    if error is not None:
        raise error


@tasks.command("requeue")
@click.argument("task_ids", nargs=-1, required=True)
@json_option
@client_options
def requeue_tasks(client: Callable[[], Client], task_ids: tuple, as_json: bool) -> int:
    """Queue failed, timed-out, cancelled or quarantined tasks again (retries start afresh); exit 1 if one is not.

    \b
    python main.py tasks requeue 675e1f2a00c3b4    an id or a unique prefix of one
    python main.py tasks requeue 675e1f2a00c3b4 675e1f2a00c3b5
    """
    with client() as c:
        outcome = c.requeue(list(task_ids))
    report(outcome, as_json)
    return EXIT_OK if all(v == TaskState.QUEUED for v in outcome.values()) else EXIT_FAILED


@tasks.command("cancel")
@click.argument("task_ids", nargs=-1)
@click.option("--state", type=click.Choice(UNFINISHED_STATES), help="Cancel every task in this state.")
@click.option("--tag", help="Cancel every unfinished task that requires this tag.")
@json_option
@client_options
def cancel_tasks(client: Callable[[], Client], task_ids: tuple, state: str | None, tag: str | None,
                 as_json: bool) -> int:
    """Cancel tasks: queued ones at once, running ones are killed on their worker.

    \b
    python main.py tasks cancel 675e1f2a00c3b4      an id or a unique prefix of one
    python main.py tasks cancel --state queued --tag gpu
    """
    if bool(task_ids) == bool(state or tag):
        raise UsageError("give task ids, or --state/--tag, not both", "e.g. python main.py tasks cancel --state queued")
    with client() as c:
        outcome = c.cancel(list(task_ids)) if task_ids else c.cancel(state=state, tag=tag)
    report(outcome, as_json)
    return EXIT_OK
