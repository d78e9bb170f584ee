"""Options and helpers shared by the client commands."""
from __future__ import annotations

import functools
import json
import os
from typing import Any, Callable

import click

from ..client import Client
from ..config import Config, load_config
from ..errors import UsageError
from ..security import client_curve

json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
db_option = click.option("--db", "db_path", help="The master's ledger [db_path of the master config].")
config_option = click.option("--config", "config_path", type=click.Path(dir_okay=False),
                             help="Master config file to read db_path and keys_dir from.")

_TASK_OPTIONS = (
    click.option("--shell", help="A shell command to run."),
    click.option("--script", type=click.Path(), help="A Python script to ship and run with the worker's interpreter; "
                                                     "with --project, a path inside the project (nothing is shipped)."),
    click.option("--python", "python", metavar="MOD:FUNC", help="A Python callable importable on the worker."),
    click.option("--args", "args", help="JSON array: the callable's args, or the script's argv."),
    click.option("--kwargs", "kwargs", help="JSON object: the callable's keyword args."),
    click.option("--tag", "tags", multiple=True, help="Run only on a worker with this tag (repeat for more)."),
    click.option("--device", help="Run only on this device id."),
    click.option("--priority", type=int, help="Higher runs first [0]."),
    click.option("--run-timeout", "task_timeout", type=click.FloatRange(min=0.001), metavar="S",
                 help="Seconds the task may run before it is killed [task_timeout]."),
    click.option("--timeout", "old_task_timeout", type=click.FloatRange(min=0.001), metavar="S",
                 help="Deprecated spelling of --run-timeout (elsewhere --timeout is the wait for the master)."),
    click.option("--retries", type=click.IntRange(0, 100), help="Retries after failure [max_retry_count]."),
    click.option("--name", help="A label shown in lists."),
    click.option("--project", metavar="NAME[@VERSION]",
                 help="Run in this pushed project; without a version, its latest when the master takes the task."),
    click.option("--python-env", "python_env", metavar="NAME",
                 help="Run with this interpreter of the worker's python_envs; only workers that have it take it."),
)


def task_options(fn: Callable) -> Callable:
    """What a task runs and where, shared by `submit` and `schedules add`. The command receives shell, script,
    python, args, kwargs (JSON text: see `json_arg`), tags, device, priority, task_timeout, retries, name, project
    and python_env.

    The task's run time is --run-timeout: every other command's --timeout is the wait for the master's answer.
    --timeout still sets the run time here, with a warning, so scripts written for it keep working.
    """
    @functools.wraps(fn)
    def wrapper(*args: Any, old_task_timeout: float | None, **kwargs: Any) -> Any:
        if old_task_timeout is not None:
            if kwargs.get("task_timeout") is not None:
                raise UsageError("--timeout and --run-timeout both set the task's run time", "give --run-timeout only")
            click.echo("warning: --timeout is deprecated for the task's run time; use --run-timeout "
                       "(--master-timeout is the wait for the master)", err=True)
            kwargs["task_timeout"] = old_task_timeout
        return fn(*args, **kwargs)
    for option in reversed(_TASK_OPTIONS):
        wrapper = option(wrapper)
    return wrapper


def json_arg(value: str | None, name: str, kind: type) -> Any:
    """A JSON array or object given on the command line, or None."""
    if value is None:
        return None
    try:
        parsed = json.loads(value)
    except (json.JSONDecodeError, RecursionError) as e:
        raise UsageError(f"{name} is not valid JSON ({getattr(e, 'msg', 'nested too deep')})",
                         f"e.g. {name} '[1, 2]'" if kind is list
                         else f"e.g. {name} '{{\"n\": 1}}'") from None
    if not isinstance(parsed, kind):
        raise UsageError(f"{name} must be a JSON {'array' if kind is list else 'object'}, got {type(parsed).__name__}",
                         "fix the value")
    return parsed


def client_options_with(*timeout_flags: str) -> Callable[[Callable], Callable]:
    """--master, --config and the master-answer timeout under `timeout_flags`: how a client command reaches the master.

    `submit` and `schedules add` pass only --master-timeout: their --timeout is the deprecated spelling of
    --run-timeout, the task's run time (task_options).
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


def client_config(master_url: str | None, config_path: str | None) -> Config:
    """The master config as a client sees it: --master, else ZMQGRID_MASTER, else the master config's own ROUTER
    (so one --port moves everything); with `curve` on, the client's keys come from it too (security.client_curve)."""
    return load_config("master", config_path, flags={"master_url": master_url}, env=os.environ)


def open_client(master_url: str | None, config_path: str | None, timeout_s: float) -> Client:
    config = client_config(master_url, config_path)
    return Client(config.master_url, timeout_s=timeout_s, curve=client_curve(config))
