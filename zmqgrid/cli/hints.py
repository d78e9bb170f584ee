"""What to run next, for the errors whose type says it: the library names what went wrong (and the data a command
needs), the command line names its own command. One line: `error: <what>; <what to do>`."""
from __future__ import annotations

import functools
import shlex
from typing import Any, Callable

from ..errors import AlertNotFound, MasterUnavailable, ScheduleNotFound, TaskNotFound, ZmqgridError

PROG = "python main.py"


@functools.cache
def _hints() -> tuple[tuple[type[ZmqgridError], Callable[[Any], str | None]], ...]:
    # Imported on the first error only: the key store and maintenance modules load sqlite_utils, which every
    # command that succeeds (a worker's start among them) would otherwise pay for.
    from ..security import CertificateMissing
    from ..store.key_store import KeyGone, KeyHeld
    from ..store.maintenance import BackupFailed
    return (
        (TaskNotFound, lambda e: f"list tasks with: {PROG} tasks list"),
        (ScheduleNotFound, lambda e: f"list them with: {PROG} schedules list"),
        (AlertNotFound, lambda e: f"list them with: {PROG} alerts list"),
        (BackupFailed, lambda e: f"check the ledger with: {PROG} db check"),
        (CertificateMissing, lambda e: f"generate one: {PROG} keys generate --role {e.role}" if e.role else None),
        (KeyHeld, lambda e: f"{e.hint}: {PROG} keys revoke {shlex.quote(e.holder)}"),
        (KeyGone, lambda e: f"run {PROG} keys list and try again"),
        (MasterUnavailable, lambda e: f"{e.hint}; on the master's machine: {PROG} {e.command}" if e.command else None),
    )


def hint(error: ZmqgridError) -> str:
    """The command that helps, when the error's type names one; else the library's own hint."""
    for kind, render in _hints():
        if isinstance(error, kind):
            return render(error) or error.hint
    return error.hint


def line(error: ZmqgridError) -> str:
    """The error as the command line prints it, on one line whatever the cause said."""
    what_to_do = hint(error)
    return (f"{error.message}; {what_to_do}" if what_to_do else error.message).replace("\n", " ")
