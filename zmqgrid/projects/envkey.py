"""What names a project's environment on a worker (zmqgrid.projects.envs): the interpreter it is built for, and
the sha256 of the copy's requirements.txt with every local file it names."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..text import printable

REQUIREMENTS = "requirements.txt"
PROBE_TIMEOUT_S = 60.0
_PATH_SUFFIXES = (".whl", ".zip", ".tar.gz", ".tgz", ".tar.bz2", ".tar")
_INCLUDE_FLAGS = ("-r", "--requirement", "-c", "--constraint")
_SKIPPED_IN_FOLDERS = ("__pycache__", ".git")



@dataclass(frozen=True)
class Interpreter:
    """A Python interpreter as the key of an environment: its path as given, and a tag naming its implementation,
    version and real location (two Pythons 3.11 at two places build two environments)."""

    path: str
    tag: str
    version: str

    @classmethod
    def of(cls, python: str, timeout_s: float = PROBE_TIMEOUT_S) -> Interpreter:
        """Asks `python` (this process itself when it is sys.executable); OSError or RuntimeError when it cannot
        be run."""
        if python == sys.executable:
            return cls(python, _tag(sys.implementation.cache_tag, sys.executable), sys.version.split()[0])
        done = subprocess.run([python, "-E", "-s", "-c", "import sys, json; print(json.dumps([sys.implementation."
                               "cache_tag, sys.version.split()[0], sys.executable]))"],
                              capture_output=True, text=True, timeout=timeout_s, stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            last = done.stderr.strip().splitlines()[-1:] or [""]
            raise RuntimeError(f"{python} exited with code {done.returncode}: {printable(last[0], 200)}")
        cache_tag, version, executable = json.loads(done.stdout)
        return cls(python, _tag(cache_tag, executable or python), version)


def _tag(cache_tag: str | None, executable: str) -> str:
    where = hashlib.sha256(os.path.realpath(executable).encode()).hexdigest()[:8]
    return f"{cache_tag or 'python'}-{where}"



def requirements_key(copy_dir: Path) -> str:
    """16 hex digits of the sha256 of requirements.txt and of every local file it names by a relative path inside
    the copy (a wheel, a source folder, a `-r`/`-c` file): a wheel rebuilt under the same name is a new key."""
    digest = hashlib.sha256()
    root = copy_dir.resolve()
    seen: set[Path] = set()

    def add_file(path: Path) -> None:
        digest.update(b"\0file\0" + path.relative_to(root).as_posix().encode() + b"\0")
        with open(path, "rb") as f:
            while block := f.read(1 << 20):
                digest.update(block)

    def add(path: Path, depth: int) -> None:
        if path in seen:
            return
        seen.add(path)
        if path.is_dir():
            for sub in sorted(path.rglob("*")):
                if sub.is_file() and not any(part in _SKIPPED_IN_FOLDERS for part in sub.relative_to(path).parts):
                    add_file(sub)
            return
        add_file(path)
        if depth == 0 or path.suffix == ".txt" and depth < 8:
            for token in _local_paths(path.read_text(encoding="utf-8", errors="replace")):
                named = _inside(root, path.parent / token)
                if named is not None and named.exists():
                    add(named, depth + 1)

    add(root / REQUIREMENTS, 0)
    return digest.hexdigest()[:16]


def _local_paths(text: str) -> Iterator[str]:
    """The tokens of a requirements file that may name a local file or folder."""
    for line in text.replace("\\\n", " ").splitlines():
        line = line.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        tokens = line.split()
        for i, token in enumerate(tokens):
            if "=" in token and token.split("=", 1)[0] in _INCLUDE_FLAGS:
                yield token.split("=", 1)[1]
            elif i > 0 and tokens[i - 1] in _INCLUDE_FLAGS:
                yield token
            elif not token.startswith("-") and "://" not in token and (
                    token.startswith(".") or "/" in token or "\\" in token or token.endswith(_PATH_SUFFIXES)):
                yield token


def _inside(root: Path, path: Path) -> Path | None:
    resolved = path.resolve()
    return resolved if resolved == root or root in resolved.parents else None
