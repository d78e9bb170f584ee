"""`tasks list|show|logs|requeue|cancel`."""
from __future__ import annotations

import json
from typing import Callable

import click

from ..client import Client
from ..errors import EXIT_FAILED, EXIT_OK, TaskNotFound, UsageError
from ..model import TASK_STATES
from .common import client_options, json_option
from .render import describe_error, echo_output, emit_json, field, seconds, table, when



@click.group()
def tasks() -> None:
    """Inspect and control tasks."""


@tasks.command("list")
@click.option("--state", type=click.Choice(TASK_STATES), help="Only tasks in this state.")
@click.option("--device", help="Only tasks of this device.")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
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
    """Show one task: spec, state, attempts, result.  Example: python main.py tasks show 3f2a"""
    with client() as c:
        task = c.task(task_id)
    if as_json:
        emit_json(task)
        return
    for key in ("id", "kind", "name", "state", "priority", "attempt", "retries", "timeout_s", "tags", "device_id",
                "exit_code", "reason"):
        click.echo(f"{key + ':':<11} {field(task.get(key))}")
    if task.get("waiting"):
        click.echo(f"{'waiting:':<11} {field(task['waiting'])}")
    click.echo(f"{'created:':<11} {when(task['created_at'])}   finished: {when(task['finished_at'])}")
    if task.get("value") is not None:
        click.echo(f"{'value:':<11} {json.dumps(task['value'], default=str)}")
    if task.get("error"):
        click.echo(f"{'error:':<11} {describe_error(task['error'])}")
        if task["error"].get("traceback"):
            echo_output(str(task["error"]["traceback"]).rstrip() + "\n")
    if task.get("evidence"):
        click.echo(f"{'deaths:':<11} {task['deaths']} (its worker died while running it)")
        for e in task["evidence"]:
            click.echo(f"  attempt {e['attempt']} on {field(e['device_id'])} at {when(e['at'])}: {field(e['reason'])}")
    click.echo("attempts:")
    table(([a["attempt"], a["device_id"], a["state"], when(a["started_at"]), when(a["finished_at"]), a["exit_code"],
            "yes" if a["stale"] else "", describe_error(a["error"])] for a in task["attempts"]),
          ["#", "DEVICE", "STATE", "STARTED", "FINISHED", "EXIT", "STALE", "ERROR"])


@tasks.command("logs")
@click.argument("task_id")
@click.option("--attempt", type=click.IntRange(1), help="Which attempt [the last].")
@click.option("--follow", "-f", is_flag=True, help="Keep printing output as it comes, until the task ends.")
@json_option
@client_options
def task_logs(client: Callable[[], Client], task_id: str, attempt: int | None, follow: bool, as_json: bool) -> None:
    """Print a task's stdout and stderr.  Example: python main.py tasks logs 3f2a --follow"""
    if follow:
        with client() as c:
            for stream, text in c.follow(c.task(task_id)["id"]):
                echo_output(text, err=stream == "stderr")
        return
    with client() as c:
        out = c.logs(task_id, attempt)
    if as_json:
        emit_json(out)
        return
    echo_output(out["stdout"] if out["stdout"].endswith("\n") else out["stdout"] + "\n")
    if out["stderr"]:
        echo_output(out["stderr"] if out["stderr"].endswith("\n") else out["stderr"] + "\n", err=True)


@tasks.command("requeue")
@click.argument("task_ids", nargs=-1, required=True)
@json_option
@client_options
def requeue_tasks(client: Callable[[], Client], task_ids: tuple, as_json: bool) -> int:
    """Queue failed, timed-out, cancelled or quarantined tasks again (retries start afresh).

    Example: python main.py tasks requeue 3f2a9c01d2e4b5a6
    """
    with client() as c:
        outcome = c.requeue(list(task_ids))
    if as_json:
        emit_json(outcome)
    else:
        for task_id, state in outcome.items():
            click.echo(f"{task_id} {state}")
    return EXIT_OK if all(v == "queued" for v in outcome.values()) else EXIT_FAILED


@tasks.command("cancel")
@click.argument("task_ids", nargs=-1)
@click.option("--state", type=click.Choice(["queued", "assigned", "running"]), help="Cancel every task in this state.")
@click.option("--tag", help="Cancel every unfinished task that requires this tag.")
@json_option
@client_options
def cancel_tasks(client: Callable[[], Client], task_ids: tuple, state: str | None, tag: str | None,
                 as_json: bool) -> int:
    """Cancel tasks: queued ones at once, running ones are killed on their worker.

    
    python main.py tasks cancel 3f2a9c01d2e4b5a6
    python main.py tasks cancel --state queued --tag gpu
    """
    if bool(task_ids) == bool(state or tag):
        raise UsageError("give task ids, or --state/--tag, not both", "e.g. python main.py tasks cancel --state queued")
    with client() as c:
        outcome = c.cancel(list(task_ids)) if task_ids else c.cancel(state=state, tag=tag)
    missing = [task_id for task_id, state in outcome.items() if state == "not found"]
    if as_json:
        emit_json(outcome)
    else:
        for task_id, state in outcome.items():
            if state != "not found":
                click.echo(f"{task_id} {state}")
    if missing:  # an unknown id is the user's mistake: one error line and exit 3, as in `tasks show`
        raise TaskNotFound(f"no task {', '.join(repr(i) for i in missing)}")
    return EXIT_OK
