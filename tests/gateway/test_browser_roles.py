"""A browser dashboard's role limit (tui.roles.LimitedSource): what each token role may ask the master, checked on
the dashboard's own fixed-data source (tests/tui/data.py), which records every action that reaches it."""
from __future__ import annotations

import pytest

from zmqgrid.tui import make_app
from zmqgrid.tui.roles import LimitedSource, RoleRefused
from zmqgrid.tui.source import Source, TaskQuery

from ..tui.data import static_source

ACTIONS = {
    "cancel": lambda s: s.cancel(["a1b2c3d4e5f60718"]),
    "requeue": lambda s: s.requeue(["d4e5f60718293a4b"]),
    "drain": lambda s: s.control_devices("drain", ["crawler-01"]),
    "shutdown": lambda s: s.control_devices("shutdown", ["crawler-01"]),
    "schedule pause": lambda s: s.control_schedule("pause", "nightly"),
    "submit": lambda s: s.submit({"id": "f00d", "command": "echo hi"}),
}
ALLOWED = {"read": set(), "client": {"submit"}, "admin": set(ACTIONS)}


@pytest.mark.parametrize("role", ["read", "client", "admin"])
def test_each_role_reaches_the_master_with_its_own_actions_only(role):
    source = static_source()
    limited = LimitedSource(source, role)

    for what, act in ACTIONS.items():
        if what in ALLOWED[role]:
            act(limited)
        else:
            with pytest.raises(RoleRefused, match=f"refused: {what} needs an? (admin|client) token; this dashboard's "
                                                  f"token is {role}"):
                act(limited)

    assert [name for name, _ in source.actions] == [what for what in ACTIONS if what in ALLOWED[role]]
    assert limited.snapshot(TaskQuery()).devices   # reading is every role's


def test_a_limited_dashboard_answers_every_call_of_a_source():
    # The dashboard calls its source by the Source protocol's names; a missing one fails in a worker thread,
    # where the action ends silently (a read-only browser dashboard's project detail never opened).
    wanted = {name for name in vars(Source) if not name.startswith("_") and callable(getattr(Source, name))}
    limited = LimitedSource(static_source(), "read")

    assert sorted(name for name in wanted if not hasattr(limited, name)) == []
    name = limited.snapshot(TaskQuery()).projects[0]["name"]
    assert limited.project_versions(name) == static_source().project_versions(name)


def test_the_terminal_dashboard_is_not_limited_and_a_served_one_says_its_role():
    assert not isinstance(make_app(static_source()).source, LimitedSource)
    app = make_app(static_source(), role="read")
    assert isinstance(app.source, LimitedSource) and app.sub_title == "read-only"
