"""zmqgrid, a brokerless distributed task system on ZeroMQ. The Python API (README, "From Python"):

    from zmqgrid import Client, build_spec

`Client`, `build_spec`, the errors of `zmqgrid.errors` and `__version__` (the installed package's version).
"""
from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__all__ = ["Client", "build_spec", "__version__",
           "ZmqgridError", "ConfigError", "UsageError", "TaskNotFound", "AmbiguousTaskId", "ScheduleNotFound",
           "ProjectNotFound", "AlertNotFound", "LimitExceeded",
           "ProtocolError", "RemoteError", "SubmitRefused", "MasterUnavailable", "WaitTimedOut", "StoreError"]
# Each name is imported on first use: a worker and its python pool children import zmqgrid's modules, and the
# client's imports (zmq, the key files, the config) would only slow their start.
_HOMES = {"Client": "client", "build_spec": "model", **{name: "errors" for name in __all__[3:]}}

if TYPE_CHECKING:
    from .client import Client
    from .errors import (AlertNotFound, AmbiguousTaskId, ConfigError, LimitExceeded, MasterUnavailable, ProjectNotFound, ProtocolError, RemoteError,
                         ScheduleNotFound, StoreError, SubmitRefused, TaskNotFound, UsageError, WaitTimedOut, ZmqgridError)
    from .model import build_spec

    __version__: str


def __getattr__(name: str) -> Any:
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version   # here: every process imports zmqgrid
        try:
            found = version("zmqgrid")
        except PackageNotFoundError:   # a source tree on sys.path that was never installed
            found = "0+unknown"
    elif name in _HOMES:
        found = getattr(import_module(f".{_HOMES[name]}", __name__), name)
    else:
        raise AttributeError(f"module 'zmqgrid' has no attribute {name!r}")
    globals()[name] = found   # looked up once
    return found


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
