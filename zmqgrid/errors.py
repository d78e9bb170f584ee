"""The zmqgrid error tree; each error knows the exit code the CLI gives it."""
from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1          # a task failed, or `--status` found the cluster degraded
EXIT_UNREACHABLE = 2     # the master did not answer
EXIT_USAGE = 3           # bad config, flag value, file or id: the user's mistake
EXIT_INTERNAL = 4

EXIT_WAIT_TIMEOUT = 124  # `submit --wait-timeout` passed with tasks unfinished (they go on), as timeout(1) exits
EXIT_INTERRUPTED = 130   # Ctrl-C (128 + SIGINT)


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
    """Raised when a task id matches no task in the master's ledger."""


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
