"""`alerts add|list|test|remove`: rules that send task failures and device events to a webhook or a command."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

import click

from ..alerts.rules import EVENTS, dump_custom
from ..alerts.templates import NAMES
from ..client import Client
from ..errors import EXIT_FAILED, EXIT_OK, UsageError
from .common import client_options, json_option
from .render import emit_json, field, table, when


@click.group()
def alerts() -> None:
    """Send failed tasks and lost devices to a chat webhook or a local command (kept by the master)."""


def _template(value: str) -> str:
    """A template name, or the path of a JSON file holding a custom template (sent as one line)."""
    if value in NAMES:
        return value
    path = Path(value)
    if not path.is_file():
        raise UsageError(f"template {value!r} is unknown; allowed: {', '.join(NAMES)}, or the path of a JSON file "
                         "with ${field} placeholders")
    try:
        return dump_custom(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError) as e:
        raise UsageError(f"template file {value}: {e}", "write it as a JSON document") from None


@alerts.command("add")
@click.argument("rule_name", metavar="NAME")
@click.option("--on", "on", required=True, metavar="EVENTS",
              help=f"Comma-separated events: {', '.join(EVENTS)}.")
@click.option("--tag", "tags", multiple=True, metavar="TAG",
              help="Only tasks (or devices) with this tag; repeat: with every one of them.")
@click.option("--name", "pattern", metavar="PATTERN", help="Only tasks (or devices) whose name matches this glob.")
@click.option("--webhook", metavar="URL", help="POST the event to this http(s) URL.")
@click.option("--command", metavar="CMD", help="Run this command on the master's host, the event JSON on stdin.")
@click.option("--template", default="json", show_default=True, metavar="NAME|FILE",
              help=f"The body: {', '.join(NAMES)}, or a JSON file with ${{field}} placeholders.")
@json_option
@client_options
def add_alert(client: Callable[[], Client], rule_name: str, on: str, tags: tuple, pattern: str | None,
              webhook: str | None, command: str | None, template: str, as_json: bool) -> int:
    """Add a rule: matching events go to a webhook (or a command), at least once, in order, with retries.

    \b
    python main.py alerts add crawl-failed --on failed,timed_out,quarantined --tag crawler \\
        --webhook https://hooks.slack.com/services/T000/B000/XXXX --template slack
    python main.py alerts add lost-workers --on offline,revoked --template dingtalk \\
        --webhook 'https://oapi.dingtalk.com/robot/send?access_token=...'
    python main.py alerts add page-me --on failed --name 'nightly-*' --command 'logger -t zmqgrid'
    """
    if (webhook is None) == (command is None):
        raise UsageError("give one of --webhook URL or --command CMD", "see: python main.py alerts add --help")
    with client() as c:
        row = c.alert_add(rule_name, on, webhook=webhook, command=command, tags=list(tags) or None, pattern=pattern,
                          template=_template(template))
    if as_json:
        emit_json(row)
    else:
        click.echo(f"{row['name']} added: {row['on']} -> {row['target']} ({row['template']})")
    return EXIT_OK


@alerts.command("list")
@json_option
@client_options
def list_alerts(client: Callable[[], Client], as_json: bool) -> None:
    """List rules with their deliveries: pending, delivered, failed attempts, dropped, the last error.

    Example: python main.py alerts list"""
    with client() as c:
        rows = c.alerts()
    if as_json:
        emit_json(rows)
        return
    table(([r["name"], r["on"], _filter(r), r["target"], r["template"], r["pending"], r["delivered"], r["failed"],
            r["dropped"], f"{when(r['last_error_at'])} {field(r['last_error'], 80)}" if r["last_error"] else "-"]
           for r in rows),
          ["NAME", "ON", "FILTER", "TARGET", "TEMPLATE", "PENDING", "DELIVERED", "FAILED", "DROPPED", "LAST ERROR"])


def _filter(row: dict) -> str:
    parts = [f"tag {row['tags']}" if row["tags"] else "", f"name {row['pattern']}" if row["pattern"] else ""]
    return " ".join(p for p in parts if p) or "-"


@alerts.command("test")
@click.argument("name")
@click.option("--wait", "wait_s", type=click.FloatRange(0, 600), default=20.0, show_default=True,
              help="Seconds to wait for the first attempt's outcome.")
@client_options
def test_alert(client: Callable[[], Client], name: str, wait_s: float) -> int:
    """Send a sample event through a rule and say how its first attempt went (exit 1 if it failed).

    Example: python main.py alerts test crawl-failed"""
    with client() as c:
        seq = c.alert_test(name)["seq"]
        deadline = time.monotonic() + wait_s
        while True:
            row = c.alert_event(seq)
            if row["delivered_at"] is not None:
                click.echo(f"{name}: test event {seq} delivered")
                return EXIT_OK
            if row["attempts"]:
                click.echo(f"{name}: test event {seq} not delivered: {field(row['last_error'], 300)} "
                           f"(retried with backoff; see: python main.py alerts list)", err=True)
                return EXIT_FAILED
            if time.monotonic() >= deadline:
                click.echo(f"{name}: test event {seq} not sent within {wait_s:g} s (events before it in the rule "
                           "go first; see: python main.py alerts list)", err=True)
                return EXIT_FAILED
            time.sleep(0.1)


@alerts.command("remove")
@click.argument("name")
@json_option
@client_options
def remove_alert(client: Callable[[], Client], name: str, as_json: bool) -> int:
    """Delete a rule and its undelivered events.  Example: python main.py alerts remove crawl-failed"""
    with client() as c:
        row = c.alert_remove(name)
    if as_json:
        emit_json(row)
    else:
        click.echo(f"{row['name']} removed")
    return EXIT_OK
