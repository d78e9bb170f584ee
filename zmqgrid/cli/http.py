"""`http`: serve the HTTP gateway (JSON API, /metrics, probes) for a master; `http tokens` manages its bearer tokens."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import click
import psutil

from ..config import Config
from ..errors import UsageError
from ..logs import configure_logging
from ..security import client_curve, secured
from ..worker.proctree import end_process
from .common import client_config
from .render import emit_json, table, when

DEFAULT_HTTP_PORT = 8080


def tokens_path(config: Config, given: str | None) -> str:
    """--tokens, else <keys_dir>/http_tokens.json: beside the keys, read only by the user that runs the gateway."""
    return given or str(Path(config.keys_dir) / "http_tokens.json")


tokens_option = click.option("--tokens", "tokens_file", type=click.Path(dir_okay=False),
                             help="The token store [<keys_dir>/http_tokens.json].")
config_option = click.option("--config", "config_path", type=click.Path(dir_okay=False),
                             help="Master config file to read the master address and keys_dir from.")


@click.group(invoke_without_command=True)
@click.option("--port", type=click.IntRange(1, 65535), default=DEFAULT_HTTP_PORT, show_default=True,
              help="TCP port to serve HTTP on.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind; a non-loopback one needs a token in the store, or --insecure.")
@click.option("--master", "master_url", metavar="URL",
              help="The master's ROUTER, tcp://HOST:PORT [env ZMQGRID_MASTER; default from the master config].")
@config_option
@tokens_option
@click.option("--master-timeout", "timeout_s", type=click.FloatRange(0.05, 600), default=5.0, show_default=True,
              help="Seconds a request waits for the master before answering 503.")
@click.option("--insecure", is_flag=True, help="Allow a non-loopback --host with no token (every caller is admin).")
@click.option("--certfile", type=click.Path(dir_okay=False), help="Serve HTTPS with this PEM certificate chain.")
@click.option("--keyfile", type=click.Path(dir_okay=False), help="The private key of --certfile.")
@click.option("--max-body-kb", type=click.IntRange(1, 1 << 20), default=4096, show_default=True,
              help="Largest request body accepted (413 past it).")
@click.option("--metrics-refresh", "metrics_refresh_s", type=click.FloatRange(0, 3600), default=0, show_default=True,
              metavar="S", help="Read the master for /metrics every S seconds in the background, so a scrape never "
                                "waits on it (0: when scraped, at most once a second).")
@click.option("--log-level", type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
              default="INFO", show_default=True, help="Log records from this level up.")
@click.option("--log-file", help="Log file [the master config's log_file].")
@click.option("--parent-pid", type=int, hidden=True)   # standalone's gateway: stop when the standalone process is gone
@click.pass_context
def http(ctx: click.Context, port: int, host: str, master_url: str | None, config_path: str | None,
         tokens_file: str | None, timeout_s: float, insecure: bool, certfile: str | None, keyfile: str | None,
         max_body_kb: int, metrics_refresh_s: float, log_level: str, log_file: str | None,
         parent_pid: int | None) -> None:
    """Serve the HTTP gateway: the JSON API under /api/distribution, /metrics, /healthz and /readyz.

    \b
    python main.py http --port 8080                     beside a master on this machine
    python main.py http --host 0.0.0.0 --certfile c.pem --keyfile k.pem   (needs a token: http tokens create)
    python main.py http tokens create grafana --role read
    curl -s localhost:8080/api/distribution/system/overview

    The gateway is a client of the master (under CURVE it uses this machine's admin or client key); a caller
    never gets more than its token's role. See README, HTTP gateway.
    """
    if ctx.invoked_subcommand is not None:
        return
    from ..gateway.server import run
    from ..gateway.settings import GatewaySettings
    config = client_config(master_url, config_path)
    configure_logging(log_level.upper(), log_file or config.log_file)
    settings = GatewaySettings(master_url=config.master_url, host=host, port=port,
                               tokens_path=tokens_path(config, tokens_file), curve=client_curve(config),
                               master_timeout_s=timeout_s, max_body_bytes=max_body_kb * 1024, insecure=insecure,
                               certfile=certfile, keyfile=keyfile, metrics_refresh_s=metrics_refresh_s)
    if parent_pid:
        _stop_with_parent(parent_pid)
    run(settings)


def _stop_with_parent(parent_pid: int) -> None:
    """A standalone's gateway must not outlive it, even one killed with SIGKILL: SIGTERM ourselves when it is gone."""
    def watch() -> None:
        while psutil.pid_exists(parent_pid) and os.getppid() == parent_pid:
            time.sleep(0.5)
        os.kill(os.getpid(), 15)
    threading.Thread(target=watch, daemon=True, name="parent-watch").start()


@http.group()
def tokens() -> None:
    """Bearer tokens of the HTTP gateway: create, list, revoke (stored as sha256, in a file only its user reads)."""


def _store(config_path: str | None, tokens_file: str | None):
    from ..gateway.tokens import TokenStore
    return TokenStore(tokens_path(client_config(None, config_path), tokens_file))


@tokens.command("create")
@click.argument("name")
@click.option("--role", type=click.Choice(["read", "client", "admin"]), default="read", show_default=True,
              help="read: every GET and /metrics; client: also submit; admin: also cancel, requeue, drain.")
@config_option
@tokens_option
def create_token(name: str, role: str, config_path: str | None, tokens_file: str | None) -> None:
    """Make a token and print it once (only its sha256 is kept).  Example: python main.py http tokens create grafana --role read

    A running gateway takes it at its next request. Send it as: curl -H "Authorization: Bearer TOKEN" ...
    """
    store = _store(config_path, tokens_file)
    token = store.create(name, role)
    click.echo(token)
    click.echo(f"token {name!r} ({role}) stored in {store.path}; it is shown only now", err=True)


@tokens.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
@config_option
@tokens_option
def list_tokens(as_json: bool, config_path: str | None, tokens_file: str | None) -> None:
    """List the tokens' names, roles and creation times (never the tokens).  Example: python main.py http tokens list"""
    rows = [{"name": t.name, "role": t.role, "created_at": t.created_at}
            for t in _store(config_path, tokens_file).tokens()]
    if as_json:
        emit_json(rows)
    else:
        table(([r["name"], r["role"], when(r["created_at"])] for r in rows), ["NAME", "ROLE", "CREATED"])


@tokens.command("revoke")
@click.argument("name")
@config_option
@tokens_option
def revoke_token(name: str, config_path: str | None, tokens_file: str | None) -> None:
    """Remove a token; a running gateway refuses it from its next request.  Example: python main.py http tokens revoke grafana"""
    found = _store(config_path, tokens_file).revoke(name)
    click.echo(f"revoked token {found.name!r} ({found.role})")


def start_gateway(config: Config, port: int, host: str = "127.0.0.1") -> subprocess.Popen:
    """`http` for a standalone cluster's master, as a child process (never a thread of the process that runs the
    master loop); it stops when this process is gone. Returns once it answers /healthz, or raises UsageError."""
    cmd = [sys.executable, "-m", "zmqgrid", "http", "--port", str(port), "--host", host, "--master", config.master_url,
           "--parent-pid", str(os.getpid()), "--log-level", config.log_level]
    if config.log_file:
        log = Path(config.log_file)
        cmd += ["--log-file", str(log.with_name(f"{log.stem}-http{log.suffix}"))]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH", "")) if p))
    if secured(config):
        env.update(ZMQGRID_CURVE="true", ZMQGRID_KEYS_DIR=config.keys_dir)
    proc = subprocess.Popen(cmd, env=env, start_new_session=True, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise UsageError(f"the http gateway on port {port} exited with {proc.returncode}",
                             "see its error above, or pick another --http port")
        try:
            with urllib.request.urlopen(f"http://{host}:{port}/healthz", timeout=1):
                return proc
        except OSError:
            time.sleep(0.1)
    end_process(proc)
    raise UsageError(f"the http gateway on port {port} did not answer within 20 s", "see its log file")

