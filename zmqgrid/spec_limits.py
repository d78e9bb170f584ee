"""Checks of one task spec field: its type and its bounds (docs/architecture.md, "A task dict").

`zmqgrid.model.validate_task_spec` puts them together into the check of a whole spec; each raises ProtocolError
naming the field, what is allowed and, for a bound, what to do.
"""
from __future__ import annotations

import re
import reprlib
from dataclasses import dataclass
from typing import Any

from .errors import ProtocolError

@dataclass(frozen=True)
class SpecLimits:
    """What one task spec may hold (docs/architecture.md, "A task dict"). Each bound keeps a value that a client
    sends from failing the turn's commit (SQLite's 64-bit INTEGER), a listing (a row too large for a reply) or a
    packer (nesting): a task beyond them is refused when its Submit is handled, before anything is staged."""
    timeout_s: int = 30 * 86400
    backoff_s: int = 86400
    per_key: int = 2 ** 31 - 1          # limit_concurrency, limit_per_minute
    label_chars: int = 200              # name, limit_key, device, function
    tag_chars: int = 64
    tags: int = 32
    command_chars: int = 128 * 1024     # a command, or a command's (or script's) list of arguments together
    command_items: int = 4096
    cwd_chars: int = 4096
    filename_chars: int = 255
    env_entries: int = 256
    env_key_chars: int = 256
    env_value_chars: int = 32 * 1024
    env_chars: int = 256 * 1024
    call_bytes: int = 1 << 20           # a python task's args, and its kwargs, each
    depth: int = 32                     # containers nested inside args or kwargs
    error_names: int = 32               # retry_on, no_retry_on: names each
    error_name_chars: int = 128
    project_chars: int = 129            # NAME (1-64) @ VERSION (6-64 hex digits)


LIMITS = SpecLimits()
# A project's name (docs/architecture.md, Projects): the push's schema and a task's `project` share it.
PROJECT_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"
_PROJECT_REF = re.compile(PROJECT_PATTERN + r"(?:@[0-9a-f]{6,64})?")


def expect(spec: dict, key: str, types: tuple, what: str, required: bool = False) -> Any:
    value = spec.get(key)
    if value is None:
        if required:
            raise ProtocolError(f"task field '{key}' is required ({what})")
        return None
    return typed(key, value, types, what)


def typed(key: str, value: Any, types: tuple, what: str) -> Any:
    if isinstance(value, bool) and bool not in types:
        raise ProtocolError(f"task field '{key}' must be {what}, got {shown(value)}")
    if not isinstance(value, types):
        raise ProtocolError(f"task field '{key}' must be {what}, got {type(value).__name__}")
    return value


def refuse(key: str, rule: str, value: Any = None, hint: str = "") -> ProtocolError:
    got = "" if value is None else f", got {shown(value)}"
    return ProtocolError(f"task field '{key}' must be {rule}{got}; {hint or 'shorten it and submit again'}")


_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxstring, _SHORT.maxother = 3, 40, 40   # nesting cut short: never a deep recursion


def shown(value: Any) -> str:
    """A refused value as a refusal quotes it: its size when it is long (a refusal is one short line)."""
    if isinstance(value, (str, list, dict, tuple)) and len(value) > 40:
        return f"a {type(value).__name__} of length {len(value)}"
    return _SHORT.repr(value)


def text(key: str, value: str | None, limit: int) -> str | None:
    if value is not None and len(value) > limit:
        raise refuse(key, f"at most {limit} characters", value)
    return value


def str_list(spec: dict, key: str) -> list[str]:
    value = expect(spec, key, (list, tuple), "a list of strings") or []
    if not all(isinstance(v, str) for v in value):
        raise ProtocolError(f"task field '{key}' must be a list of strings")
    if len(value) > LIMITS.command_items or sum(map(len, value)) > LIMITS.command_chars:
        raise refuse(key, f"at most {LIMITS.command_items} strings of {LIMITS.command_chars} characters together")
    return list(value)


def tags(spec: dict) -> list[str]:
    tags = expect(spec, "tags", (list, tuple), "a list of strings") or []
    if len(tags) > LIMITS.tags:
        raise refuse("tags", f"at most {LIMITS.tags} tags", tags)
    for tag in tags:
        if not isinstance(tag, str) or not 1 <= len(tag) <= LIMITS.tag_chars:
            raise refuse("tags", f"a list of tags of 1-{LIMITS.tag_chars} characters", tag)
    return list(tags)


def env(spec: dict) -> dict[str, str] | None:
    env = expect(spec, "env", (dict,), "an object of string values")
    if env is None:
        return None
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
        raise ProtocolError("task field 'env' must map strings to strings")
    if len(env) > LIMITS.env_entries:
        raise refuse("env", f"at most {LIMITS.env_entries} entries", env)
    total = 0
    for name, value in env.items():
        if not 1 <= len(name) <= LIMITS.env_key_chars or len(value) > LIMITS.env_value_chars:
            raise refuse("env", f"names of 1-{LIMITS.env_key_chars} characters and values of at most "
                                 f"{LIMITS.env_value_chars} characters", name)
        total += len(name) + len(value)
    if total > LIMITS.env_chars:
        raise refuse("env", f"at most {LIMITS.env_chars} characters of names and values together", env)
    return env


_ERROR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def error_names(spec: dict, key: str) -> list[str] | None:
    """`retry_on` or `no_retry_on`: error type names as a failed attempt reports them (an exception's class name),
    or None for none (an empty list is none)."""
    names = expect(spec, key, (list, tuple), "a list of error type names")
    if not names:
        return None
    if len(names) > LIMITS.error_names:
        raise refuse(key, f"at most {LIMITS.error_names} names", names)
    for name in names:
        if not (isinstance(name, str) and len(name) <= LIMITS.error_name_chars and _ERROR_NAME.fullmatch(name)):
            raise refuse(key, f"a list of class names (Python identifiers of 1-{LIMITS.error_name_chars} characters, "
                              "not dotted)", name, "give the exception's class name alone, e.g. ConnectionError")
    return list(names)


def project(value: str) -> str:
    """`project`: NAME or NAME@VERSION, a version being the full hash or a prefix of at least 6 of its digits
    (the master pins it to one version when it takes the Submit)."""
    if len(value) > LIMITS.project_chars or not _PROJECT_REF.fullmatch(value):
        raise refuse("project", "NAME or NAME@VERSION (a name of 1-64 of A-Z a-z 0-9 _ . - starting with a letter or "
                                "digit; a version of 6-64 lowercase hex digits)", value,
                     "give it as `projects list` shows it")
    return value


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def project_path(value: str) -> str:
    """A project `script` task's `filename`: a path inside the project, as an archive member's name may be
    (relative, `/`-separated, no `..`, `.` or empty part, no control character), at most cwd_chars."""
    parts = value.split("/")
    if (not value or len(value) > LIMITS.cwd_chars or _CONTROL.search(value) or "\\" in value
            or re.match(r"[A-Za-z]:", value) or any(part in ("", ".", "..") for part in parts)):
        raise refuse("filename", f"a path inside the project: relative, / between folders, no '..', at most "
                                 f"{LIMITS.cwd_chars} characters", value,
                     "give the script's path from the project's root, e.g. tools/export.py")
    return value


def command(spec: dict) -> str | list[str]:
    command = expect(spec, "command", (str, list, tuple), "a string or a list of strings", True)
    if isinstance(command, str):
        if not command.strip():
            raise ProtocolError("task field 'command' is empty")
        return text("command", command, LIMITS.command_chars)
    if not (command and all(isinstance(c, str) for c in command)):
        raise ProtocolError("task field 'command' as a list must hold at least one string, all strings")
    return str_list(spec, "command")


def check_call_value(key: str, value: list | tuple | dict) -> None:
    """Refuse a python task's `args` or `kwargs` larger than LIMITS.call_bytes or nested deeper than LIMITS.depth.
    The size counted is an upper bound of the packed size (strings and bytes by their length, other scalars 9
    bytes); the walk stops at the first bound passed, so it costs no more than the bytes the value came in."""
    left = LIMITS.call_bytes
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        container, depth = stack.pop()
        if depth > LIMITS.depth:
            raise refuse(key, f"nested at most {LIMITS.depth} deep", hint="flatten the value")
        if type(container) is dict:
            left -= sum(len(k) + 5 if type(k) in (str, bytes) else 9 for k in container)
            container = container.values()
        for item in container:
            kind = type(item)
            if kind is str or kind is bytes:
                left -= len(item) + 5
            elif kind is list or kind is tuple or kind is dict:
                left -= 5
                stack.append((item, depth + 1))
            else:
                left -= 9
            if left < 0:
                break
        if left < 0:
            raise refuse(key, f"at most {LIMITS.call_bytes >> 20} MiB packed",
                          hint="pass a path or a key to the data instead of the data")
