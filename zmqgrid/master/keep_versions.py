"""Which versions of a project the master keeps (docs/architecture.md, Projects, "The master's store"): of each
name, the newest `project_keep_versions` pushes and every older version an unfinished task pins. `Projects` asks
after each push's commit and once at start, and deletes the others' rows in a turn's commit, then their archives."""
from __future__ import annotations

from collections import Counter
from typing import Callable

AT_START = -1   # a commit number no turn has: a name marked with it is due at the first look


class KeepVersions:
    """The names due for a look, and which of a name's rows go. `keep` 0 keeps every version."""

    def __init__(self, keep: int, pinned: Callable[[], Counter]) -> None:
        self.keep = keep
        self.pinned = pinned              # NAME@VERSION -> unfinished tasks pinning it (a walk: asked when a name is due)
        self.due: dict[str, int] = {}     # name -> the commit its last push was staged for

    def pushed(self, name: str, commit: int) -> None:
        """A push of `name` is staged for `commit`: its older versions are looked at once that commit is over
        (written, or failed: the ledger then says what there is)."""
        if self.keep:
            self.due[name] = commit

    def take_due(self, commit_now: int) -> list[str]:
        """The names whose push's commit is over; they are not due again until the next push."""
        names = [name for name, commit in self.due.items() if commit != commit_now]
        for name in names:
            del self.due[name]
        return names

    def surplus(self, name: str, rows: list[dict], pins: Counter) -> list[dict]:
        """Of `rows` (one name's, oldest push first), those past the newest `keep` that no unfinished task pins."""
        if not self.keep or len(rows) <= self.keep:
            return []
        return [row for row in rows[:-self.keep] if not pins[f"{name}@{row['version']}"]]
