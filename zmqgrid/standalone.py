"""Standalone mode: a master in this process plus N local worker processes on loopback, same code and sockets."""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from .config import Config
from .master.master import Master
from .security import generate, master_curve, secured
from .worker.proctree import kill_tree

logger = logging.getLogger(__name__)


class Standalone:
    """Start with `start()`, stop with `stop()`; `stop()` ends the workers (by PID) before the master."""

    def __init__(self, config: Config, terminal_log_level: str | None = None, shares_process: bool = True) -> None:
        """`terminal_log_level`: the workers log to the terminal only from this level up (the rest to their files).
        `shares_process`: something busy (the dashboard, the demo) runs in this process beside the master thread."""
        self.config = config
        self.shares_process = shares_process
        self.terminal_log_level = terminal_log_level
        self.master: Master | None = None
        self.thread: threading.Thread | None = None
        self.workers: list[subprocess.Popen] = []
        self.local_keys = Path(config.keys_dir) / "standalone"

    def device_id(self, index: int) -> str:
        return f"{self.config.device_id or 'local'}-{index}"

    def ensure_keys(self) -> None:
        """With `curve` on, what a secured standalone needs and the user has not made yet: the master's keys and
        an admin key in keys_dir (for this process's own client: demo, dashboard), one worker key per local
        worker in keys_dir/standalone (a key speaks for one device); the local ones are accepted at start."""
        keys = Path(self.config.keys_dir)
        wanted = [("master", "master", keys)]
        if self.config.client_key_file is None:
            wanted.append(("admin", "admin", keys))
        wanted += [("worker", self.device_id(i), self.local_keys) for i in range(1, self.config.workers + 1)]
        for role, name, folder in wanted:
            if not (folder / f"{name}.key_secret").exists() and not (role == "master" and self.config.key_file):
                made = generate(role, name, folder)
                logger.info("standalone: generated the %s key %s", role, made["secret_file"])
        admin = keys / "admin.key"
        if self.config.client_key_file is None and admin.exists():
            (self.local_keys / "admin.key").write_bytes(admin.read_bytes())

    def worker_command(self, index: int) -> list[str]:
        c = self.config
        device_id = self.device_id(index)
        cmd = [sys.executable, "-m", "zmqgrid", "distribute", "--mode", "worker", "--master", c.master_url,
               "--device-id", device_id, "--concurrency", str(c.concurrent_tasks), "--parent-pid", str(os.getpid()),
               "--log-level", c.log_level]
        if c.log_file:
            log = Path(c.log_file)
            cmd += ["--log-file", str(log.with_name(f"{log.stem}-{device_id}{log.suffix}"))]
            if self.terminal_log_level:
                cmd += ["--terminal-log-level", self.terminal_log_level]
        for tag in c.tags:
            cmd += ["--tag", tag]
        for flag, values in (("--allow-kind", c.allowed_kinds), ("--allow-module", c.allowed_modules)):
            for value in values:
                cmd += [flag, value]
        if secured(c):
            cmd += ["--curve", "--keys-dir", c.keys_dir]
        return cmd

    def start(self) -> None:
        if secured(self.config):
            self.ensure_keys()
        # Polling awake (awake_poll_us) only when the master thread has the process to itself: beside the dashboard
        # or the demo it would hold the GIL they need (docs/benchmarks.md, "Standalone")
        self.master = Master(dataclasses.replace(self.config, awake_poll_us=0) if self.shares_process else self.config)
        if self.master.keyring is not None:
            self.master.keyring.authorize(self.local_keys, time.time())
            self.master.store.commit()
        self.thread = threading.Thread(target=self.master.serve, name="master", daemon=True)
        self.thread.start()
        self.master.ready.wait(10)
        # The workers import the zmqgrid this process runs, wherever it is started from, installed or not.
        package_root = str(Path(__file__).resolve().parents[1])
        user_path = os.environ.get("PYTHONPATH", "")
        python_path = os.pathsep.join(p for p in (package_root, user_path) if p)
        # zmqgrid/__main__.py gives the tasks back the user's own PYTHONPATH.
        env = dict(os.environ, PYTHONPATH=python_path, ZMQGRID_USER_PYTHONPATH=user_path,
                   ZMQGRID_HEARTBEAT_INTERVAL=str(self.config.heartbeat_interval),
                   ZMQGRID_DEVICE_TIMEOUT=str(self.config.device_timeout),
                   ZMQGRID_PYTHON_EXECUTABLE=self.config.python_executable,
                   ZMQGRID_TASK_TIMEOUT=str(self.config.task_timeout),
                   ZMQGRID_PREFETCH="auto" if self.config.prefetch is None else str(self.config.prefetch),
                   ZMQGRID_PYTHON_POOL=self.config.python_pool, ZMQGRID_PYTHON_ENVS=json.dumps(self.config.python_envs))
        curve = master_curve(self.config)
        if curve is not None:
            env["ZMQGRID_MASTER_KEY"] = curve.public.decode()
        for i in range(1, self.config.workers + 1):
            if curve is not None:
                env["ZMQGRID_KEY_FILE"] = str(self.local_keys / f"{self.device_id(i)}.key_secret")
            # exec, not fork: the master's ZeroMQ context must not cross into a child. Own session, so the
            # terminal's Ctrl-C reaches only us and we stop the workers in order.
            self.workers.append(subprocess.Popen(self.worker_command(i), env=env, start_new_session=True,
                                                 stdin=subprocess.DEVNULL))
        logger.info("standalone: master on %s, %d worker processes %s", self.config.master_url, len(self.workers),
                    [p.pid for p in self.workers])

    def stop(self, grace_s: float = 8.0) -> None:
        for proc in self.workers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for proc in self.workers:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                logger.warning("worker pid=%d did not stop in %.0fs; killing its process tree", proc.pid, grace_s)
                kill_tree(proc.pid, grace_s=0, own_session=True)   # its grace is spent; started in a session of its own
                proc.wait(5)
        if self.master is not None:
            self.master.stop()
        if self.thread is not None:
            self.thread.join(10)

    def alive_workers(self) -> int:
        return sum(1 for p in self.workers if p.poll() is None)
