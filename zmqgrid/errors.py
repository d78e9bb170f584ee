"""The zmqgrid error tree; each error knows the exit code the CLI gives it and the code a master answers it with."""
from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1          # a task failed, or `--status` found the cluster degraded
EXIT_UNREACHABLE = 2     # the master did not answer
EXIT_USAGE = 3           # bad config, flag value, file or id: the user's mistake
EXIT_INTERNAL = 4
EXIT_KEY_REFUSED = 5     # a worker whose key the master revoked or rejected: restarting it cannot help

EXIT_WAIT_TIMEOUT = 124  # `submit --wait-timeout` passed with tasks unfinished (they go on), as timeout(1) exits
EXIT_INTERRUPTED = 130   # Ctrl-C (128 + SIGINT)
EXIT_TERMINATED = 143    # SIGTERM (128 + 15), as a shell reports a process it ended


def exit_code_for_state(state: str) -> int:
    """The exit code of a command that waited for a task to end in `state` (`submit --wait`, `tasks logs
    --follow`): 0 done, 1 any other end (failed, timed_out, cancelled, quarantined)."""
    return EXIT_OK if state == "done" else EXIT_FAILED


class ZmqgridError(Exception):
    """Base of every error zmqgrid raises on purpose; `str()` is one line for a person."""

    exit_code = EXIT_INTERNAL
    code = "bad_request"
    """The code of the Error a master answers a request with when handling it raised this error (docs/architecture.md,
    "Error codes"); `from_wire` turns it back into the error on the client."""

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

    code = "not_found"

    @classmethod
    def of(cls, refs: list[str]) -> TaskNotFound:
        """The one error every command gives for task references that match nothing (the command line adds how to
        list them: cli.hints)."""
        return cls(f"no task {', '.join(repr(r) for r in refs)}")


class AmbiguousTaskId(UsageError):
    """Raised when a task id prefix matches several tasks (docs/architecture.md, "Task references")."""

    code = "ambiguous"
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

    code = "not_found"


class ProjectNotFound(UsageError):
    """Raised when a project name, or a version of it, matches nothing the master holds."""

    code = "not_found"


class AlertNotFound(UsageError):
    """Raised when an alert rule name matches no rule of the master."""

    code = "not_found"


class LimitExceeded(UsageError):
    """Raised when a request would take a peer past a limit of the master (e.g. max_queued_per_client)."""

    code = "too_large"


class ProtocolError(ZmqgridError):
    """Raised when a frame or message fails to decode or validate; the reason names what was wrong."""

    exit_code = EXIT_INTERNAL
    code = "bad_message"


class RemoteError(ZmqgridError):
    """Raised when the master answers a request with an error whose code no type below carries (`from_wire`);
    `code` is the master's."""

    exit_code = EXIT_USAGE

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class SubmitRefused(RemoteError):
    """The master refused a Submit of `Client.submit`/`map`. Raised once every other Submit of the call has been
    answered, so nothing of the call is still in flight: `submitted` holds the ids that were committed, in order."""

    def __init__(self, code: str, message: str, submitted: list[str]) -> None:
        self.submitted = submitted
        super().__init__(code, message)


class MasterUnavailable(ZmqgridError):
    """Raised when the master does not answer within the client's timeout."""

    exit_code = EXIT_UNREACHABLE
    command = ""   # the zmqgrid command that starts or shows the cause on the master's machine (cli.hints names it)


class WaitTimedOut(ZmqgridError):
    """Raised when `submit --wait-timeout` passes before every task ended; the tasks stay on the master."""

    exit_code = EXIT_WAIT_TIMEOUT


class StoreError(ZmqgridError):
    """Raised when the SQLite ledger cannot be opened, read or written."""

    exit_code = EXIT_USAGE
    code = "unavailable"


# The master's error codes that the client raises as a type of their own; any other code is a RemoteError.
_FROM_WIRE: dict[str, type[ZmqgridError]] = {TaskNotFound.code: TaskNotFound,
                                              AmbiguousTaskId.code: AmbiguousTaskId}


def from_wire(code: str, message: str, about: str = "task") -> ZmqgridError:
    """The error a master's `Error(code, message)` stands for; `about` is what the request named: a not_found
    answering a request about a "schedule" is ScheduleNotFound."""
    kind = _FROM_WIRE.get(code)
    if code == "not_found" and about in ("schedule", "project", "alert"):
        kind = {"schedule": ScheduleNotFound, "project": ProjectNotFound, "alert": AlertNotFound}[about]
    return RemoteError(code, message) if kind is None else kind(message)
