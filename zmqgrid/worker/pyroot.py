"""In a python pool child: a call of a project runs with its copy first on `sys.path` and the copy as the working
directory; the path and the folder are put back after the call (docs/architecture.md, Projects, "Running"). The
child is one of the copy's environment's interpreter, so the environment's packages are on its path already (PyPools).
The copy's modules stay imported while the next calls are of the same copy; a call of another copy, or of none,
first drops them from `sys.modules`, so a version 2 call never runs a module version 1 left there."""
from __future__ import annotations

import importlib
import os
import sys
from typing import Any


class CallRoot:
    """`enter(root, cache)` before a call, `leave(root)` after it; `cache` is the child's function -> callable."""

    def __init__(self) -> None:
        self.current: str | None = None   # the copy whose modules this child holds
        self.saved: list[str] = []        # sys.path as it was before the call
        self.home = os.getcwd()

    def enter(self, root: str | None, cache: dict[str, Any]) -> None:
        if root != self.current:
            if self.current is not None:
                _forget_modules(self.current)
            cache.clear()   # a function's name resolves to another module in another copy
            importlib.invalidate_caches()
            self.current = root
        if root is not None:
            self.saved = list(sys.path)
            if root not in self.saved:
                sys.path.insert(0, root)
            os.chdir(root)

    def leave(self, root: str | None) -> None:
        if root is not None:
            sys.path[:] = self.saved
            os.chdir(self.home)


def _forget_modules(root: str) -> None:
    prefix = root.rstrip(os.sep) + os.sep
    for name, module in list(sys.modules.items()):
        where = [getattr(module, "__file__", None) or "", *(getattr(module, "__path__", None) or [])]
        if any(isinstance(path, str) and path.startswith(prefix) for path in where):
            del sys.modules[name]
