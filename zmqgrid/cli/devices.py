"""`devices list`."""
from __future__ import annotations

from typing import Callable

import click

from ..client import Client
from .common import client_options, json_option
from .render import emit_json, seconds, table


@click.group()
def devices() -> None:
    """Inspect workers (devices)."""


@devices.command("list")
@json_option
@client_options
def list_devices(client: Callable[[], Client], as_json: bool) -> None:
    """List devices with state, load and resources.  Example: python main.py devices list --json"""
    with client() as c:
        rows = c.devices()
    if as_json:
        emit_json(rows)
        return
    def pct(row: dict, key: str) -> str:
        value = (row.get("metrics") or {}).get(key)
        return "-" if value is None else f"{value:.0f}%"
    table(([r["device_id"], r["hostname"], r["state"], seconds(r["seconds_since_heartbeat"]),
            f"{r['in_flight']}/{r['concurrency']}", pct(r, "cpu_percent"), pct(r, "memory_percent"),
            pct(r, "disk_percent"), ",".join(r["tags"]) or "-", r["os"], r["python_version"]] for r in rows),
          ["DEVICE", "HOST", "STATE", "LAST SEEN", "TASKS", "CPU", "MEM", "DISK", "TAGS", "OS", "PYTHON"])
