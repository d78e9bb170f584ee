"""Bad input over HTTP: each a JSON {"error", "hint"} with the right status, and nothing half-applied."""
from __future__ import annotations

import pytest

from ..helpers import db_counts

pytestmark = pytest.mark.timeout(120)

API = "/api/distribution"


def error(answer, status: int) -> str:
    assert answer.status == status, (answer.status, answer.text)
    assert answer.headers["Content-Type"].startswith("application/json")
    body = answer.json
    assert set(body) == {"error", "hint"} and body["error"] and isinstance(body["hint"], str), body
    return body["error"]


def tasks_in_ledger(served) -> int:
    return sum(db_counts(served.harness.db).values())


def test_malformed_json_is_a_400(served):
    assert "not valid JSON" in error(served.call("POST", f"{API}/tasks", "client", data=b'{"shell": "echo'), 400)


def test_a_body_of_the_wrong_shape_or_types_is_a_400(served):
    assert "must be a JSON object" in error(served.call("POST", f"{API}/tasks", "client", body=5), 400)
    assert "command" in error(served.call("POST", f"{API}/tasks", "client", body={"shell": 5}), 400)
    assert "priority" in error(served.call("POST", f"{API}/tasks", "client",
                                           body={"shell": "true", "priority": "high"}), 400)
    assert "must be a string" in error(served.call("PUT", f"{API}/devices/w1/status", "admin",
                                                   body={"action": 1}), 400)
    assert "unknown" in error(served.call("PUT", f"{API}/devices/w1/status", "admin", body={"action": "explode"}), 400)


def test_unknown_fields_and_query_parameters_are_a_400(served):
    assert error(served.call("POST", f"{API}/tasks", "client", body={"shel": "echo"}), 400) == "unknown field(s): shel"
    assert "verbose" in error(served.call("PUT", f"{API}/devices/w1/status", "admin",
                                          body={"action": "drain", "verbose": True}), 400)
    assert "colour" in error(served.call("GET", f"{API}/tasks?colour=red", "read"), 400)
    assert "state" in error(served.call("GET", f"{API}/tasks?state=sleeping", "read"), 400)
    assert "limit" in error(served.call("GET", f"{API}/tasks?limit=0", "read"), 400)
    assert "not an integer" in error(served.call("GET", f"{API}/tasks/stats?window_s=soon", "read"), 400)
    assert "follow" in error(served.call("GET", f"{API}/tasks/nosuchtask/logs?follow=yes", "read"), 400)


def test_a_script_path_is_refused_the_gateway_reads_no_file_for_a_caller(served):
    assert "script" in error(served.call("POST", f"{API}/tasks", "client", body={"script": "/etc/passwd"}), 400)


def test_one_bad_spec_in_a_list_submits_none_of_it(served):
    before = tasks_in_ledger(served)
    bad = [{"shell": "echo fine"}, {"shell": "echo fine", "timeout": -1}]
    assert error(served.call("POST", f"{API}/tasks", "client", body=bad), 400).startswith("item 2 of 2: ")
    assert tasks_in_ledger(served) == before


def test_an_oversized_body_is_a_413_and_submits_nothing(served):
    before = tasks_in_ledger(served)
    big = {"shell": "echo " + "x" * (70 * 1024)}   # the module's gateway takes 64 KiB
    assert "64 KiB" in error(served.call("POST", f"{API}/tasks", "client", body=big), 413)
    assert tasks_in_ledger(served) == before


def test_unknown_ids_routes_and_methods_are_404_and_405(served):
    assert error(served.call("GET", f"{API}/tasks/nosuchtask", "read"), 404) == "no task 'nosuchtask'"
    assert error(served.call("GET", f"{API}/tasks/nosuchtask/logs", "read"), 404) == "no task 'nosuchtask'"
    assert error(served.call("POST", f"{API}/tasks/nosuchtask/cancel", "admin"), 404) == "no task 'nosuchtask'"
    assert error(served.call("GET", f"{API}/devices/nosuchdevice", "read"), 404) == "no device 'nosuchdevice'"
    assert error(served.call("GET", f"{API}/nothing", "read"), 404) == f"no route {API}/nothing"
    answer = served.call("DELETE", "/metrics", "admin")
    assert error(answer, 405) == "DELETE is not allowed on /metrics" and "GET" in answer.headers["Allow"]


def test_an_ambiguous_task_prefix_is_a_409_naming_candidates(served):
    ids = [f"amb-{n}" for n in range(2)]
    assert served.call("POST", f"{API}/tasks", "client", body=[{"shell": "true", "id": i} for i in ids]).status == 201
    assert "matches several tasks" in error(served.call("GET", f"{API}/tasks/amb-", "read"), 409)
    assert "matches several tasks" in error(served.call("POST", f"{API}/tasks/amb-/requeue", "admin"), 409)


def test_no_token_an_unknown_token_and_too_low_a_role(served):
    answer = served.call("GET", f"{API}/tasks", None)
    assert error(answer, 401) == "this gateway needs a bearer token" and answer.headers["WWW-Authenticate"].startswith("Bearer")
    assert "not known" in error(served.gateway.call("GET", "/metrics", "zg_not-a-token"), 401)
    assert "role client; yours is read" in error(served.call("POST", f"{API}/tasks", "read",
                                                             body={"shell": "true"}), 403)
    assert "role admin; yours is client" in error(served.call("POST", f"{API}/tasks/amb-0/cancel", "client"), 403)
    assert "role admin" in error(served.call("PUT", f"{API}/devices/w1/status", "client", body={"action": "drain"}), 403)
    assert served.call("GET", f"{API}/devices/w1", "read").json["state"] == "online"
