"""Fixed cluster data for the dashboard tests: what a master answers, frozen at one moment."""
from __future__ import annotations

from zmqgrid.tui.source import ClusterSnapshot, StaticSource, TaskOutput

NOW = 1_790_000_000.0   # the frozen clock: every time shown is relative to it
URL = "tcp://10.0.0.5:8000"


def device(device_id: str, state: str = "online", cpu: float = 12.0, mem: float = 40.0, disk: float = 55.0,
           running: int = 1, assigned: int = 0, tags: tuple = ("linux",), seen: float | None = 0.4,
           last_seen: float | None = None) -> dict:
    """A devices row as the master lists it; `seen`/`last_seen` are seconds before NOW."""
    return {"device_id": device_id, "name": device_id, "hostname": f"host-{device_id}", "state": state,
            "os": "Linux 6.8 x86_64", "python_version": "3.11.7", "python_executable": "/usr/bin/python3",
            "tags": list(tags), "concurrency": 3, "running": running, "assigned": assigned,
            "in_flight": running + assigned, "seconds_since_heartbeat": seen, "credit": 0 if state == "offline" else 2,
            "pending_commands": 0,
            "last_seen_at": NOW - (last_seen if last_seen is not None else seen or 0.0), "pid": 4242,
            "version": "0.1.0", "registered_at": NOW - 7200,
            "metrics": {"cpu_percent": cpu, "memory_percent": mem, "disk_percent": disk}}


def task(task_id: str, state: str, name: str, device_id: str | None = "crawler-01", attempt: int = 1,
         exit_code: int | None = None, started: float | None = -30.0, took: float | None = 12.5,
         kind: str = "shell", tags: tuple = ()) -> dict:
    started_at = None if started is None else NOW + started
    finished_at = None if started_at is None or took is None else started_at + took
    return {"id": task_id, "kind": kind, "name": name, "state": state, "device_id": device_id, "attempt": attempt,
            "retries": 3, "exit_code": exit_code, "created_at": NOW - 60, "started_at": started_at,
            "finished_at": finished_at, "tags": list(tags), "priority": 0, "timeout_s": 3600.0, "error": None,
            "value": None, "reason": None, "deaths": 0, "device_req": None}


TASKS = [
    task("a1b2c3d4e5f60718", "running", "python crawl.py --site a", took=None),
    task("b2c3d4e5f6071829", "queued", "python crawl.py --site b", device_id=None, attempt=0, started=None),
    task("c3d4e5f60718293a", "done", "echo hello", device_id="crawler-02", exit_code=0),
    task("d4e5f60718293a4b", "failed", "exit 3", attempt=4, exit_code=3, took=0.2),
    task("e5f60718293a4b5c", "done", "zmqgrid.samples:fib", kind="python", exit_code=None, tags=("gpu",)),
]

DEVICES = [device("crawler-01", cpu=63.0, mem=41.0, running=3, assigned=2),
           device("crawler-02", state="draining", cpu=8.0, mem=22.0, tags=("linux", "gpu")),
           # Offline since before the master started: no seconds_since_heartbeat from an older master, its ledger's
           # last_seen_at, and the last metrics it sent (CPU 100 as it died), which are not live.
           device("old-box", state="offline", cpu=100.0, mem=97.0, running=0, tags=(), seen=None, last_seen=812.0)]

SCHEDULES = [
    {"name": "nightly-report", "cron": "0 6 * * 1-5", "missed": "run_once", "state": "active", "next_at": NOW + 3600,
     "last_fired_at": NOW - 82800, "fired_count": 41, "created_at": NOW - 86400 * 60, "task": "python report.py",
     "spec": {"kind": "shell", "command": "python report.py", "name": "python report.py", "tags": ["linux"]}},
    {"name": "ping", "cron": "*/5 * * * *", "missed": "skip", "state": "paused", "next_at": None,
     "last_fired_at": NOW - 900, "fired_count": 3012, "created_at": NOW - 86400 * 20,
     "task": "curl -s https://example.com", "spec": {"kind": "shell", "command": "curl -s https://example.com",
                                                     "name": "curl -s https://example.com"}},
]

PROJECTS = [{"name": "myspider", "version": "3f9a1c2b7d0e" + "5" * 52, "size": 3_565_158, "files": 42, "versions": 2,
             "pushed_at": NOW - 7200, "pushed_by": "admin-3f9a1c"}]
VERSIONS = {"myspider": [dict(PROJECTS[0], versions=None),
                         {"name": "myspider", "version": "0a1b2c3d4e5f" + "6" * 52, "size": 812_000, "files": 40,
                          "pushed_at": NOW - 86400, "pushed_by": "admin-3f9a1c"}]}


def status(done: int, uptime_s: float = 3725.0) -> dict:
    return {"incarnation": "29462d22b07d", "uptime_s": uptime_s, "router": URL, "stuck_tasks": 0,
            "devices": {"online": 1, "draining": 1, "offline": 1, "pending": 0},
            "tasks": {"queued": 1, "assigned": 2, "running": 4, "done": done, "failed": 1, "timed_out": 0,
                      "cancelled": 0, "quarantined": 0}, "counters": {}, "bad_messages": 0, "pending_keys": 2}


def snapshots(count: int = 12) -> list[ClusterSnapshot]:
    """`count` snapshots a second apart whose done counts grow unevenly, so the sparkline has a shape."""
    done, out = 100, []
    steps = [0, 2, 5, 9, 4, 1, 0, 3, 8, 12, 6, 2, 7, 10, 4]
    for i in range(count):
        done += steps[i % len(steps)]
        at = NOW - (count - 1 - i)
        cpu = [10.0 + 7 * (i % 9), 8.0 + (i % 3), 100.0]   # old-box: its last figure, not a live one
        devices = [dict(d, metrics=dict(d["metrics"], cpu_percent=c)) for d, c in zip(DEVICES, cpu)]
        out.append(ClusterSnapshot(status(done, 3725.0 - (count - 1 - i)), devices, TASKS, reachable=True, at=at,
                                   schedules=SCHEDULES, projects=PROJECTS))
    return out


def unreachable(at: float = NOW + 12) -> ClusterSnapshot:
    return ClusterSnapshot({}, [], [], reachable=False, at=at,
                           error=f"the master at {URL} did not answer within 2s")


DETAIL = dict(TASKS[3], spec={"kind": "shell", "command": "exit 3", "name": "exit 3"},
              error={"type": "ExitCode", "message": "exited with code 3", "traceback": ""},
              reason="attempt 4 failed",
              attempts=[{"attempt": n, "device_id": "crawler-01", "state": "failed", "assigned_at": NOW - 40 + n,
                         "started_at": NOW - 40 + n, "finished_at": NOW - 39.8 + n, "exit_code": 3,
                         "error": {"type": "ExitCode", "message": "exited with code 3"}, "stale": 0}
                        for n in range(1, 5)])

OUTPUT = TaskOutput("d4e5f60718293a4b", 4, "failed",
                    stdout="".join(f"fetching page {n}\n" for n in range(1, 41)) + "giving up\n",
                    stderr="warning: robots.txt disallows /private\nerror: too many redirects\n")


def static_source(count: int = 12, then_unreachable: bool = False) -> StaticSource:
    snaps = snapshots(count) + ([unreachable()] if then_unreachable else [])
    return StaticSource(snaps, tasks={DETAIL["id"]: DETAIL}, outputs={OUTPUT.task_id: OUTPUT}, versions=VERSIONS,
                        master_url=URL, now=NOW)
