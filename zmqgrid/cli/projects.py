"""`projects push|list|show|remove`: folders of code and data kept by the master for the workers."""
from __future__ import annotations

from typing import Callable

import click

from ..client import Client
from ..errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_WAIT_TIMEOUT
from ..projects.sync import holding_in_words
from ..protocol import MAX_CACHED_REASON
from ..text import byte_size, printable
from .common import client_options, client_options_with, json_option
from .render import emit_json, table, when


@click.group()
def projects() -> None:
    """Push a project (a folder of code and data) to the master, sync it to the workers, list or remove it."""


@projects.command("push")
@click.argument("folder", type=click.Path(file_okay=True, dir_okay=True))
@click.option("--name", help="The project's name [the folder's name].")
@json_option
@client_options
def push(client: Callable[[], Client], folder: str, name: str | None, as_json: bool) -> int:
    """Pack FOLDER and store it on the master; prints NAME@VERSION (VERSION: the content's hash).

    Skips .git, __pycache__, *.pyc, virtualenvs and what FOLDER/.zmqgridignore lists. The same content gives the
    same version and is not sent again.

    \b
    python main.py projects push ./myspider
    python main.py projects push ./crawler --name myspider
    """
    with client() as c:
        row = c.push_project(folder, name)
    if as_json:
        emit_json(row)
        return EXIT_OK
    click.echo(f"{row['name']}@{row['version'][:12]}")
    note = ("already on the master: nothing sent" if row["have"]
            else f"sent {byte_size(row['sent_bytes'])}")
    click.echo(f"{row['files']} file{'' if row['files'] == 1 else 's'}, {byte_size(row['size'])}; {note}", err=True)
    return EXIT_OK


@projects.command("list")
@json_option
@client_options
def list_projects(client: Callable[[], Client], as_json: bool) -> None:
    """List projects with their latest version.  Example: python main.py projects list"""
    with client() as c:
        rows = c.projects()
    if as_json:
        emit_json(rows)
        return
    table(([r["name"], r["version"][:12], r["files"], byte_size(r["size"]), r["versions"], when(r["pushed_at"]),
            r["pushed_by"]] for r in rows),
          ["NAME", "LATEST", "FILES", "SIZE", "VERSIONS", "PUSHED", "BY"])


@projects.command("show")
@click.argument("name")
@json_option
@client_options
def show(client: Callable[[], Client], name: str, as_json: bool) -> None:
    """List a project's versions, newest (the one a task gets by default) first, and the workers that hold each.

    \b
    python main.py projects show myspider
    """
    with client() as c:
        rows = c.projects(name)
    if as_json:
        emit_json(rows)
        return
    table(([r["version"][:12], r["files"], byte_size(r["size"]), when(r["pushed_at"]), r["pushed_by"],
            len(r.get("workers", ()))] for r in rows), ["VERSION", "FILES", "SIZE", "PUSHED", "BY", "WORKERS"])
    held = [(r["version"][:12], w) for r in rows for w in r.get("workers", ())]
    if held:
        click.echo()
        table(([version, w["name"] if w["name"] == w["device_id"] else f"{w['name']} ({w['device_id']})", holding_in_words(w)]
               for version, w in held), ["VERSION", "WORKER", "STATE"])
    left = sum(r.get("workers_left_out", 0) for r in rows)
    if left:
        click.echo(f"... and {left} more (the answer is bounded): projects show NAME --json lists the same", err=True)


_SAID = {"waiting": "waiting for the sync command", "fetching": "fetching", "building": "building the environment",
         "ready": "ready", "failed": "failed", "offline": "went offline"}


@projects.command("sync")
@click.argument("ref", metavar="NAME[@VERSION]")
@click.option("--tag", "tags", multiple=True, metavar="T", help="Only workers with this tag (repeat: all of them).")
@click.option("--rebuild", is_flag=True, help="Build the environment again (after a failed build, or to take "
                                              "what the package index holds now).")
@click.option("--timeout", "sync_timeout", type=click.FloatRange(1, 86_400), default=900.0, show_default=True,
              help="Seconds to wait for every worker; past them the sync goes on and the command exits 124.")
@json_option
@client_options_with("--master-timeout")
def sync(client: Callable[[], Client], ref: str, tags: tuple, rebuild: bool, sync_timeout: float,
         as_json: bool) -> int:
    """Fetch a version (default: the latest) and build its environment on every online worker that runs projects,
    now, ahead of the first task; prints each worker's progress until all are ready or failed.

    Exit 0 when every worker is ready, 1 naming those that failed, 124 naming those that did not finish in time.

    \b
    python main.py projects sync myspider
    python main.py projects sync myspider@3f9a1c2b7d0e --tag linux --rebuild
    """
    def progress(device_id: str, state: str, reason: str) -> None:
        # a worker's reason: one line at decode, but it may hold format characters (a bidi override)
        click.echo(f"{device_id}: {_SAID[state]}" + (f": {printable(reason, MAX_CACHED_REASON)}" if reason else ""))

    with client() as c:
        try:
            result = c.sync_project(ref, tags=tags, rebuild=rebuild, timeout_s=sync_timeout,
                                    progress=None if as_json else progress)
        except KeyboardInterrupt:
            click.echo(f"interrupted: the sync goes on on the workers; projects show {ref.partition('@')[0]} "
                       "follows it", err=True)
            return EXIT_INTERRUPTED
    if as_json:
        emit_json(result)
    workers, failed, unfinished = result["workers"], result["failed"], result["unfinished"]
    target = f"{result['name']}@{result['version'][:12]}"
    if not as_json and not failed and not unfinished:
        click.echo(f"{target}: {len(workers)}/{len(workers)} worker{'s' if len(workers) > 1 else ''} ready")
    if failed:
        click.echo(f"error: {target} failed on {len(failed)} of {len(workers)} workers: " + ", ".join(
            f"{d} ({printable(workers[d]['reason'], MAX_CACHED_REASON)})" for d in failed), err=True)
    if unfinished:
        click.echo(f"error: {target} did not finish within {sync_timeout:g} s on " + ", ".join(
            f"{d} ({_SAID[workers[d]['state']]})" for d in unfinished) + "; it goes on: projects show "
            f"{result['name']} follows it", err=True)
    return EXIT_FAILED if failed else EXIT_WAIT_TIMEOUT if unfinished else EXIT_OK


@projects.command("remove")
@click.argument("ref", metavar="NAME[@VERSION]")
@json_option
@client_options
def remove(client: Callable[[], Client], ref: str, as_json: bool) -> int:
    """Remove a project, or one version of it (a version as `projects show` lists it, or a longer prefix).

    \b
    python main.py projects remove myspider
    python main.py projects remove myspider@3f9a1c2b7d0e
    """
    name, _, version = ref.partition("@")
    with client() as c:
        row = c.remove_project(name, version or None)
    if as_json:
        emit_json(row)
    else:
        for version in row["removed"]:
            click.echo(f"{row['name']}@{version[:12]} removed")
    return EXIT_OK
