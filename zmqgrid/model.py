"""Vocabulary shared by every layer: task and device states, task kinds, and task spec validation."""
from __future__ import annotations

import itertools
import os
import re
import secrets
import time
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from .errors import ProtocolError, UsageError
from .fields import ID_PATTERN
from . import spec_limits as check
from .spec_limits import LIMITS, check_call_value


class _State(str, Enum):
    """A state's name: equal to its text and hashed as it, so it compares with what the wire and the ledger hold;
    str() and format() give the text on every Python this runs on (3.10+; enum.StrEnum, which does the same, is
    3.11+), so an f-string, a log line or an SQL parameter reads "done", never "TaskState.DONE"."""

    __str__ = str.__str__
    __format__ = str.__format__


class TaskState(_State):
    QUEUED = "queued"
    ASSIGNED = "assigned"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"
    QUARANTINED = "quarantined"


class DeviceState(_State):
    ONLINE = "online"
    DRAINING = "draining"
    OFFLINE = "offline"
    PENDING = "pending"


# The sets and lists of states hold their plain text (the wire schema's Enum and the ledger's SQL take them as is).
FINAL_STATES = frozenset(s.value for s in (TaskState.DONE, TaskState.FAILED, TaskState.TIMED_OUT, TaskState.CANCELLED,
                                           TaskState.QUARANTINED))
ACTIVE_STATES = frozenset(s.value for s in (TaskState.ASSIGNED, TaskState.RUNNING))
UNFINISHED_STATES = tuple(s.value for s in (TaskState.QUEUED, TaskState.ASSIGNED, TaskState.RUNNING))
TASK_STATES = tuple(s.value for s in TaskState)
DEVICE_STATES = tuple(s.value for s in DeviceState)
# What a worker may report as the end of an attempt.
ATTEMPT_OUTCOMES = FINAL_STATES - {TaskState.QUARANTINED.value}

TASK_KINDS = ("shell", "script", "python")
_ID_RE = re.compile(ID_PATTERN)   # fullmatch only (see fields.ID_PATTERN)
# A name of a worker's interpreter (config python_envs, a task's python_env, Register.python_envs): 48 at most, so
# the tag fits Register.tags' 64; the tag's space keeps a configured tag from faking it (docs/architecture.md).
PYTHON_ENV_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,47}"
PYTHON_ENV_TAG = "python env:"
_PYTHON_ENV_RE = re.compile(PYTHON_ENV_PATTERN)
_FUNC_RE = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")
MAX_SCRIPT_BYTES = 1 << 20
MAX_PRIORITY = 2 ** 63 - 1   # the ledger's INTEGER is 64-bit signed: a larger one would fail the turn's commit
MAX_RETRIES = 100            # as max_retry_count and `submit --retries`


@dataclass(slots=True)
class TaskError:
    """Why an attempt did not end done: a result's `error` (protocol.ERROR) as `to_wire()` gives it."""

    type: str
    message: str
    traceback: str = ""
    # It recurs on every attempt: the master does not retry it (docs/architecture.md, "Failures that are not retried").
    permanent: bool = False

    def to_wire(self) -> dict:
        wire = {"type": self.type, "message": self.message, "traceback": self.traceback}
        if self.permanent:
            wire["permanent"] = True
        return wire

    @classmethod
    def from_wire(cls, wire: dict) -> TaskError:
        """The error a python pool child sent through its pipe (as `to_wire()` made it there)."""
        return cls(wire["type"], wire["message"], wire.get("traceback", ""), wire.get("permanent") is True)


def _new_id_source() -> None:
    global _ID_PROCESS, _ID_COUNTER
    _ID_PROCESS = secrets.token_hex(5)
    _ID_COUNTER = itertools.count(secrets.randbits(24))


_new_id_source()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_id_source)   # a forked child must not repeat its parent's ids


def new_task_id() -> str:
    """A 24-hex-digit id that sorts by creation: 8 digits of Unix seconds, 6 of a counter that starts at random,
    10 of a random number drawn once per process (MongoDB ObjectId's parts). Two ids collide only if two processes
    draw the same 40 bits and reach the same count in the same second. Time-ordered so that each new row of the
    ledger lands next to the previous one in its id index instead of on a random page (a random page per insert costs
    several times more); the counter before the process part makes the first 14 digits enough to tell tasks apart."""
    return f"{int(time.time()):08x}{next(_ID_COUNTER) & 0xFFFFFF:06x}{_ID_PROCESS}"


def is_valid_id(value: Any) -> bool:
    return isinstance(value, str) and _ID_RE.fullmatch(value) is not None


def _task_id(spec: dict) -> str:
    task_id = spec.get("id") or new_task_id()
    if not is_valid_id(task_id):
        raise ProtocolError(f"task id {check.shown(task_id)} is not allowed; use 1-64 of A-Z a-z 0-9 _ . : -")
    return task_id


def _call_arguments(spec: dict) -> tuple[list, dict]:
    args = list(check.expect(spec, "args", (list, tuple), "a list") or [])
    kwargs = check.expect(spec, "kwargs", (dict,), "an object") or {}
    if kwargs and not all(isinstance(k, str) for k in kwargs):
        raise ProtocolError("task field 'kwargs' must have string keys")
    check_call_value("args", args)
    if kwargs:
        check_call_value("kwargs", kwargs)
    return args, kwargs


# Optional fields that are only type-checked here (their ranges are checked below when present).
_TYPED_OPTIONS = (("priority", (int,), "an integer"), ("timeout", (int, float), "a number of seconds"),
                  ("retries", (int,), "an integer >= 0"), ("retry_backoff", (int, float), "a number of seconds"),
                  ("all", (bool,), "true or false"), ("group", (str,), "a task id"),
                  ("limit_key", (str,), "a key such as a site name"),
                  ("limit_concurrency", (int,), "an integer >= 1"), ("limit_per_minute", (int,), "an integer >= 1"),
                  ("device", (str,), "a device id"), ("name", (str,), "a label"),
                  ("project", (str,), "NAME or NAME@VERSION"), ("python_env", (str,), "a python env name"))


def validate_task_spec(spec: Any) -> dict:
    """Check one submitted task and return it normalised (defaults filled, unknown keys dropped).

    Raises ProtocolError naming the field, the bad value and what is allowed.
    """
    if not isinstance(spec, dict):
        raise ProtocolError(f"a task must be an object, got {type(spec).__name__}")
    task_id = _task_id(spec)
    kind = spec.get("kind")
    if kind not in TASK_KINDS:
        raise ProtocolError(f"task kind {check.shown(kind)} is unknown; allowed: {', '.join(TASK_KINDS)}")
    out: dict[str, Any] = {"id": task_id, "kind": kind}
    if kind == "shell":
        out["command"] = check.command(spec)
    elif kind == "script" and spec.get("source") is None and spec.get("project") is not None:
        # A project's script is a file of the project, named by its path there; nothing of it is shipped
        out["filename"] = check.project_path(check.expect(spec, "filename", (str,), "a path inside the project", True))
        out["args"] = check.str_list(spec, "args")
    elif kind == "script":
        out["source"] = check.expect(spec, "source", (str,), "the script's text", True)
        if len(out["source"].encode()) > MAX_SCRIPT_BYTES:
            raise ProtocolError(f"script is larger than {MAX_SCRIPT_BYTES} bytes")
        filename = check.expect(spec, "filename", (str,), "a file name") or "script.py"
        out["filename"] = check.text("filename", filename, LIMITS.filename_chars)
        out["args"] = check.str_list(spec, "args")
    else:
        function = check.expect(spec, "function", (str,), "'module:function'", True)
        if len(function) > LIMITS.label_chars or not _FUNC_RE.fullmatch(function):
            raise ProtocolError(f"task field 'function' {check.shown(function)} must look like 'package.module:function'")
        out["function"] = function
        out["args"], out["kwargs"] = _call_arguments(spec)
    if kind != "python":
        out["cwd"] = check.text("cwd", check.expect(spec, "cwd", (str,), "a directory path"), LIMITS.cwd_chars)
        out["env"] = check.env(spec)
    get = spec.get
    # Most fields are absent from most tasks: only those present are looked at (this runs for every task).
    for key, types, what in _TYPED_OPTIONS:
        value = get(key)
        out[key] = None if value is None else check.typed(key, value, types, what)
    out["priority"] = out["priority"] or 0
    if not -MAX_PRIORITY - 1 <= out["priority"] <= MAX_PRIORITY:
        raise ProtocolError(f"task field 'priority' must fit in 64 bits (signed), got {check.shown(out['priority'])}")
    timeout = out["timeout"]
    if timeout is not None and not 0 < timeout <= LIMITS.timeout_s:  # written so that NaN is refused too
        raise check.refuse("timeout", f"> 0 and <= {LIMITS.timeout_s} seconds (30 days)", timeout,
                      "give a number of seconds in that range")
    retries = out["retries"]
    if retries is not None and not 0 <= retries <= MAX_RETRIES:
        raise ProtocolError(f"task field 'retries' must be >= 0 and <= {MAX_RETRIES}, got {check.shown(retries)}")
    backoff = out["retry_backoff"]
    if backoff is not None and not 0 <= backoff <= LIMITS.backoff_s:
        raise check.refuse("retry_backoff", f">= 0 and <= {LIMITS.backoff_s} seconds (1 day)", backoff,
                      "give a number of seconds in that range")
    for key in ("name", "limit_key"):
        check.text(key, out[key], LIMITS.label_chars)
    if out["project"] is not None:
        check.project(out["project"])
    if out["python_env"] is not None:
        if not _PYTHON_ENV_RE.fullmatch(out["python_env"]):
            raise check.refuse("python_env", "a python env name: 1-48 of A-Z a-z 0-9 _ . - starting with a letter "
                                             "or digit", out["python_env"], "give it as `devices list` shows it")
        if out["project"] is not None:
            raise ProtocolError("a task of a project runs with its project's environment; give 'project' or "
                                "'python_env', not both")
    for key, what in (("group", "a task id"), ("device", "a device id")):   # a device id is one, a worker's
        if out[key] is not None and not is_valid_id(out[key]):
            raise check.refuse(key, f"{what}: 1-64 of A-Z a-z 0-9 _ . : -", out[key], f"give {what} as listed")
    out["all"] = bool(out["all"])
    if out["all"] and get("device"):
        raise ProtocolError("a task for all workers cannot also name one device; drop 'device' or 'all'")
    for name in ("limit_concurrency", "limit_per_minute"):
        value = out[name]
        if value is not None and not 1 <= value <= LIMITS.per_key:
            raise check.refuse(name, f">= 1 and <= {LIMITS.per_key}", value, "give a count in that range")
        if value is not None and not out["limit_key"]:
            raise ProtocolError(f"task field '{name}' needs 'limit_key' (the key it limits)")
    out["tags"] = [] if get("tags") is None else check.tags(spec)
    out["retry_on"] = None if get("retry_on") is None else check.error_names(spec, "retry_on")
    out["no_retry_on"] = None if get("no_retry_on") is None else check.error_names(spec, "no_retry_on")
    if out["retry_on"] and out["no_retry_on"] and set(out["retry_on"]) & set(out["no_retry_on"]):
        both = ", ".join(sorted(set(out["retry_on"]) & set(out["no_retry_on"])))
        raise ProtocolError(f"task fields 'retry_on' and 'no_retry_on' both name {both}; keep each name in one list")
    out["name"] = out["name"] or describe_spec(out)
    return out


CALL_KEYS = frozenset({"id", "args", "kwargs"})   # what the tasks of one batch of calls may differ in
_MISSING = object()


def validate_batch(tasks: list, common: dict | None = None) -> list[dict]:
    """The specs of a Submit: each task validated, or, with `common`, each task merged over it (see
    docs/architecture.md, "A Submit with common"). A python batch has `common` validated once and, of each task
    that holds only CALL_KEYS, just those keys; the specs are the same as validating every merged task whole.
    A refusal of a Submit of several tasks says which (`task N of M in this Submit: ...`, N from 1), so that a
    client can name the line of a file that holds it."""
    specs: list[dict] = []
    try:
        _validate_into(specs, tasks, common)
    except ProtocolError as e:
        if len(tasks) > 1:
            raise ProtocolError(f"task {len(specs) + 1} of {len(tasks)} in this Submit: {e.message}") from None
        raise
    return specs


def _validate_into(specs: list[dict], tasks: list, common: dict | None) -> None:
    """validate_batch's work: each spec is appended as soon as it is valid (the count says which one failed)."""
    base = None
    if common and "id" not in common:
        try:
            base = validate_task_spec(dict(common, id="common"))
        except ProtocolError:
            pass    # `common` need not be a task by itself (the tasks may complete it): each merged task decides
    calls = base is not None and base["kind"] == "python"
    append = specs.append
    for task in tasks:
        if not isinstance(task, dict) or not common:
            append(validate_task_spec({**common, **task} if common and isinstance(task, dict) else task))
        elif calls and task.keys() <= CALL_KEYS:
            spec = base.copy()
            spec["id"] = _task_id(task)
            args = task.get("args")
            if type(args) is list and "kwargs" not in task:   # the usual call: positional arguments only
                check_call_value("args", args)
                spec["args"] = args
            elif "args" in task or "kwargs" in task:
                args, kwargs = _call_arguments(task)
                if "args" in task:
                    spec["args"] = args
                if "kwargs" in task:
                    spec["kwargs"] = kwargs
            append(spec)
        else:
            append(validate_task_spec({**common, **task}))


def factor_batch(specs: list) -> tuple[dict, list]:
    """(common, tasks) for a Submit: a batch of python calls that differ only in CALL_KEYS travels as their shared
    part once and the rest per task; any other batch as ({}, specs)."""
    first = specs[0] if specs else None
    if not isinstance(first, dict) or first.get("kind") != "python" or len(specs) < 2:
        return {}, specs
    common = {k: v for k, v in first.items() if k not in CALL_KEYS}
    tasks = []
    for spec in specs:
        if not isinstance(spec, dict):
            return {}, specs
        task = {k: spec[k] for k in CALL_KEYS if k in spec}
        if len(spec) - len(task) != len(common) or any(spec.get(k, _MISSING) != v for k, v in common.items()):
            return {}, specs
        tasks.append(task)
    return common, tasks


_DEFAULTS = {"priority": 0, "all": False, "tags": [], "args": [], "kwargs": {}, "filename": "script.py"}


def compact_spec(spec: dict) -> dict:
    """A validated spec without the values validation fills in by itself (None, defaults, the derived name):
    what goes on the wire, so the master decodes and checks a few keys per task instead of twenty."""
    out = {k: v for k, v in spec.items() if v is not None and not (k in _DEFAULTS and _DEFAULTS[k] == v)}
    if spec.get("kind") == "script" and spec.get("source") is None:   # a project's script: its path is required
        out["filename"] = spec["filename"]
    if out.get("name") == describe_spec(spec):
        del out["name"]
    return out


def describe_spec(spec: dict) -> str:
    """A short human label for a task: its command, script name or function."""
    kind = spec.get("kind")
    if kind == "shell":
        command = spec.get("command")
        text = command if isinstance(command, str) else " ".join(command or [])
    elif kind == "script":
        text = " ".join([spec.get("filename") or "script.py", *spec.get("args", [])])
    else:
        text = spec.get("function") or ""
    return text if len(text) <= 120 else text[:117] + "..."


SPEC_KEYS = ("id", "name", "priority", "timeout", "retries", "retry_backoff", "retry_on", "no_retry_on", "tags",
             "device", "all", "cwd", "env", "args", "kwargs", "limit_key", "limit_concurrency", "limit_per_minute",
             "project", "python_env")


def build_spec(*, shell: str | list | None = None, script: str | None = None, python: str | None = None,
               **options: Any) -> dict:
    """A task spec from the same keys as `submit`'s flags and `submit --file` lines.

    `script` is a path on this machine: its text is shipped, so workers need no copy of it. With `project`, it is
    a path inside the project instead (relative to its root): nothing is read here, the worker runs its copy's file.
    Raises UsageError for a missing script or not exactly one of shell/script/python.
    """
    given = [k for k, v in (("shell", shell), ("script", script), ("python", python)) if v is not None]
    if len(given) != 1:
        raise UsageError(f"a task needs exactly one of {', '.join(TASK_KINDS)} (got {', '.join(given) or 'none'})",
                         "e.g. --shell 'echo hi' or {\"shell\": \"echo hi\"}")
    unknown = set(options) - set(SPEC_KEYS) - {"tag"}
    if unknown:
        raise UsageError(f"unknown task key(s): {', '.join(sorted(unknown))}",
                         f"allowed: {', '.join(TASK_KINDS)}, tag, {', '.join(SPEC_KEYS)}")
    spec: dict[str, Any] = {k: v for k, v in options.items() if v is not None and k != "tag"}
    if options.get("tag") is not None:
        tags = options["tag"]
        spec["tags"] = [tags] if isinstance(tags, str) else list(tags)
    for key in ("retry_on", "no_retry_on"):   # one name may be given alone, as a tag may
        if isinstance(spec.get(key), str):
            spec[key] = [spec[key]]
    if shell is not None:
        spec.update(kind="shell", command=shell)
    elif python is not None:
        spec.update(kind="python", function=python)
    elif options.get("project") is not None:
        # In a project the script is a file of the project: its path there is sent, not this machine's file
        spec.update(kind="script", filename=str(script).replace("\\", "/").removeprefix("./"))
    else:
        path = Path(script)
        try:
            spec.update(kind="script", source=path.read_text(encoding="utf-8"), filename=path.name)
        except FileNotFoundError:
            raise UsageError(f"script file {script} does not exist", "check the path") from None
        except (OSError, UnicodeDecodeError) as e:
            raise UsageError(f"cannot read script file {script}: {e}", "pass a readable UTF-8 Python file") from None
    spec.setdefault("id", new_task_id())
    try:
        return validate_task_spec(spec)
    except ProtocolError as e:
        raise UsageError(e.message, "fix the task and submit again") from None
