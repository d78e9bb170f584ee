"""Each error type carries the code a master answers it with and the CLI's exit code; a master's Error comes back
as its type by a table (zmqgrid.errors.from_wire), never by reading its text."""
from __future__ import annotations

import re

import pytest

from zmqgrid import errors
from zmqgrid.errors import (ConfigError, LimitExceeded, MasterUnavailable, ProtocolError, RemoteError,
                            ScheduleNotFound, StoreError, SubmitRefused, TaskNotFound, UsageError, WaitTimedOut,
                            ZmqgridError, from_wire)

from .helpers import REPO

pytestmark = pytest.mark.timeout(10)


@pytest.mark.parametrize("kind, code, exit_code", [
    (ZmqgridError, "bad_request", 4), (ConfigError, "bad_request", 3), (UsageError, "bad_request", 3),
    (TaskNotFound, "not_found", 3), (ScheduleNotFound, "not_found", 3), (LimitExceeded, "too_large", 3),
    (ProtocolError, "bad_message", 4), (StoreError, "unavailable", 3), (MasterUnavailable, "bad_request", 2),
    (WaitTimedOut, "bad_request", 124),
])
def test_each_error_type_carries_its_wire_code_and_exit_code(kind, code, exit_code):
    assert (kind.code, kind.exit_code) == (code, exit_code)
    assert kind("what went wrong").code == code


def test_every_code_an_error_carries_is_a_documented_error_code():
    documented = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    section = documented[documented.index("Error codes:"):documented.index("A **result dict**")]
    listed = set(re.findall(r"`([a-z_]+)`", section))
    kinds = [v for v in vars(errors).values() if isinstance(v, type) and issubclass(v, ZmqgridError)]
    assert {k.code for k in kinds} <= listed, {k.code for k in kinds} - listed


def test_a_masters_not_found_comes_back_as_what_the_request_named_and_any_other_code_as_a_remote_error_keeping_it():
    found = from_wire("not_found", "no task 'x'")
    assert type(found) is TaskNotFound and str(found) == "no task 'x'" and found.exit_code == 3
    schedule = from_wire("not_found", "no schedule 'x'", about="schedule")
    assert type(schedule) is ScheduleNotFound and schedule.exit_code == 3
    assert type(from_wire("bad_request", "schedule 'x' exists", about="schedule")) is RemoteError
    for code in ("bad_request", "too_large", "unavailable", "forbidden", "pending", "a_code_of_a_newer_master"):
        error = from_wire(code, "refused: why")
        assert type(error) is RemoteError and (error.code, str(error), error.exit_code) == (code, "refused: why", 3)
    refused = SubmitRefused("too_large", "over the cap", ["a"])
    assert (refused.code, refused.submitted, refused.exit_code) == ("too_large", ["a"], 3)
