"""The worker marks a failure that recurs on every attempt `permanent` (docs/architecture.md, "Failures that are not
retried"): in pool children, inline calls, shell and script processes and allow-list refusals, and the mark survives
the outbox's fitting of a result to the wire schema. Everything else stays unmarked, so the master retries it."""
from __future__ import annotations

import pytest

from zmqgrid.config import load_config
from zmqgrid.protocol import RESULT
from zmqgrid.worker.allow import admit
from zmqgrid.worker.inline import InlineCalls
from zmqgrid.worker.outbox import fit
from zmqgrid.worker.results import AttemptResult

from .test_executors import POSIX_SH, background, make_executor, task  # noqa: F401  (fixtures, as they are named)
from .test_pyslots import driver  # noqa: F401  (a fixture)

pytestmark = pytest.mark.timeout(60, method="thread")   # the inline timer uses SIGALRM, as pytest-timeout would

# (function, args, error type, marked permanent)
CALLS = [
    ("tests.no_such_module:f", [], "ModuleNotFoundError", True),
    ("tests.tasks:no_such_function", [], "AttributeError", True),
    ("tests.tasks:add", [1], "TypeError", True),                  # the arguments do not fit the signature
    ("tests.tasks:NOT_CALLABLE", [], "TypeError", True),          # resolves to an int
    ("tests.tasks:raise_type_error", [], "TypeError", False),     # raised inside the function: its own
    ("tests.tasks:import_missing", [], "ModuleNotFoundError", False),   # at call time, inside the function
    ("tests.broken_at_import:f", [], "RuntimeError", False),      # importing failed, but not for want of code
    ("tests.tasks:raise_value_error", [], "ValueError", False),
]


def python_task(function: str, args: list) -> dict:
    return task("python", function=function, args=args)


@pytest.mark.parametrize("function, args, error_type, marked", CALLS, ids=[c[0] for c in CALLS])
def test_a_pool_child_marks_only_calls_that_cannot_succeed_permanent(driver, function, args, error_type, marked):
    result = driver().run(python_task(function, args))
    assert (result.state, result.error.type) == ("failed", error_type), result.error
    assert result.error.permanent is marked, result.error


@pytest.mark.parametrize("function, args, error_type, marked", CALLS, ids=[c[0] for c in CALLS])
def test_an_inline_call_marks_only_calls_that_cannot_succeed_permanent(function, args, error_type, marked):
    calls = InlineCalls(max_output_bytes=1 << 20, default_timeout_s=None)
    result = calls.call(python_task(function, args))
    assert (result.state, result.error.type) == ("failed", error_type), result.error
    assert result.error.permanent is marked, result.error


@pytest.mark.parametrize("cgroups", [True, False], ids=["cgroup launcher", "plain"])
def test_a_missing_program_interpreter_or_cwd_is_a_permanent_start_error(make_executor, tmp_path, cgroups):
    executor = make_executor(use_cgroups=cgroups)
    program = executor.start(task("shell", command=["zmqgrid-no-such-program-xyz"])).wait()
    cwd = executor.start(task("shell", command="true", cwd=str(tmp_path / "gone"))).wait()
    interpreter = make_executor(use_cgroups=cgroups, python_executable=str(tmp_path / "no-python")).start(
        task("script", source="print('hi')\n")).wait()
    for result in (program, cwd, interpreter):
        assert (result.state, result.error.type) == ("failed", "StartError"), result
        assert result.error.permanent is True, result.error


@POSIX_SH
def test_a_command_the_shell_does_not_find_is_exit_127_and_not_permanent(make_executor):
    # The worker cannot tell a missing command from a program that exits 127 itself: an ordinary exit code
    result = make_executor().start(task("shell", command="zmqgrid-no-such-program-xyz")).wait()
    assert (result.state, result.exit_code, result.error.type) == ("failed", 127, "ExitCode")
    assert "permanent" not in result.error.to_wire()


def test_a_failing_script_and_a_nonzero_exit_are_not_permanent(make_executor):
    result = make_executor().start(task("script", source="raise SystemExit(3)\n")).wait()
    assert (result.state, result.exit_code) == ("failed", 3)
    assert "permanent" not in result.error.to_wire()


def test_an_allow_list_refusal_is_permanent_and_fits_the_wire_schema():
    config = load_config("worker", env={}, flags={"allowed_kinds": ["python"], "allowed_modules": ["tests.tasks"]})
    refused: list[AttemptResult] = []
    runnable = admit([python_task("zmqgrid.samples:noop", []) | {"id": "t1"},
                      task("shell", command="true") | {"id": "t2"},
                      python_task("tests.tasks:noop", []) | {"id": "t3"}], config, refused.append)
    assert [t["id"] for t in runnable] == ["t3"]
    assert [(r.id, r.error.type, r.error.permanent) for r in refused] == [
        ("t1", "Forbidden", True), ("t2", "Forbidden", True)]
    wire = fit(refused[0].to_wire())
    assert wire["error"]["permanent"] is True and wire["error"]["type"] == "Forbidden"
    RESULT.check(wire)


def test_the_outbox_keeps_the_mark_and_drops_anything_else_in_an_error():
    wire = fit({"id": "t1", "attempt": 1, "state": "failed",
                "error": {"type": "ImportError", "message": "m", "traceback": "", "permanent": True, "extra": "x"}})
    assert wire["error"] == {"type": "ImportError", "message": "m", "traceback": "", "permanent": True}
    plain = fit({"id": "t1", "attempt": 1, "state": "failed", "error": {"type": "E", "message": "m"}})
    assert "permanent" not in plain["error"]
    RESULT.check(wire)


def test_the_schema_takes_the_mark_as_a_boolean_only():
    from zmqgrid.fields import Bad
    RESULT.check({"id": "t1", "attempt": 1, "state": "failed", "error": {"type": "E", "permanent": True}})
    with pytest.raises(Bad):
        RESULT.check({"id": "t1", "attempt": 1, "state": "failed", "error": {"type": "E", "permanent": "yes"}})

