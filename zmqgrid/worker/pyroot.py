"""In a python pool child: a call of a project runs with its copy first on `sys.path`, then its environment's
site-packages (with what their .pth files add), and the copy as the working directory; the path and the folder are
put back after the call (docs/architecture.md, Projects, "Running"). The copy's modules stay imported while the
next calls are of the same copy; a call of another copy, or of none, first drops them (and those of its
environment) from `sys.modules`, so a version 2 call never runs a module version 1 left there."""
from __future__ import annotations

import importlib
import os
import site
import sys
from typing import Any


class CallRoot:
    """`enter(root, sites, cache)` before a call, `leave(root)` after it; `cache` is the child's function ->
    callable."""

    def __init__(self) -> None:
        self.current: tuple[str | None, tuple[str, ...]] = (None, ())   # the copy whose modules this child holds
        self.entries: list[str] = []     # what goes first on sys.path for a call of the current copy
        self.saved: list[str] = []       # sys.path as it was before the call
        self.home = os.getcwd()

    def enter(self, root: str | None, sites: tuple[str, ...], cache: dict[str, Any]) -> None:
        if (root, sites) != self.current:
            for folder in (self.current[0], *self.current[1]):
                if folder is not None:
                    _forget_modules(folder)
            cache.clear()   # a function's name resolves to another module in another copy
            importlib.invalidate_caches()
            self.current = (root, sites)
            self.entries = [root, *_with_pth_entries(sites)] if root is not None else []
        if root is not None:
            self.saved = list(sys.path)
            sys.path[:0] = [entry for entry in self.entries if entry not in self.saved]
            os.chdir(root)

    def leave(self, root: str | None) -> None:
        if root is not None:
            sys.path[:] = self.saved
            os.chdir(self.home)


def _with_pth_entries(sites: tuple[str, ...]) -> list[str]:
    """The site-packages folders and what their .pth files add, as `site.addsitedir` finds them (done once per
    copy: a .pth file's `import` lines run then, not at every call)."""
    from ..projects.envfiles import FINDER_MODULE   # here: a child that runs no project never loads it
    before, finders = list(sys.path), list(sys.meta_path)
    for folder in sites:
        site.addsitedir(folder)
    added = [entry for entry in sys.path if entry not in before]
    sys.path[:] = before
    # The environment's own finder of the worker's modules (envfiles.FINDER_MODULE) is for a child started from
    # the environment's interpreter; here the worker's modules are already where it would point.
    sys.meta_path[:] = [f for f in sys.meta_path if f in finders or type(f).__module__ != FINDER_MODULE]
    return added


def _forget_modules(root: str) -> None:
    prefix = root.rstrip(os.sep) + os.sep
    for name, module in list(sys.modules.items()):
        where = [getattr(module, "__file__", None) or "", *(getattr(module, "__path__", None) or [])]
        if any(isinstance(path, str) and path.startswith(prefix) for path in where):
            del sys.modules[name]
