"""Which failures of an attempt recur on every attempt: the worker marks them `permanent` in the result's error, and
the master does not retry them (docs/architecture.md, "Failures that are not retried")."""
from __future__ import annotations

import inspect
from typing import Any

from ..model import TaskError

# Resolving `module:function` raised one of these: the code is not there (ImportError covers ModuleNotFoundError).
# Anything else raised while importing (a module that connects somewhere at import time) may pass next time.
UNLOADABLE = (ImportError, AttributeError, SyntaxError)
# A process could not start because its program, interpreter, shell or cwd is missing or not executable, or its
# argv is malformed (a NUL byte). EAGAIN, ENOMEM and the like are other OSErrors: they may pass next time.
UNSTARTABLE = (FileNotFoundError, NotADirectoryError, PermissionError, ValueError)
UNRESOLVED = object()
"""What a call site holds for the callable until `module:function` is resolved."""


def permanent(error: TaskError) -> TaskError:
    """`error` marked as recurring on every attempt."""
    error.permanent = True
    return error


def judged_call(error: TaskError, exc: BaseException, fn: Any, args: Any, kwargs: Any) -> TaskError:
    """The error of a python call that raised `exc`, marked permanent when no retry can succeed: `fn` is
    UNRESOLVED when resolving the callable failed, else the call raised."""
    if fn is UNRESOLVED:
        return permanent(error) if isinstance(exc, UNLOADABLE) else error
    if isinstance(exc, TypeError) and not _binds(fn, args, kwargs):
        return permanent(error)
    return error


def _binds(fn: Any, args: Any, kwargs: Any) -> bool:
    """Whether `fn` is a callable that takes these arguments: a TypeError after a call that binds is the function's
    own (raised inside it), and may have another cause next time. Asked only after a call raised TypeError."""
    if not callable(fn):
        return False
    try:
        inspect.signature(fn).bind(*(args or ()), **(kwargs or {}))
    except TypeError:
        return False
    except ValueError:   # no signature to read (some builtins): cannot tell, so not judged permanent
        return True
    return True
