"""One installer step of an environment's build (uv or venv + pip), bounded in time, its process tree killed
when it overruns, and recorded while it runs so that a worker killed mid-build has it ended at its next start;
and the installer's last lines, as a failed build reports them."""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sysconfig
import time
from collections.abc import Mapping
from pathlib import Path

import psutil

from ..text import printable
from ..worker.proctree import kill_tree
from .envfiles import POSIX, read_json, write_atomic

logger = logging.getLogger(__name__)

INSTALLER_RECORD = "installer.json"
TAIL_LINES = 20
TAIL_LINE_CHARS = 300
TAIL_READ_BYTES = 64 * 1024
KILL_GRACE_S = 2.0

# A user:password in an index URL (`--index-url https://u:p@host/simple` in requirements.txt or pip's messages).
_URL_CREDENTIALS = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@]+@")



def find_uv() -> str | None:
    """The uv executable: on PATH, else beside this interpreter (`pip install uv` into the worker's own
    environment puts it there without touching PATH)."""
    found = shutil.which("uv")
    if found:
        return found
    beside = shutil.which("uv", path=sysconfig.get_path("scripts"))
    return beside



def tail_of(log: Path) -> str:
    """The installer's last lines: at most TAIL_LINES non-empty ones of the log's last 64 KiB, each one printable
    line of at most TAIL_LINE_CHARS, credentials in URLs hidden."""
    try:
        with open(log, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - TAIL_READ_BYTES))
            data = f.read()
    except OSError:
        return ""
    lines = [line for line in data.decode("utf-8", errors="replace").splitlines() if line.strip()]
    return "\n".join(printable(_URL_CREDENTIALS.sub(r"\1****@", line.rstrip()), TAIL_LINE_CHARS)
                     for line in lines[-TAIL_LINES:])


class StepFailed(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

# ---- the pieces -------------------------------------------------------------------------------------------------

def installer_environ(base: Mapping[str, str]) -> dict[str, str]:
    env = dict(base)
    for name in ("VIRTUAL_ENV", "PYTHONHOME", "CONDA_PREFIX"):
        env.pop(name, None)   # the installers would take them for the environment to install into
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env["UV_PYTHON_DOWNLOADS"] = "never"   # uv venv uses the interpreter it is given, never one it fetches
    env.setdefault("PYTHONIOENCODING", "utf-8")
    return env


def run_step(what: str, argv: list[str], cwd: Path, env: dict[str, str], out: object, deadline: float,
         timeout_s: float, record: Path) -> None:
    """Run one installer step with its output into `out`; StepFailed when it fails or the deadline passes (its
    whole process tree killed first: pip's build backends and uv's workers are its children). While it runs,
    `record` names it (pid and start time), so a builder after a killed worker ends what that worker left."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise StepFailed(f"building the environment took longer than its {timeout_s:.0f} s ({what} not started)")
    try:
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=POSIX,
                                creationflags=0 if POSIX else subprocess.CREATE_NEW_PROCESS_GROUP)
    except OSError as e:
        raise StepFailed(f"{what} could not start: {e}") from None
    try:
        try:
            write_atomic(record, json.dumps({"pid": proc.pid, "started": psutil.Process(proc.pid).create_time()}))
        except psutil.NoSuchProcess:
            pass   # it ended already
        code = proc.wait(timeout=left)
    except subprocess.TimeoutExpired:
        kill_tree(proc.pid, grace_s=KILL_GRACE_S, own_session=POSIX)
        proc.wait()
        raise StepFailed(f"building the environment took longer than its {timeout_s:.0f} s; {what} was killed") \
            from None
    except BaseException:
        kill_tree(proc.pid, grace_s=KILL_GRACE_S, own_session=POSIX)
        proc.wait()
        raise
    finally:
        record.unlink(missing_ok=True)
    if code != 0:
        raise StepFailed(f"{what} exited with code {code}")


def end_leftover_installer(folder: Path) -> None:
    """Kill the installer a builder killed mid-way left running (its record names a process that still runs with
    the same start time: a reused pid is left alone), so it writes nothing more into its half build."""
    record = read_json(folder / INSTALLER_RECORD)
    if record is None:
        return
    try:
        proc = psutil.Process(int(record["pid"]))
        if abs(proc.create_time() - float(record["started"])) < 0.01:
            logger.warning("ending installer pid=%d left by a builder of %s that did not finish", proc.pid, folder.name)
            kill_tree(proc.pid, grace_s=KILL_GRACE_S, own_session=POSIX)
    except (psutil.Error, KeyError, TypeError, ValueError):
        pass   # gone, or not ours to signal
    (folder / INSTALLER_RECORD).unlink(missing_ok=True)
