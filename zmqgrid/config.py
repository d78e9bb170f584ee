"""Settings for every mode: dataclass defaults < config file < ZMQGRID_* environment < command-line flags."""
from __future__ import annotations

import difflib
import json
import logging
import math
import os
import re
import sys
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Mapping

from .config_envs import check_python_envs, parse_text as parse_python_envs
from .config_file import read_config_file
from .config_rules import resolve, tcp_url
from .errors import ConfigError
from .fields import ID_PATTERN
from .model import TASK_KINDS

logger = logging.getLogger(__name__)

MODES = ("master", "worker", "standalone")
STRATEGIES = ("least_tasks", "round_robin", "weighted", "random")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
PYTHON_POOLS = ("process", "inline")
DURABILITY = ("full", "normal")   # the ledger's SQLite synchronous level (zmqgrid.store.schema)
ENV_PREFIX = "ZMQGRID_"
ENV_ALIASES = {"ZMQGRID_MASTER": "master_url"}
# ARCHITECTURE.md fixes these flag spellings; an error must name the flag the user actually typed.
FLAG_NAMES = {"master_url": "--master", "concurrent_tasks": "--concurrency", "tags": "--tag", "db_path": "--db",
              "allowed_kinds": "--allow-kind", "allowed_modules": "--allow-module"}
# Keys of older config files that no setting reads: refused with what replaces them, so nobody relies on one.
RETIRED = {"api_key": "workers and clients authenticate with CURVE keys: README, Security",
           "dispatch_interval": "dispatch is event-driven: a task goes out as soon as a worker has room"}


@dataclass
class Config:
    """One flat set of settings shared by master, worker and standalone; each mode reads what it needs."""

    mode: str = "standalone"
    """The role of this process: one of MODES."""
    host: str = "127.0.0.1"
    """Address the master binds its three sockets on (0.0.0.0 or * for every interface)."""
    port: int = 8000
    """The master's ROUTER port: register, credit, tasks, results, client requests."""
    pub_port: int | None = None
    """The master's PUB port (commands, beacon); load_config fills in port + 1 when unset."""
    heartbeat_port: int | None = None
    """The master's heartbeat PULL port; load_config fills in port + 2 when unset."""
    master_url: str = "tcp://127.0.0.1:8000"
    """Where workers and clients reach the master's ROUTER, normalised to tcp://HOST:PORT."""
    device_id: str | None = None
    """A worker's identity; load_config uses the host name for a worker so it survives restarts."""
    device_name: str | None = None
    """A worker's display name; defaults to device_id."""
    tags: list[str] = field(default_factory=list)
    """Tags a worker offers, which tasks may require (e.g. linux, gpu)."""
    concurrent_tasks: int = 3
    """Tasks a worker runs at once."""
    prefetch: int | None = None
    """Tasks a worker holds beyond concurrent_tasks (credit = concurrent_tasks + prefetch); null or "auto": adaptive,
    sized from the worker's task durations and round trip to the master (docs/architecture.md)."""
    task_timeout: float = 3600.0
    """Default per-task timeout in seconds; the task's whole process tree is killed after it."""
    task_nice: int = 10
    """Added to the niceness of every task process (POSIX): a busy task yields the CPU to the daemons first."""
    max_tasks_per_child: int = 100_000
    """Worker: a python pool child is replaced after running this many calls (0: never). Booting one costs
    about 0.1 s of CPU, so a low count taxes tiny calls; max_child_memory_mb is the guard against leaks."""
    max_child_memory_mb: int = 1024
    """Worker: a python pool child whose peak RSS passes this many MiB is replaced after its call (0: never)."""
    python_pool: str = "process"
    """Worker: where `python` tasks run. "process": in pool children (isolated: killed on timeout, recycled,
    reniced). "inline": in the worker's own loop, one at a time, for short trusted calls (no child hop)."""
    max_retry_count: int = 3
    """Default number of retries for a task that fails, times out or loses its worker."""
    retry_backoff: float = 1.0
    """Seconds before the first retry of a failed task; doubled each attempt, with jitter."""
    retry_backoff_max: float = 60.0
    """Longest wait before a retry, in seconds."""
    alert_retry: float = 1.0
    """Master: seconds before an alert event that failed to deliver is tried again; doubled each attempt, with jitter."""
    alert_retry_max: float = 300.0
    """Master: longest wait between attempts to deliver an alert event, in seconds."""
    alert_timeout: float = 10.0
    """Master: seconds an alert's webhook POST or local command may take before the attempt counts as failed."""
    quarantine_after: int = 3
    """Quarantine a task after its worker died this many times while running it (0: never)."""
    load_balance_strategy: str = "least_tasks"
    """How the master picks among eligible workers with credit: one of STRATEGIES, a dotted path
    "package.module:function", or the name of an entry point in the group "zmqgrid.strategies"."""
    weight: float = 1.0
    """A worker's weight for the `weighted` strategy (e.g. 2 for a machine twice as strong)."""
    heartbeat_interval: float = 1.0
    """Seconds between a worker's heartbeats (the seed's 30 would take minutes to notice a dead worker)."""
    device_timeout: float = 2.5
    """Seconds without a heartbeat before the master marks a device offline; must exceed heartbeat_interval."""
    timeout_check_interval: float = 0.2
    """Seconds between the master's liveness and task-timeout checks."""
    awake_poll_us: int = 800
    """Master: after a loop turn with task traffic, poll this many microseconds awake before sleeping (quicker
    replies; at most half a core spent so, over time); 0: always sleep."""
    enable_monitoring: bool = True
    """Whether heartbeats carry psutil resource metrics."""
    db_path: str = "data/zmqgrid.db"
    """The master's SQLite ledger."""
    durability: str = "normal"
    """Master: "full" fsyncs each turn's commit before anything in it is acknowledged (survives a power cut);
    "normal" syncs at the WAL checkpoints, once a second (a killed process loses nothing; a power cut or OS crash
    may lose the last second). README "What you can rely on"; the default is chosen in docs/benchmarks.md."""
    log_file: str | None = "logs/distribution.log"
    """Rotating log file; null logs to the terminal only."""
    log_level: str = "INFO"
    """One of LOG_LEVELS."""
    python_executable: str = sys.executable
    """Interpreter a worker runs `script` and `python` tasks with."""
    state_dir: str = "state"
    """Worker: where it records the processes of its running tasks (<device_id>@<pid>.procs), so that they are killed
    when the worker dies (by its reaper, or at the next start of the same device id); must be writable."""
    task_cgroups: bool = True
    """Worker (Linux): run each shell or script attempt in a cgroup v2 of its own when the worker may create one;
    false: track its processes by session and by the descendants seen."""
    max_output_bytes: int = 1048576
    """Output kept per stream (stdout, stderr) per attempt; the rest is cut."""
    flood_output_mb_per_s: int = 20
    """Worker: a shell or script task's stream past max_output_bytes is read no faster than this many MiB/s, so
    a task flooding output waits on its pipe instead of taking the CPU from other tasks; 0: as fast as it comes."""
    max_message_bytes: int = 16777216
    """Largest message any socket accepts (ZMQ_MAXMSGSIZE)."""
    workers: int = 2
    """Standalone only: how many local worker processes to start."""
    heartbeat_retention: int = 600
    """Heartbeat samples the master keeps per device."""
    retention_days: int = 30
    """Master: finished tasks (done, failed, timed_out, cancelled, quarantined) whose finish is older than this many
    days are deleted with their attempts and output; 0 keeps them forever."""
    retention_max_tasks: int = 1_000_000
    """Master: most finished tasks kept; beyond it the oldest finished are deleted first; 0: no cap."""
    device_retention_days: float = 7.0
    """Master: a device offline longer than this that holds nothing (no unfinished task, not drained) is removed
    from the device table with its heartbeat samples; 0 keeps every device."""
    insecure: bool = False
    """Master: allow binding a non-loopback address without CURVE, open to anyone who reaches the ports
    (a WARNING at every start); without it such a bind is refused."""
    allowed_kinds: list[str] = field(default_factory=lambda: list(TASK_KINDS))
    """Task kinds a worker runs; the master sends it no other kind, and one that arrives fails as Forbidden."""
    allowed_modules: list[str] = field(default_factory=list)
    """Module prefixes a worker runs `python` tasks from (e.g. myjobs, zmqgrid.samples); empty: any module."""
    max_queued_per_client: int = 1_000_000
    """Most unfinished tasks one client connection may have at the master; a Submit beyond it is refused."""
    python_envs: dict[str, str] = field(default_factory=dict)
    """Worker: its other interpreters, a name to a path ({"py39": "/opt/py39/bin/python"}); a task chooses one with
    --python-env NAME and goes only to workers that have it (docs/architecture.md, "Worker: interpreters per
    worker")."""
    allow_projects: bool = True
    """Worker: whether it runs tasks of pushed projects (fetching and caching their versions); false leaves out its
    `runs projects` tag, so the master sends it none."""
    project_cache_mb: int = 2048
    """Worker: the most MiB of project copies kept in <state_dir>/projects/; least recently used ones go first,
    never one a task of this worker uses."""
    env_keep_days: float = 14.0
    """Worker: a project environment in <state_dir>/envs/ that no worker sharing that folder used for this many days
    is deleted (never one a task holds or runs); 0 keeps every environment."""
    project_keep_versions: int = 10
    """Master: versions kept of each project, newest first, besides those an unfinished task pins; older ones are
    deleted after each push and at start. 0 keeps every version."""
    max_project_mb: int = 200
    """Master: the largest project archive a push may hold, in MiB; a bigger push is refused before it is sent."""
    max_project_files: int = 10_000
    """Master: the most files a project archive may hold."""
    curve: bool = False
    """CURVE encryption and key authentication on the master's three sockets (and for workers and clients)."""
    keys_dir: str = "keys"
    """Where `keys generate` writes certificates and where each process finds its own by role."""
    key_file: str | None = None
    """Master or worker: this process's secret certificate; null: <keys_dir>/master.key_secret or worker.key_secret."""
    client_key_file: str | None = None
    """Client commands: the secret certificate; null: <keys_dir>/admin.key_secret if present, else client.key_secret."""
    master_key: str | None = None
    """Workers and clients: the master's public key, as z85 text or a certificate path; null: <keys_dir>/master.key."""
    authorized_keys_dir: str | None = None
    """Master: public certificates found here at start are accepted (role from their metadata, default worker)."""

    @property
    def router_endpoint(self) -> str:
        """Bind address of the master's ROUTER."""
        return tcp_url(self.host, self.port)

    @property
    def pub_endpoint(self) -> str:
        """Bind address of the master's PUB."""
        return tcp_url(self.host, self.pub_port if self.pub_port is not None else self.port + 1)

    @property
    def heartbeat_endpoint(self) -> str:
        """Bind address of the master's heartbeat PULL."""
        return tcp_url(self.host, self.heartbeat_port if self.heartbeat_port is not None else self.port + 2)

    def to_dict(self) -> dict[str, Any]:
        """Every setting as plain JSON-able data, for `--json` output and logs."""
        return asdict(self)


_TYPES = {f.name: str(f.type) for f in fields(Config)}  # annotation text, e.g. "int | None"
_RANGES = {"port": (1, 65535), "pub_port": (1, 65535), "heartbeat_port": (1, 65535), "workers": (0, 64),
           "concurrent_tasks": (1, 1024), "prefetch": (0, 1024), "max_retry_count": (0, 100), "quarantine_after": (0, 100),
           "task_nice": (0, 19), "max_tasks_per_child": (0, 2**31 - 1), "max_child_memory_mb": (0, 1 << 20),
           "heartbeat_retention": (1, 1_000_000), "max_output_bytes": (1, 2**31 - 1), "flood_output_mb_per_s": (0, 1 << 20),
           "max_message_bytes": (1024, 2**31 - 1), "max_queued_per_client": (1, 2**31 - 1), "max_project_mb": (1, 1 << 20),
           "project_cache_mb": (1, 1 << 24), "max_project_files": (1, 1 << 24),
           "project_keep_versions": (0, 1 << 20), "retention_days": (0, 36500),
           "awake_poll_us": (0, 100_000), "retention_max_tasks": (0, 2**31 - 1)}
_ZERO_MEANS_NEVER = {"device_retention_days", "env_keep_days"}   # float keys where 0 turns the feature off
_FLOAT_RANGES = {"weight": (1e-6, 1e6)}            # as Register.weight takes it (protocol)
MAX_TAGS = 61   # Register.tags takes 64; a worker adds a no-kind: tag per kind it refuses (two at most) and `runs projects`
_CHOICES = {"mode": MODES, "log_level": LOG_LEVELS, "python_pool": PYTHON_POOLS, "durability": DURABILITY}
_PATTERNS = {  # key -> (pattern, what it allows); other strings need only be non-empty
    "host": (r"[A-Za-z0-9_.:*%-]{1,255}", "a host name or IP address such as 127.0.0.1 or 0.0.0.0"),
    "device_id": (ID_PATTERN, "1-64 characters from A-Z a-z 0-9 _ . : -"),
    "device_name": (r"[^\x00-\x1f\x7f-\x9f]{1,128}", "a name of 1-128 characters without control characters"),
    "load_balance_strategy": (r"[A-Za-z_][\w.]*(:[A-Za-z_]\w*)?",
                              "one of " + ", ".join(STRATEGIES) + ", a dotted path pkg.mod:function, "
                              "or an entry point name in the group zmqgrid.strategies")}
_TAG = re.compile(r"[^\s,\x00-\x1f\x7f-\x9f]{1,64}")   # as Register.tags takes them (protocol)
_LIST_ITEMS = {  # list key -> (item check, what is allowed, the same written as text)
    "tags": (_TAG.fullmatch, 'at most 61 non-empty tags without commas or spaces, as ["linux", "gpu"]',
             '"linux,gpu"'),
    "allowed_kinds": (TASK_KINDS.__contains__, f'one or more of {", ".join(TASK_KINDS)}, as ["python"]',
                      '"python,script"'),
    "allowed_modules": (re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*").fullmatch,
                        'module names such as ["myjobs", "zmqgrid.samples"]', '"myjobs,zmqgrid.samples"')}
_ADAPTIVE = re.compile(r"\s*auto\s*", re.IGNORECASE)   # prefetch: sized by the worker (null in a file says the same)
_BOOL_WORDS = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}
_PARSERS: dict[str, Callable[[str], Any]] = {  # how text from the environment or a flag becomes a value
    "int": int, "float": float, "bool": lambda s: _BOOL_WORDS.get(s.lower(), s),
    "list[str]": lambda s: [t.strip() for t in s.split(",") if t.strip()], "dict[str, str]": parse_python_envs}
_URL = re.compile(r"(?:(?:tcp|https?)://)?(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(\d{1,5})/?", re.IGNORECASE)
_URL_FORMS = "tcp://HOST:PORT (http://HOST:PORT and HOST:PORT are accepted too) with a port 1-65535"


def _check(key: str, raw: Any, source: str, text: bool) -> Any:
    """Return `raw` normalised for `key`; `text` means it came as a string from the environment or a flag."""
    kind, value = _TYPES[key].removesuffix(" | None"), raw
    if value is None and kind != _TYPES[key] or key == "prefetch" and _ADAPTIVE.fullmatch(str(value)):
        return None
    if text and isinstance(value, str) and kind in _PARSERS:
        try:
            value = _PARSERS[kind](value.strip())
        except ValueError:
            value = value.strip()  # the type check below rejects it and reports the text as given
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "dict[str, str]":
        return check_python_envs(value, source, _show)
    if key == "master_url":
        match = _URL.fullmatch(value.strip()) if isinstance(value, str) else None
        ok, expected = match is not None and 1 <= int(match[2]) <= 65535, _URL_FORMS
        value = tcp_url(match[1].strip("[]"), int(match[2])) if ok and match else value
    elif kind == "int":
        lo, hi = _RANGES[key]
        ok, expected = number and isinstance(value, int) and lo <= value <= hi, f"an integer {lo}-{hi}"
    elif kind == "float":
        never = key in _ZERO_MEANS_NEVER
        lo, hi = _FLOAT_RANGES.get(key, (0.0, math.inf))
        ok = number and math.isfinite(value) and (lo < value <= hi or never and value == 0)
        expected = "a number of days, 0 for never" if never else \
            f"a number greater than {lo:f} and at most {hi:,.0f}" if key in _FLOAT_RANGES else \
            "a number of seconds greater than 0"
        value = float(value) if ok else value
    elif kind == "bool":
        ok, expected = isinstance(value, bool), "true or false (or 1/0/yes/no)" if text else "true or false"
    elif kind == "list[str]":
        item, expected, as_text = _LIST_ITEMS[key]
        ok = isinstance(value, (list, tuple)) and all(isinstance(t, str) and item(t) for t in value) \
            and (bool(value) or key != "allowed_kinds") and len(value) <= MAX_TAGS   # no kind at all is a mistake
        expected += f" or {as_text}" if text else ""
        value = list(dict.fromkeys(value)) if ok else value  # a repeated tag adds nothing; keep the first
    elif key in _CHOICES:
        if isinstance(value, str):
            value = value.strip().upper() if key == "log_level" else value.strip().lower()
        ok, expected = value in _CHOICES[key], "one of " + ", ".join(_CHOICES[key])
    else:
        pattern, expected = _PATTERNS.get(key, (r".+", "a non-empty string"))
        ok = isinstance(value, str) and re.fullmatch(pattern, value.strip()) is not None
        if ok and key == "load_balance_strategy" and value.strip() not in STRATEGIES and ":" not in value:
            from importlib.metadata import entry_points   # only for a strategy named so: metadata is slow to load
            ok = any(ep.name == value.strip() for ep in entry_points(group="zmqgrid.strategies"))
    if not ok:
        expected += ', or null or "auto" (adaptive)' if key == "prefetch" else ", or null" if kind != _TYPES[key] else ""
        raise ConfigError(f"{source}: {key} = {_show(raw)} is not allowed", f"expected {expected}")
    return value.strip() if isinstance(value, str) else value


def master_host_port(url: str) -> tuple[str, int]:
    """Split a master URL in any accepted form ("tcp://h:p", "http://h:p", "h:p") into (host, port)."""
    match = _URL.fullmatch(_check("master_url", url, "master URL", text=True))
    return match[1].strip("[]"), int(match[2])  # type: ignore[index]


def _show(value: Any) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False, default=repr)
    except (RecursionError, ValueError):   # a value nested almost as deep as json.loads allows
        return "(a value nested too deeply to show)"
    return text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS - 1] + "…"


_SHOWN_CHARS = 200   # of a bad value in an error line: a 500-deep list is told, not printed whole


def _retired(source: str, key: str) -> ConfigError:
    # The value is never shown: an api_key may be a real secret someone pasted in.
    return ConfigError(f'{source}: key "{key}" does nothing', f"remove it ({RETIRED[key]})")


def _unknown(source: str, key: str) -> ConfigError:
    close = difflib.get_close_matches(key, list(_TYPES), n=1)
    hint = f'did you mean "{close[0]}"?' if close else "allowed keys: " + ", ".join(_TYPES)
    return ConfigError(f'{source}: unknown key "{key}"', hint)


def load_config(mode: str | None = None, config_path: str | os.PathLike[str] | None = None,
                flags: dict[str, Any] | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Build the Config: defaults < file (default `config/distribution_<mode>.json`, if present) < env < flags.

    `flags` maps field names to values (None = flag not given). Raises ConfigError naming source, key and value.
    """
    env = os.environ if env is None else env
    flags = {k: v for k, v in {**(flags or {}), "mode": mode}.items() if v is not None}  # `mode` is a flag too
    layers: dict[str, tuple[Any, str, int]] = {}  # key -> (value, source, precedence rank)
    chosen = flags.get("mode") or env.get(ENV_PREFIX + "MODE") or "standalone"
    if config_path is not None:
        label = os.fspath(config_path)
        data = read_config_file(Path(config_path), label)
    else:
        # A bad mode is reported below by its own source; here it only picks which default file to try.
        chosen = chosen.strip().lower() if isinstance(chosen, str) and chosen.strip().lower() in MODES else "standalone"
        path = Path("config") / f"distribution_{chosen}.json"
        label = path.as_posix()
        data = read_config_file(path, label) if path.exists() else {}
    for key, raw in data.items():
        if key in RETIRED:
            raise _retired(label, key)
        if key not in _TYPES:
            raise _unknown(label, key)
        layers[key] = (_check(key, raw, label, text=False), label, 1)
    known = {ENV_PREFIX + k.upper(): k for k in _TYPES}
    for var in sorted(ENV_PREFIX + k.upper() for k in RETIRED):
        if env.get(var, "").strip():
            raise _retired(f"environment {var}", var.removeprefix(ENV_PREFIX).lower())
    for var in sorted(v for v in env if v.startswith(ENV_PREFIX) and v not in known and v not in ENV_ALIASES):
        logger.warning("ignoring unknown environment variable %s", var)
    # The alias goes first so the exact name ZMQGRID_MASTER_URL wins when both are set.
    for var, key in [*ENV_ALIASES.items(), *known.items()]:
        raw = env.get(var)
        # Empty counts as unset: deployment templates often export ZMQGRID_X="" to mean "no value".
        if raw is not None and raw.strip():
            layers[key] = (_check(key, raw, f"environment {var}", text=True), f"environment {var}", 2)
    for key, raw in flags.items():
        if key in RETIRED:
            raise _retired("flags", key)
        if key not in _TYPES:
            raise _unknown("flags", key)
        flag = FLAG_NAMES.get(key, "--" + key.replace("_", "-"))
        layers[key] = (_check(key, raw, flag, text=True), flag, 3)
    config = Config(**{key: value for key, (value, _, _) in layers.items()})
    resolve(config, layers)
    return config
