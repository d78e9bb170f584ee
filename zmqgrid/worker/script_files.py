"""Where a `script` task's file is: the client's text written to a fresh temp folder for the attempt, or, in a
project, the project's own file named by `filename` (never a path out of the copy)."""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

logger = logging.getLogger(__name__)


@contextmanager
def shipped_script(task_id: str, source: str, filename: str | None) -> Iterator[str]:
    """The path of `source` written under its base name (script.py when it has none) in a fresh temp folder,
    removed with it afterwards. OSError names what could not be made or written."""
    name = os.path.basename((filename or "").replace("\\", "/"))
    if name in ("", ".", ".."):
        name = "script.py"
    try:
        folder = tempfile.mkdtemp(prefix="zmqgrid-script-")
    except OSError as e:
        raise OSError(f"cannot create a temp dir: {e}") from None
    try:
        path = os.path.join(folder, name)
        try:
            with open(path, "w", encoding="utf-8", newline="") as f:
                f.write(source)
        except OSError as e:
            raise OSError(f"cannot write {path}: {e}") from None
        yield path
    finally:
        shutil.rmtree(folder, onerror=lambda _, path, exc: logger.warning("task=%s: cannot remove %s: %s", task_id,
                                                                          path, exc[1]))


def project_script(root: str, filename: str | None) -> str | None:
    """The real path of the copy's file `filename`; None when it is no file inside the copy (a link out, a folder,
    nothing)."""
    root = os.path.realpath(root)
    path = os.path.realpath(os.path.join(root, str(filename or "")))
    return path if path.startswith(root + os.sep) and os.path.isfile(path) else None
