"""`distribute`: run the master, a worker or standalone in the foreground, or check health with --status."""
from __future__ import annotations

import os
import signal
import threading
import time

import click
import psutil

from ..client import Client
from ..config import MODES, PYTHON_POOLS, Config, load_config
from ..errors import EXIT_FAILED, EXIT_OK, EXIT_UNREACHABLE, MasterUnavailable, UsageError
from ..health import assess
from ..logs import configure_logging
from ..model import TASK_KINDS
from ..security import client_curve
from ..transport import Curve
from . import hints
from .dashboard import has_terminal
from .render import emit_json


@click.command()
@click.option("--mode", type=click.Choice(MODES), help="master, worker or standalone (master + local workers).")
@click.option("--status", is_flag=True, help="Check the cluster: exit 0 healthy, 1 degraded, 2 unreachable, 3 bad config.")
@click.option("--json", "as_json", is_flag=True, help="With --status: print JSON.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help="Config file [default: config/distribution_<mode>.json if present].")
@click.option("--host", help="Master: address to bind (127.0.0.1; 0.0.0.0 for every interface).")
@click.option("--port", type=int, help="Master: ROUTER port; PUB is port+1, heartbeats port+2 [8000].")
@click.option("--db", "db_path", help="Master: SQLite ledger file [data/zmqgrid.db].")
@click.option("--master", "master_url", metavar="URL", help="Worker: the master's ROUTER, tcp://HOST:PORT.")
@click.option("--device-id", help="Worker: stable identity [host name].")
@click.option("--device-name", help="Worker: display name.")
@click.option("--tag", "tags", multiple=True, help="Worker: a tag tasks can require (repeat for more).")
@click.option("--concurrency", "concurrent_tasks", type=int, help="Worker: tasks run at once [3].")
@click.option("--weight", type=float, help="Worker: weight for the weighted strategy [1].")
@click.option("--python-pool", type=click.Choice(PYTHON_POOLS),
              help="Worker: run python tasks in pool children (process) or in the worker itself (inline) [process].")
@click.option("--insecure", is_flag=True, default=None,
              help="Master: allow binding a non-loopback --host without CURVE encryption (open to the network).")
@click.option("--curve", is_flag=True, default=None,
              help="CURVE encryption and key authentication (keys from --keys-dir; see README, Security).")
@click.option("--keys-dir", help="Where this process finds its certificates [keys].")
@click.option("--allow-kind", "allowed_kinds", multiple=True, type=click.Choice(TASK_KINDS),
              help="Worker: run only tasks of this kind (repeat for more) [all].")
@click.option("--allow-module", "allowed_modules", multiple=True, metavar="MODULE",
              help="Worker: run python tasks only from this module or package (repeat for more) [any].")
@click.option("--strategy", "load_balance_strategy", help="Master: least_tasks, round_robin, weighted, random, or pkg.mod:func.")
@click.option("--workers", type=int, help="Standalone: local worker processes [2].")
@click.option("--http", "http_port", type=click.IntRange(1, 65535), metavar="PORT",
              help="Standalone: serve the HTTP gateway (JSON API, /metrics) on 127.0.0.1:PORT too.")
@click.option("--log-level", type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
              help="Log records from this level up, to the log file and the terminal [INFO; --demo: WARNING up "
                   "on the terminal].")
@click.option("--log-file", help="Log file [logs/distribution.log].")
@click.option("--demo", is_flag=True, help="Standalone: run the bundled sample batch, show it finish, then stop.")
@click.option("--no-dashboard", is_flag=True, help="Standalone: print progress lines instead of the dashboard.")
@click.option("--timeout", "timeout_s", type=click.FloatRange(0.05, 60), default=0.8, show_default=True,
              help="With --status: seconds to wait for the master.")
@click.option("--parent-pid", type=int, hidden=True)
@click.option("--terminal-log-level", type=click.Choice(["WARNING"]), hidden=True)   # a demo's local workers
def distribute(mode: str | None, status: bool, as_json: bool, config_path: str | None, timeout_s: float,
               parent_pid: int | None, demo: bool, no_dashboard: bool, terminal_log_level: str | None,
               http_port: int | None, **flags: object) -> int:
    """Run a master, a worker or a standalone cluster, or check the cluster's health.

    \b
    python main.py distribute --mode standalone            master + 2 local workers
    python main.py distribute --mode standalone --http 8080   the same, with the HTTP gateway on port 8080
    python main.py distribute --mode master --host 0.0.0.0 --insecure  the master daemon
    python main.py distribute --mode worker --master tcp://10.0.0.5:8000 --tag linux
    python main.py distribute --status --json
    """
    for key in ("tags", "allowed_kinds", "allowed_modules"):
        flags[key] = list(flags[key]) or None   # not given: the config file's or environment's value stands
    flags["insecure"] = flags["insecure"] or None
    flags["curve"] = flags["curve"] or None
    if flags.get("log_level"):
        flags["log_level"] = str(flags["log_level"]).upper()
    if status:
        config = load_config(mode or "master", config_path, flags)
        return check_status(config.master_url, timeout_s, as_json, client_curve(config))
    if mode is None:
        raise UsageError("--mode or --status is required", "e.g. python main.py distribute --mode standalone")
    if http_port is not None and mode != "standalone":
        raise UsageError("--http serves the gateway beside a standalone cluster only",
                         f"beside a master, run: python main.py http --port {http_port}")
    config = load_config(mode, config_path, flags)
    if mode == "standalone" and demo:   # the demo's own lines are the show: its daemons' INFO goes to the log files
        terminal_log_level = "WARNING"
    configure_logging(config.log_level, config.log_file, terminal_level=terminal_log_level)
    if mode == "master":
        return run_master(config)
    if mode == "worker":
        return run_worker(config, parent_pid, config_path, flags)
    return run_standalone(config, demo, dashboard=not (demo or no_dashboard) and has_terminal(),
                          terminal_log_level=terminal_log_level, http_port=http_port)


def check_status(master_url: str, timeout_s: float, as_json: bool, curve: Curve | None = None) -> int:
    """Ask the master for its status; imports no user code and answers within timeout_s."""
    client = Client(master_url, timeout_s=timeout_s, curve=curve)
    try:
        report = client.status()
    except MasterUnavailable as e:
        if as_json:
            emit_json({"state": "unreachable", "master": master_url, "error": str(e)})
        else:
            click.echo(f"master {master_url}: UNREACHABLE ({hints.line(e)})")
        return EXIT_UNREACHABLE
    finally:
        client.close()
    report = assess(report, master_url)
    problems = report["problems"]
    if as_json:
        emit_json(report)
    else:
        click.echo(f"master {master_url}: {report['state'].upper()}"
                   f"{' - ' + '; '.join(problems) if problems else ''} (incarnation {report['incarnation']}, "
                   f"up {report['uptime_s']:.0f}s)")
        click.echo("devices: " + ", ".join(f"{k} {v}" for k, v in report["devices"].items()))
        click.echo("tasks:   " + ", ".join(f"{k} {v}" for k, v in report["tasks"].items()))
    return EXIT_FAILED if problems else EXIT_OK


def _on_signals(stop: callable) -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop())


def run_master(config: Config) -> int:
    from ..master.master import Master
    master = Master(config)
    _on_signals(master.stop)
    master.serve()
    return EXIT_OK


def run_worker(config: Config, parent_pid: int | None, config_path: str | None, flags: dict) -> int:
    from ..worker.worker import Worker
    worker = Worker(config, reload_config=lambda: load_config("worker", config_path, flags))
    _on_signals(worker.stop)
    if parent_pid:
        # A standalone child must not outlive its parent, even one killed with SIGKILL.
        def watch_parent() -> None:
            while psutil.pid_exists(parent_pid) and os.getppid() == parent_pid:
                time.sleep(0.5)
            worker.stop()
        threading.Thread(target=watch_parent, daemon=True, name="parent-watch").start()
    return worker.serve()   # EXIT_KEY_REFUSED when the master cut its key off


def run_standalone(config: Config, demo: bool, dashboard: bool = False, terminal_log_level: str | None = None,
                   http_port: int | None = None) -> int:
    from ..standalone import Standalone
    from .dashboard import children_write_to, run_dashboard
    from .demo import run_demo
    from ..worker.proctree import end_process
    from .http import start_gateway
    cluster = Standalone(config, terminal_log_level=terminal_log_level, shares_process=demo or dashboard)
    stopping = threading.Event()
    _on_signals(stopping.set)
    gateway = None
    try:
        if dashboard:   # the dashboard owns the terminal: log lines go to the log files only
            configure_logging(config.log_level, config.log_file, stream=False)
            with children_write_to(config.log_file):
                cluster.start()
                gateway = start_gateway(config, http_port) if http_port else None
        else:
            cluster.start()
            gateway = start_gateway(config, http_port) if http_port else None
    except BaseException:
        cluster.stop()
        raise
    try:
        if gateway is not None and not dashboard:
            click.echo(f"http gateway: http://127.0.0.1:{http_port}/api/distribution/system/overview")
        if demo:
            return run_demo(config.master_url, stopping, client_curve(config),
                            workers_alive=cluster.alive_workers if config.workers else None)
        if dashboard:
            return run_dashboard(config.master_url, stopping=stopping, curve=client_curve(config))
        click.echo(f"zmqgrid standalone: master {config.master_url}, {config.workers} workers, ledger {config.db_path}")
        click.echo("submit from another terminal:  python main.py submit --shell 'echo hello' --wait")
        click.echo("Ctrl-C stops everything.")
        while not stopping.wait(0.5):
            if config.workers and not cluster.alive_workers():
                click.echo("error: every worker process exited; see the log files", err=True)
                return EXIT_FAILED
        return EXIT_OK
    finally:
        click.echo("stopping workers and master...", err=True)
        if gateway is not None:
            end_process(gateway)
        cluster.stop()
        click.echo("stopped.", err=True)
