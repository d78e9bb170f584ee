"""`db backup PATH` and `db check`: the master's ledger file, on the master's machine, while the master runs."""
from __future__ import annotations

import time
from dataclasses import asdict

import click

from ..config import load_config
from ..errors import EXIT_FAILED, EXIT_OK
from ..store import maintenance
from .common import config_option, db_option, json_option
from .render import emit_json

PROGRESS_EVERY_S = 1.0   # a big ledger's backup prints a progress line at most this often


@click.group()
def db() -> None:
    """The master's ledger: a consistent backup while it runs, and an integrity check."""


@db.command("backup")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--force", is_flag=True, help="Replace PATH if it exists.")
@click.option("--step-pages", type=click.IntRange(1, 1 << 20), default=maintenance.STEP_PAGES, show_default=True,
              help="Pages copied per step; progress is reported between steps.")
@db_option
@config_option
@json_option
def backup(path: str, force: bool, step_pages: int, db_path: str | None, config_path: str | None,
           as_json: bool) -> int:
    """Copy the ledger to PATH, consistent as of the moment the copy starts, while the master keeps running.

    \b
    python main.py db backup backups/zmqgrid-$(date +%F).db
    Restore: stop the master, copy the backup over its db_path, delete db_path-wal and db_path-shm, start it.
    """
    source = load_config("master", config_path, flags={"db_path": db_path}).db_path
    last = [time.monotonic()]

    def progress(copied: int, total: int) -> None:
        now = time.monotonic()
        if now - last[0] >= PROGRESS_EVERY_S and copied < total:
            last[0] = now
            click.echo(f"backup: {copied}/{total} pages ({100 * copied // max(total, 1)}%)", err=True)

    result = maintenance.backup(source, path, force=force, step_pages=step_pages, progress=progress)
    if as_json:
        emit_json(asdict(result))
    else:
        click.echo(f"backed up {result.source} to {result.path}: {result.tasks} tasks, {result.pages} pages "
                   f"({result.bytes / 1e6:.1f} MB) in {result.seconds:.1f}s, checked")
    return EXIT_OK


@db.command("check")
@click.option("--quick", is_flag=True, help="PRAGMA quick_check: faster, skips matching indexes against tables.")
@click.option("--max-problems", type=click.IntRange(1, 10_000), default=10, show_default=True,
              help="Stop after this many problems.")
@db_option
@config_option
@json_option
def check(quick: bool, max_problems: int, db_path: str | None, config_path: str | None, as_json: bool) -> int:
    """Check the ledger's integrity over a read-only connection (safe while the master runs).

    Exit 0 if it is sound; 1 with the first problems listed; 3 if there is no ledger to check.

    \b
    python main.py db check                       the master config's ledger (data/zmqgrid.db)
    python main.py db check --quick --db /srv/zmqgrid/zmqgrid.db
    """
    path = load_config("master", config_path, flags={"db_path": db_path}).db_path
    result = maintenance.check(path, quick=quick, max_problems=max_problems)
    if as_json:
        emit_json(asdict(result))
    elif result.ok:
        click.echo(f"{result.path}: {result.check} ok")
    else:
        for problem in result.problems:
            click.echo(f"problem: {problem}")
        click.echo(f"error: {result.path} failed its {result.check} ({len(result.problems)} problem"
                   f"{'s' if len(result.problems) != 1 else ''} shown); restore it from a backup "
                   "(README: Backups)", err=True)
    return EXIT_OK if result.ok else EXIT_FAILED
