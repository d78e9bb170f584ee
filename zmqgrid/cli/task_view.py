"""`tasks show` for a person: what a task runs and under which rules, in the words of `submit`'s flags."""
from __future__ import annotations

import json
import shlex
from typing import Any

from .render import field, seconds


def what_it_runs(spec: dict) -> tuple[str, str]:
    """(label, text) of the command line, script with its arguments, or call with its arguments."""
    kind = spec.get("kind")
    if kind == "shell":
        command = spec.get("command")
        return "command", command if isinstance(command, str) else shlex.join(map(str, command or []))
    if kind == "script":
        return "script", shlex.join([str(spec.get("filename") or "script.py"), *map(str, spec.get("args") or [])])
    args = [_value(a) for a in spec.get("args") or []]
    args += [f"{k}={_value(v)}" for k, v in (spec.get("kwargs") or {}).items()]
    return "call", f"{spec.get('function')}({', '.join(args)})"


def _value(value: Any) -> str:
    # An argument as JSON, the form `--args` takes it in.
    return json.dumps(value, default=str, ensure_ascii=False)


def spec_lines(task: dict) -> list[tuple[str, str]]:
    """The spec of `task` (a `Client.task` answer) as (label, text) lines. Environment variables are named
    without their values, which may be secrets; every text a client chose passes `field` (printable, cut)."""
    spec = task.get("spec") or {}
    label, text = what_it_runs(spec)
    lines = [("kind", field(task.get("kind") or spec.get("kind"))), (label, field(text))]
    if spec.get("project"):   # NAME@VERSION: the version the master pinned when it took the task
        lines.append(("project", field(spec["project"])))
    if spec.get("python_env"):   # the worker's interpreter it chose (python_envs)
        lines.append(("python env", field(spec["python_env"])))
    if spec.get("cwd"):
        lines.append(("cwd", field(spec["cwd"])))
    if spec.get("env"):
        lines.append(("env", field(", ".join(spec["env"])) + " (values not shown)"))
    lines.append(("tags", field(", ".join(map(str, task.get("tags") or spec.get("tags") or [])))))
    if spec.get("device"):
        lines.append(("pinned to", field(spec["device"])))
    lines.append(("priority", field(task.get("priority"))))
    timeout = task.get("timeout_s")
    lines.append(("timeout", seconds(timeout) if isinstance(timeout, (int, float)) else "-"))
    retries = f"{task.get('retries')}"
    if spec.get("retry_backoff") is not None:
        retries += f" (first backoff {seconds(spec['retry_backoff'])})"
    lines.append(("retries", retries))
    if spec.get("limit_key"):
        rules = [f"{spec['limit_concurrency']} at once" if spec.get("limit_concurrency") else "",
                 f"{spec['limit_per_minute']} a minute" if spec.get("limit_per_minute") else ""]
        rules = [r for r in rules if r]
        lines.append(("limit", field(spec["limit_key"]) + (f": at most {' and '.join(rules)}" if rules else "")))
    if task.get("group_id"):
        lines.append(("group", field(task["group_id"])))
    return lines
