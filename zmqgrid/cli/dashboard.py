"""`dashboard`: the live cluster in the terminal (a Textual app on zmqgrid.Client)."""
from __future__ import annotations

import contextlib
import os
import sys
import threading
from pathlib import Path
from typing import Any, Iterator

import click

from ..errors import EXIT_OK, UsageError
from ..security import client_curve, inherited_curve
from .common import client_config


def has_terminal() -> bool:
    return sys.stdin.isatty() and sys.stdout.isatty()


def run_dashboard(master_url: str, refresh_s: float = 1.0, stopping: threading.Event | None = None,
                  timeout_s: float = 2.0, curve: Any = None, role: str | None = None, served: bool = False) -> int:
    """Show the dashboard until the user quits it (or `stopping` is set); returns the exit code.

    `served`: run for textual-serve (the browser dashboard), which speaks to it over pipes, not a terminal."""
    if not served and not has_terminal():
        raise UsageError("the dashboard needs a terminal (stdin and stdout are not both one)",
                         "run it in a terminal, or use: python main.py distribute --status / tasks list")
    from ..tui import make_app
    app = make_app(master_url, refresh_s=refresh_s, timeout_s=timeout_s, curve=curve, role=role)
    if stopping is not None:
        def watch() -> None:
            stopping.wait()
            with contextlib.suppress(RuntimeError):   # the app already ended
                app.call_from_thread(app.exit)
        threading.Thread(target=watch, daemon=True, name="dashboard-stop").start()
    app.run()
    return EXIT_OK


@contextlib.contextmanager
def children_write_to(path: str | None) -> Iterator[None]:
    """Processes started inside write their stdout and stderr to `path` (os.devnull if None), not the terminal.

    The dashboard owns the terminal; a local worker's log line would be drawn over it.
    """
    target = os.devnull
    if path:
        target = str(Path(path).with_name(Path(path).stem + "-workers.out"))
        Path(target).parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = (os.dup(1), os.dup(2))
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for descriptor in (fd, *saved):
            os.close(descriptor)


@click.command()
@click.option("--master", "master_url", metavar="URL",
              help="The master's ROUTER, tcp://HOST:PORT [env ZMQGRID_MASTER; default from the master config].")
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help="Config file to read the master address from.")
@click.option("--refresh", "refresh_s", type=click.FloatRange(0.25, 60), default=1.0, show_default=True,
              help="Seconds between refreshes (+ and - change it while it runs).")
@click.option("--timeout", "timeout_s", type=click.FloatRange(0.05, 60), default=2.0, show_default=True,
              help="Seconds to wait for the master's answer before showing it unreachable.")
# The HTTP gateway's browser sessions (zmqgrid.gateway.browser) run the dashboard with these: limited to the role of
# the caller's token, on the gateway's own key (given in the environment, so it is never on a command line).
@click.option("--served", is_flag=True, hidden=True)
@click.option("--role", type=click.Choice(["read", "client", "admin"]), hidden=True)
def dashboard(master_url: str | None, config_path: str | None, refresh_s: float, timeout_s: float, served: bool,
              role: str | None) -> int:
    """Watch the cluster live: devices, schedules, tasks, output; cancel, requeue, drain, pause, submit.

    \b
    python main.py dashboard --master tcp://10.0.0.5:8000
    Keys: ? lists them all; q quits. In a browser: python main.py http, then open http://127.0.0.1:8080/
    """
    inherited = inherited_curve() if served else None   # taken out of the environment before the config reads it
    config = client_config(master_url, config_path)
    curve = inherited if served else client_curve(config)
    return run_dashboard(config.master_url, refresh_s, timeout_s=timeout_s, curve=curve, role=role, served=served)

