"""The master's in-memory records of unfinished tasks and of devices."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class TaskEntry:
    """A task that is not final yet (queued, assigned or running). Final tasks live only in the ledger."""
    id: str
    spec: dict
    priority: int
    retries: int
    timeout_s: float | None
    attempt: int = 0
    state: str = "queued"
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
    wire: dict | None = None      # the spec as sent to workers (see Cluster.wire_spec)
    streamed: dict = field(default_factory=dict)   # stream -> characters of live output stored for this attempt


@dataclass(slots=True)
class DeviceEntry:
    device_id: str
    identity: bytes
    state: str = "online"         # online | draining | offline
    shutdown: bool = False        # drain, then the worker exits
    registered: bool = False      # registered with this incarnation: only then does it get tasks
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
