"""`schedules add|list|remove|pause|resume`: cron-like schedules kept by the master."""
from __future__ import annotations

from typing import Callable

import click

from ..client import Client, build_spec
from ..errors import EXIT_OK
from .common import client_options, client_options_with, json_arg, json_option, task_options
from .render import emit_json, table, when


@click.group()
def schedules() -> None:
    """Run tasks on a cron schedule (kept by the master, in its local time)."""


@schedules.command("add")
@click.argument("schedule_name", metavar="NAME")
@click.option("--cron", "cron", required=True, metavar="EXPR",
              help='"min hour day-of-month month day-of-week", or with a leading seconds field (6 fields).')
@click.option("--missed", type=click.Choice(["run_once", "skip"]), default="run_once", show_default=True,
              help="Ticks missed while the master was down: run once for the latest, or skip them.")
@task_options
@json_option
@client_options_with("--master-timeout")
def add_schedule(client: Callable[[], Client], schedule_name: str, cron: str, missed: str, shell: str | None,
                 script: str | None, python: str | None, args: str | None, kwargs: str | None, tags: tuple,
                 device: str | None, priority: int | None, task_timeout: float | None, retries: int | None,
                 name: str | None, project: str | None, python_env: str | None, as_json: bool) -> int:
    """Fire a task at every tick of a cron expression; each tick runs exactly once.

    \b
    python main.py schedules add report --cron "0 6 * * 1-5" --script report.py
    python main.py schedules add ping --cron "*/5 * * * *" --shell "curl -s https://example.com" --run-timeout 30
    python main.py schedules add beat --cron "*/10 * * * * *" --python zmqgrid.samples:fib --args '[20]'
    """
    spec = build_spec(shell=shell, script=script, python=python, args=json_arg(args, "--args", list),
                      kwargs=json_arg(kwargs, "--kwargs", dict), tag=list(tags) or None, device=device,
                      priority=priority, timeout=task_timeout, retries=retries, name=name, project=project,
                      python_env=python_env)
    with client() as c:
        row = c.schedule_add(schedule_name, cron, spec, missed)
    if as_json:
        emit_json(row)
    else:
        click.echo(f"{row['name']} added; next run {when(row['next_at'])}")
    return EXIT_OK


@schedules.command("list")
@json_option
@client_options
def list_schedules(client: Callable[[], Client], as_json: bool) -> None:
    """List schedules: cron, state, next run and last firing (local time).  Example: python main.py schedules list"""
    with client() as c:
        rows = c.schedules()
    if as_json:
        emit_json(rows)
        return
    table(([r["name"], r["cron"], r["state"], when(r["next_at"]), when(r["last_fired_at"]), r["fired_count"],
            r["missed"], r["task"]] for r in rows),
          ["NAME", "CRON", "STATE", "NEXT RUN", "LAST FIRED", "FIRED", "MISSED", "TASK"])


def _schedule_command(op: str, doc: str):
    @schedules.command(op, help=doc)
    @click.argument("name")
    @json_option
    @client_options
    def command(client: Callable[[], Client], name: str, as_json: bool) -> int:
        with client() as c:
            row = getattr(c, f"schedule_{op}")(name)
        if as_json:
            emit_json(row)
        else:
            click.echo(f"{row['name']} {row['state']}")
        return EXIT_OK
    return command


remove = _schedule_command("remove", "Delete a schedule; tasks it already fired are kept.  "
                                     "Example: python main.py schedules remove ping")
pause = _schedule_command("pause", "Stop firing a schedule until it is resumed.  Example: python main.py schedules pause ping")
resume = _schedule_command("resume", "Fire a paused schedule again, from its next tick (paused ticks are not run).  "
                                     "Example: python main.py schedules resume ping")
