"""The zmqgrid error tree; each error knows the exit code the CLI gives it."""
from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1          # a task failed, or `--status` found the cluster degraded
EXIT_UNREACHABLE = 2     # the master did not answer
EXIT_USAGE = 3           # bad config, flag value, file or id: the user's mistake
EXIT_INTERNAL = 4
EXIT_KEY_REFUSED = 5     # a worker whose key the master revoked or rejected: restarting it cannot help

EXIT_WAIT_TIMEOUT = 124  # `submit --wait-timeout` passed with tasks unfinished (they go on), as timeout(1) exits
EXIT_INTERRUPTED = 130   # Ctrl-C (128 + SIGINT)


def exit_code_for_state(state: str) -> int:
    """The exit code of a command that waited for a task to end in `state` (`submit --wait`, `tasks logs
    --follow`): 0 done, 1 any other end (failed, timed_out, cancelled, quarantined)."""
    return EXIT_OK if state == "done" else EXIT_FAILED


class ZmqgridError(Exception):
    """Base of every error zmqgrid raises on purpose; `str()` is one line for a person."""

    exit_code = EXIT_INTERNAL

    def __init__(self, message: str, hint: str = "") -> None:
        self.message = message
        self.hint = hint
        super().__init__(f"{message}; {hint}" if hint else message)


class ConfigError(ZmqgridError):
    """Raised when a config file, environment variable or flag holds a value that is not allowed."""

    exit_code = EXIT_USAGE


class UsageError(ZmqgridError):
    """Raised when the user asks for something that cannot be done as asked (missing file, bad id)."""

    exit_code = EXIT_USAGE


class TaskNotFound(UsageError):
    """Raised when a task id, or id prefix, matches no task in the master's ledger."""

    HINT = "list tasks with: python main.py tasks list"

    @classmethod
    def of(cls, refs: list[str]) -> TaskNotFound:
        """The one error every command gives for task references that match nothing."""
        return cls(f"no task {', '.join(repr(r) for r in refs)}", cls.HINT)


class AmbiguousTaskId(UsageError):
    """Raised when a task id prefix matches several tasks (docs/architecture.md, "Task references")."""

    HINT = "type more of the id"
    candidates = ""   # some of the ids it matches, as the message names them

    @classmethod
    def of(cls, ref: str, candidates: str) -> AmbiguousTaskId:
        """The one error every command gives for a prefix of several ids; `candidates` names some of them."""
        error = cls(f"task id prefix {ref!r} matches several tasks: {candidates}", cls.HINT)
        error.candidates = candidates
        return error


class ScheduleNotFound(UsageError):
    """Raised when a schedule name matches no schedule of the master."""


class LimitExceeded(UsageError):
    """Raised when a request would take a peer past a limit of the master (e.g. max_queued_per_client)."""


class ProtocolError(ZmqgridError):
    """Raised when a frame or message fails to decode or validate; the reason names what was wrong."""

    exit_code = EXIT_INTERNAL


class RemoteError(ZmqgridError):
    """Raised when the master answers a request with an error (code + message)."""

    exit_code = EXIT_USAGE

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        super().__init__(message)


class SubmitRefused(RemoteError):
    """The master refused a Submit of `Client.submit`/`map`. Raised once every other Submit of the call has been
    answered, so nothing of the call is still in flight: `submitted` holds the ids that were committed, in order."""

    def __init__(self, code: str, message: str, submitted: list[str]) -> None:
        self.submitted = submitted
        super().__init__(code, message)


class MasterUnavailable(ZmqgridError):
    """Raised when the master does not answer within the client's timeout."""

    exit_code = EXIT_UNREACHABLE


class WaitTimedOut(ZmqgridError):
    """Raised when `submit --wait-timeout` passes before every task ended; the tasks stay on the master."""

    exit_code = EXIT_WAIT_TIMEOUT


class StoreError(ZmqgridError):
    """Raised when the SQLite ledger cannot be opened, read or written."""

    exit_code = EXIT_USAGE


class TaskFailed(ZmqgridError):
    """Raised by `Client.wait(..., raise_on_failure=True)` when a task ends in any state but done."""

    exit_code = EXIT_FAILED
