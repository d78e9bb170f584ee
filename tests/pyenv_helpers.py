"""A real virtualenv made inside a test (`python -m venv --without-pip`: offline, about a second) with a module of
its own, `zgprobe`, that tells where the process that imports it runs; and a folder holding another `zgprobe`, for
a worker's own path, so a test can tell whose module a call imported."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PROBE = '''import os, sys

WHOSE = {whose!r}


def where():
    return {{"whose": WHOSE, "executable": sys.executable, "prefix": sys.prefix, "cwd": os.getcwd()}}
'''


def make_venv(folder: Path, whose: str = "venv") -> Path:
    """A virtualenv at `folder` whose site-packages holds zgprobe (WHOSE = `whose`); returns its interpreter."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True, timeout=120,
                   capture_output=True)
    python = folder / "bin" / "python"
    site = subprocess.run([str(python), "-E", "-s", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True, timeout=60).stdout.strip()
    (Path(site) / "zgprobe.py").write_text(PROBE.format(whose=whose))
    return python


def worker_probe(folder: Path) -> Path:
    """A folder with a zgprobe whose WHOSE is "worker": put on a worker's PYTHONPATH."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "zgprobe.py").write_text(PROBE.format(whose="worker"))
    return folder


def version_of(python: Path) -> str:
    return subprocess.run([str(python), "-c", "import platform; print(platform.python_version())"], check=True,
                          capture_output=True, text=True, timeout=60).stdout.strip()
