"""The master's in-memory records of unfinished tasks and of devices, and what a task requires of a worker."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from ..model import TASK_KINDS, DeviceState, TaskState
from ..projects.messages import RUNS_PROJECTS_TAG
from ..protocol import NO_KIND_TAG, packb
from ..model import PYTHON_ENV_TAG
from .retrying import RetryRule

# What a worker gets of a spec, besides its id: routing, limits and retries are the master's business. (The name
# is only shown: workers and tools that speak the protocol tell tasks apart by it.)
WORKER_KEYS = ("kind", "name", "command", "cwd", "env", "source", "filename", "args", "function", "kwargs",
               "project", "python_env")
# While at most this many tasks are queued, a task's wire part stays a dict (nothing to unpack at dispatch: the
# usual queue goes out within a turn or two); a task submitted behind more keeps it packed (docs/architecture.md,
# "Memory per queued task").
COMPACT_ABOVE = 10_000
# A wire part bigger than this, packed, is not kept in memory: dispatch reads the task's spec back from the ledger.
# So a queued task holds at most this much of its payload (arguments, env, script) in the master, whatever the
# task spec limits allow (docs/architecture.md, "Memory per queued task").
WIRE_IN_MEMORY_MAX = 4096


class Requirement(NamedTuple):
    """What a worker must be to take a task: a tuple, so equal requirements hash alike and key one parking lot."""
    kind: str
    device: str | None          # the one device that may take it, if named
    tags: tuple                 # tags the worker must all have, sorted (a tuple: a third of a frozenset's size)
    refused_by: str             # the tag of a worker whose allowed_kinds leave this kind out
    plain: bool                 # no device and no tag: any worker that runs the kind takes it
    project: str | None = None  # the NAME@VERSION its tasks pin; `tags` then holds RUNS_PROJECTS_TAG

    def met_by(self, device: DeviceEntry) -> bool:
        if self.device and self.device != device.device_id:
            return False
        if device.tags and self.refused_by in device.tags:
            return False
        return not self.tags or device.tags.issuperset(self.tags)


PLAIN = {kind: Requirement(kind, None, (), NO_KIND_TAG + kind, True) for kind in TASK_KINDS}


def requirement(kind: str, device: str | None, tags: list | tuple | frozenset | None,
                project: str | None = None, python_env: str | None = None) -> Requirement:
    if not device and not tags and not project and not python_env:
        return PLAIN[kind]
    needed = {*(tags or ()), RUNS_PROJECTS_TAG} if project else set(tags or ())
    if python_env:   # the worker's interpreter it runs with: only a worker whose python_envs has it advertises this
        needed.add(PYTHON_ENV_TAG + python_env)
    return Requirement(kind, device or None, tuple(sorted(needed)), NO_KIND_TAG + kind, False, project or None)


class Requirements:
    """Equal requirements shared by the tasks that ask them (a tag set costs 200 bytes or more): most tasks ask one
    of a few. Bounded, so requirements nobody else asks cannot grow it: past `most`, it starts afresh (the tasks
    keep theirs, only the sharing is lost)."""

    def __init__(self, most: int = 10_000) -> None:
        self.most = most
        self.known: dict[tuple, Requirement] = {}

    def get(self, kind: str, device: str | None, tags: list | tuple | None, project: str | None = None,
            python_env: str | None = None) -> Requirement:
        if not device and not tags and not project and not python_env:
            return PLAIN[kind]
        key = (kind, device, project, python_env, *(tags or ()))
        need = self.known.get(key)
        if need is None:
            if len(self.known) >= self.most:
                self.known = {}
            need = self.known[key] = requirement(kind, device, tags, project, python_env)
        return need


def wire_part(spec: dict, compact: bool) -> dict | bytes:
    """The keys of `spec` a worker runs it by (set ones only), as a dict, or packed when `compact`. Not its id:
    the entry holds that already, and dispatch adds it."""
    get = spec.get   # eleven look-ups, not a walk over the spec's twenty keys
    wire = {k: v for k in WORKER_KEYS if (v := get(k)) is not None}
    return packb(wire) if compact else wire


def kept(wire: dict, compact: bool) -> dict | bytes | None:
    """What an entry keeps of a wire part that may be big: None past WIRE_IN_MEMORY_MAX packed (read back from
    the ledger at dispatch), else the dict, or packed when `compact`."""
    packed = packb(wire)
    if len(packed) > WIRE_IN_MEMORY_MAX:
        return None
    return packed if compact else wire


@dataclass(slots=True)
class TaskEntry:
    """A task that is not final yet (queued, assigned or running). Final tasks live only in the ledger, which also
    holds the full spec: only what dispatch and the task's life need is kept here."""
    id: str
    wire: dict | bytes | None     # what a worker gets of the spec but its id (see wire_part): built once; None
                                  # when too big to keep (see kept): read from the ledger at dispatch
    need: Requirement
    priority: int
    retries: int
    timeout_s: float | None
    limit_key: str | None = None
    retry_backoff: float | None = None   # the task's own base backoff, if it set one
    retry_rule: RetryRule | None = None  # its retry_on / no_retry_on, shared (retrying.RetryRules); most have none
    attempt: int = 0
    state: str = TaskState.QUEUED
    device_id: str | None = None
    seq: int = 0                  # queue order: set each time it is queued (a retry goes to the back)
    gen: int = 0                  # bumped on every push into the queue; older queue items go stale
    # Tuples, not a set and a list: most tasks have no death and at most one client waiting, and a tuple of
    # bytes is dropped from the garbage collector's walks (which visit every container the master holds).
    notify: tuple = ()            # identities of the clients to tell when it finishes
    client: bytes = b""           # the submitting client's identity (counted against max_queued_per_client)
    cancel_requested: bool = False
    assigned_mono: float = 0.0    # when dispatched (monotonic): the lease is judged only after a grace period
    assigned_at: float | None = None   # wall-clock times of the current attempt, for its row when it ends
    started_at: float | None = None
    running_saved: bool = False   # the ledger already says running (written at a heartbeat, not per start)
    misses: int = 0               # consecutive heartbeats of its worker that did not name it
    deaths: int = 0               # times its worker died while running it
    evidence: tuple | list = ()   # its deaths, as recorded in the ledger
    streamed: dict | None = None  # stream -> characters of live output stored for this attempt (made at the first)
    name: str | None = None       # the task's name, set at dispatch (the wire part may be packed): for tallies

    @classmethod
    def from_spec(cls, spec: dict, needs: Requirements, retries: int, timeout_s: float | None, compact: bool = False,
                  **state: object) -> TaskEntry:
        """For a recovered or re-opened task (submit builds its entries inline: it runs for every task)."""
        need = needs.get(spec["kind"], spec.get("device"), spec.get("tags"), spec.get("project"), spec.get("python_env"))
        return cls(spec["id"], kept(wire_part(spec, False), compact), need, spec.get("priority") or 0, retries,
                   timeout_s, spec.get("limit_key"), spec.get("retry_backoff"), **state)


@dataclass(slots=True)
class DeviceEntry:
    device_id: str
    identity: bytes
    state: str = DeviceState.ONLINE         # online | draining | offline
    shutdown: bool = False        # drain, then the worker exits
    registered: bool = False      # registered with this incarnation: only then does it get tasks
    leaving: bool = False         # the worker said it is stopping: its credit stays 0 until it registers again
    credit: int = 0
    concurrency: int = 1
    weight: float = 1.0
    tags: frozenset = frozenset()
    last_seen: float = 0.0        # master's monotonic clock
    inflight: set = field(default_factory=set)
    info: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    heartbeats: int = 0
    beat_mono: float = 0.0        # when its previous heartbeat was handled (master's monotonic clock)
