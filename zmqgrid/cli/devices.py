"""`devices list`."""
from __future__ import annotations

from typing import Callable

import click

from ..client import Client
from .common import client_options, json_option
from ..errors import EXIT_FAILED, EXIT_OK
from ..model import DeviceState
from .render import emit_json, seconds, table


@click.group()
def devices() -> None:
    """Inspect workers (devices)."""


@devices.command("list")
@json_option
@client_options
def list_devices(client: Callable[[], Client], as_json: bool) -> None:
    """List devices with state, last seen, tasks and resources.  Example: python main.py devices list --json

    TASKS is running/slots, then +N for the tasks assigned to it that wait for a slot. PREFETCH is how many tasks
    it holds beyond its slots now: auto:N when it sizes that itself (the default), N when its config fixes it. An
    offline device shows when it was last seen and no prefetch, CPU, memory or disk figure (its last ones are in
    --json). PY ENVS: the worker's python_envs, each with the version its interpreter answered (--python-env NAME
    chooses one).
    """
    with client() as c:
        rows = c.devices()
    if as_json:
        emit_json(rows)
        return
    table(([r["device_id"], r["hostname"], r["state"], seconds(r["seconds_since_heartbeat"]), tasks(r),
            prefetch(r), pct(r, "cpu_percent"), pct(r, "memory_percent"), pct(r, "disk_percent"),
            ",".join(map(str, r["tags"] or [])) or "-", r["os"], r["python_version"], python_envs(r)] for r in rows),
          ["DEVICE", "HOST", "STATE", "LAST SEEN", "TASKS", "PREFETCH", "CPU", "MEM", "DISK", "TAGS", "OS", "PYTHON",
           "PY ENVS"])


def python_envs(row: dict) -> str:
    """The worker's other interpreters with the version each answered ("py39 3.9.18, scrapy 3.11.7")."""
    envs = row.get("python_envs")
    if not isinstance(envs, list):   # a master that does not tell them
        return "-"
    return ", ".join(f"{e.get('name')} {e.get('version')}" for e in envs if isinstance(e, dict)) or "-"


def pct(row: dict, key: str) -> str:
    """A live figure of the device's last heartbeat; none for an offline device (its last figures are not live)."""
    metrics = row.get("metrics")
    value = metrics.get(key) if isinstance(metrics, dict) and row.get("state") != DeviceState.OFFLINE else None
    # A row written before heartbeats were checked may hold anything here: only a number is shown.
    return f"{value:.0f}%" if isinstance(value, (int, float)) and not isinstance(value, bool) else "-"


def prefetch(row: dict) -> str:
    """The tasks it holds beyond its slots now, "auto:N" when adaptive; none for an offline device."""
    metrics = row.get("metrics")
    if not isinstance(metrics, dict) or row.get("state") == DeviceState.OFFLINE:
        return "-"
    value = metrics.get("prefetch")
    if not isinstance(value, int) or isinstance(value, bool):
        return "-"
    return f"auto:{value}" if metrics.get("prefetch_adaptive") is True else str(value)


def tasks(row: dict) -> str:
    """running/slots, then +N assigned to it and waiting for a slot ("3/3 +2")."""
    if "assigned" not in row:   # a master that tells in_flight only
        return f"{row.get('in_flight', 0)}/{row.get('concurrency')}"
    assigned = row.get("assigned")
    return f"{row.get('running', 0)}/{row.get('concurrency')}" + (f" +{assigned}" if assigned else "")


def _device_command(action: str, doc: str):
    @devices.command(action, help=doc)
    @click.argument("device_ids", nargs=-1, required=True)
    @json_option
    @client_options
    def command(client: Callable[[], Client], device_ids: tuple, as_json: bool) -> int:
        with client() as c:
            outcome = c.control_devices(action, list(device_ids))
        if as_json:
            emit_json(outcome)
        else:
            for device_id, state in outcome.items():
                click.echo(f"{device_id} {state}")
        return EXIT_FAILED if any(v in ("not found", DeviceState.OFFLINE) for v in outcome.values()) else EXIT_OK
    return command


drain = _device_command("drain", "Let a device finish what it has and take nothing new.  "
                                 "Example: python main.py devices drain crawler-01")
resume = _device_command("resume", "Let a drained device take tasks again.  Example: python main.py devices resume crawler-01")
reload = _device_command("reload", "Make a worker re-read its config file (concurrency, tags, log level) and "
                                   "register again.  Example: python main.py devices reload crawler-01")
shutdown = _device_command("shutdown", "Drain a device, then stop its worker process when it is idle.  "
                                       "Example: python main.py devices shutdown crawler-01")
