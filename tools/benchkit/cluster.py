"""A real master and real workers as child processes on 127.0.0.1, for a measurement.

It is the test suite's own harness (tests/helpers.py's Harness: the same command lines, readiness check and stop by
PID) with a measurement's settings instead of the tests' fast timings: the default config, nothing of the caller's
ZMQGRID_* variables, ZMQGRID_PREFETCH, quieter logs, the master optionally under cProfile, its ports chosen by
the kernel (processes.free_port_block) and each process in a session of its own."""
from __future__ import annotations

import shlex
import subprocess
import sys
import time
from pathlib import Path

from tests.helpers import REPO, Harness
from zmqgrid.client import Client

from .processes import adopt, clean_env, forget, free_port_block, tail


class Cluster:
    """A master and `workers` workers named bench-1, bench-2, ... (`--concurrency`, ZMQGRID_PREFETCH=`prefetch`),
    running the zmqgrid of `repo` (this checkout unless told).

    `env` is the processes' environment: add settings to it before start(). `commands` holds how each process was
    started, for the report."""

    def __init__(self, tmp: Path, *, concurrency: int = 4, prefetch: int | None = 12, workers: int = 2,
                 profile_master: Path | None = None, log_level: str | None = "WARNING", repo: Path = REPO) -> None:
        self.tmp = tmp
        # Sessions of their own, as every process a tool starts: on a shared machine the scheduler's autogroups then
        # give the master and each worker a share of the CPU, not one share for the whole cluster and its client.
        self.harness = Harness(tmp, port=free_port_block(), own_sessions=True)
        self.harness.env = clean_env(repo, **({} if prefetch is None else {"ZMQGRID_PREFETCH": str(prefetch)}))
        self.concurrency, self.prefetch, self.n_workers = concurrency, prefetch, workers
        self.profile_master = profile_master
        self.log_args = ("--log-level", log_level) if log_level else ()
        self.commands: dict[str, str] = {}

    @property
    def env(self) -> dict[str, str]:
        return self.harness.env

    @property
    def port(self) -> int:
        return self.harness.port

    @property
    def url(self) -> str:
        return self.harness.url

    @property
    def db(self) -> Path:
        return self.harness.db

    @property
    def master(self) -> subprocess.Popen | None:
        return self.harness.master

    @property
    def workers(self) -> dict[str, subprocess.Popen]:
        return self.harness.workers

    def start(self, timeout_s: float = 60.0) -> None:
        """The master (until it answers), then the workers (until all are online)."""
        python: tuple[str, ...] = (sys.executable,)
        if self.profile_master is not None:
            python = (sys.executable, "-m", "cProfile", "-o", str(self.profile_master))
        adopt(self.harness.start_master(*self.log_args, python=python))
        self.commands["master"] = shlex.join(self.master.args)
        for j in range(1, self.n_workers + 1):
            self.start_worker(f"bench-{j}")
        deadline = time.monotonic() + timeout_s
        with Client(self.url, timeout_s=5) as c:
            while True:
                online = {d["device_id"] for d in c.devices() if d["state"] == "online"}
                if set(self.workers) <= online:
                    break
                for device, proc in self.workers.items():
                    if proc.poll() is not None:
                        raise RuntimeError(f"worker {device} exited with {proc.returncode}: "
                                           f"{tail(self.tmp / f'{device}.out')}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"workers not online within {timeout_s:g}s (online: {sorted(online)})")
                time.sleep(0.1)

    def start_worker(self, device: str) -> subprocess.Popen:
        """Start (or start again, after a kill) the worker `device`; it is not waited for."""
        proc = adopt(self.harness.start_worker(device, *self.log_args, concurrency=self.concurrency))
        prefix = "" if self.prefetch is None else f"ZMQGRID_PREFETCH={self.prefetch} "
        self.commands[device] = prefix + shlex.join(proc.args)
        return proc

    def pids(self) -> dict[str, int]:
        out = {"master": self.master.pid} if self.master else {}
        out.update({d: p.pid for d, p in self.workers.items()})
        return out

    def alive(self) -> None:
        for name, proc in [("master", self.master), *self.workers.items()]:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode} during the benchmark")

    def stop(self) -> None:
        self.harness.stop()
        for proc in [*self.workers.values(), self.master]:
            if proc is not None:
                forget(proc)
