"""Options and helpers shared by the client commands."""
from __future__ import annotations

import functools
import os
from typing import Any, Callable

import click

from ..client import Client
from ..config import load_config

json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")


def client_options_with(*timeout_flags: str) -> Callable[[Callable], Callable]:
    """--master, --config and the master-answer timeout under `timeout_flags`: how a client command reaches the master.

    `submit` passes only --master-timeout, because its own --timeout is the task's timeout (ARCHITECTURE.md).
    """
    def decorate(fn: Callable) -> Callable:
        @click.option("--master", "master_url", metavar="URL",
                      help="The master's ROUTER, tcp://HOST:PORT [env ZMQGRID_MASTER; default from the master config].")
        @click.option("--config", "config_path", type=click.Path(dir_okay=False),
                      help="Config file to read the master address from.")
        @click.option(*timeout_flags, "timeout_s", type=click.FloatRange(0.05, 3600), default=5.0, show_default=True,
                      help="Seconds to wait for the master's answer.")
        @functools.wraps(fn)
        def wrapper(*args: Any, master_url: str | None, config_path: str | None, timeout_s: float,
                    **kwargs: Any) -> Any:
            kwargs["client"] = functools.partial(open_client, master_url, config_path, timeout_s)
            return fn(*args, **kwargs)
        return wrapper
    return decorate


client_options = client_options_with("--timeout", "--master-timeout")


def master_url_for(master_url: str | None, config_path: str | None) -> str:
    """--master, else ZMQGRID_MASTER, else the master config's own ROUTER (so one --port moves everything)."""
    config = load_config("master", config_path, flags={"master_url": master_url}, env=os.environ)
    return config.master_url


def open_client(master_url: str | None, config_path: str | None, timeout_s: float) -> Client:
    return Client(master_url_for(master_url, config_path), timeout_s=timeout_s)
