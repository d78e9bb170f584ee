"""`projects push|list|show|remove`: folders of code and data kept by the master for the workers."""
from __future__ import annotations

from typing import Callable

import click

from ..client import Client
from ..errors import EXIT_OK
from .common import client_options, json_option
from .render import emit_json, table, when


def _mib(size: int) -> str:
    return f"{size / (1 << 20):.1f} MiB" if size >= 1 << 20 else f"{size / 1024:.1f} KiB"


@click.group()
def projects() -> None:
    """Push a project (a folder of code and data) to the master, and list or remove what it holds."""


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
            else f"sent {_mib(row['sent_bytes'])}")
    click.echo(f"{row['files']} file{'' if row['files'] == 1 else 's'}, {_mib(row['size'])}; {note}", err=True)
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
    table(([r["name"], r["version"][:12], r["files"], _mib(r["size"]), r["versions"], when(r["pushed_at"]),
            r["pushed_by"]] for r in rows),
          ["NAME", "LATEST", "FILES", "SIZE", "VERSIONS", "PUSHED", "BY"])


@projects.command("show")
@click.argument("name")
@json_option
@client_options
def show(client: Callable[[], Client], name: str, as_json: bool) -> None:
    """List a project's versions, newest (the one a task gets by default) first.

    \b
    python main.py projects show myspider
    """
    with client() as c:
        rows = c.projects(name)
    if as_json:
        emit_json(rows)
        return
    table(([r["version"][:12], r["files"], _mib(r["size"]), when(r["pushed_at"]), r["pushed_by"]] for r in rows),
          ["VERSION", "FILES", "SIZE", "PUSHED", "BY"])


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
