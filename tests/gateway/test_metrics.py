"""/metrics parsed with prometheus-client's own parser, the OpenAPI document, and a master that is down."""
from __future__ import annotations

import signal

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ..helpers import Harness, wait_until
from .web import Gateway

pytestmark = pytest.mark.timeout(120)

API = "/api/distribution"


def scrape(gateway: Gateway, token: str | None = None) -> dict[str, dict[tuple, float]]:
    """{family name: {(label, value)...: sample value}} of one scrape."""
    answer = gateway.call("GET", "/metrics", token)
    assert answer.status == 200, answer.text
    assert answer.headers["Content-Type"].startswith("text/plain")
    families: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            families.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return families


def test_metrics_give_tasks_devices_and_the_master_in_prometheus_format(served):
    answer = served.call("POST", f"{API}/tasks", "client", body=[{"shell": "true"}, {"shell": "exit 3", "retries": 0}])
    ids = answer.json["ids"]
    wait_until(lambda: all(served.call("GET", f"{API}/tasks/{i}", "read").json["state"] in ("done", "failed")
                           for i in ids), 30, "both tasks to end")
    m = wait_until(lambda: (got := scrape(served.gateway, served.tokens["read"]))
                   ["zmqgrid_tasks_finished_total"].get((("state", "failed"),), 0) >= 1 and got, 10,
                   "a scrape that shows them")
    assert m["zmqgrid_master_up"][()] == 1
    assert m["zmqgrid_tasks_finished_total"][(("state", "done"),)] >= 1
    assert m["zmqgrid_tasks"] == {(("state", s),): 0 for s in ("queued", "assigned", "running")}
    assert m["zmqgrid_devices"][(("state", "online"),)] == 1
    assert m["zmqgrid_device_up"][(("device", "w1"),)] == 1
    assert m["zmqgrid_device_concurrency"][(("device", "w1"),)] == 4
    assert 0 <= m["zmqgrid_device_cpu_percent"][(("device", "w1"),)] <= 100 * 64
    assert (("device", "w1"),) in m["zmqgrid_device_memory_percent"]
    assert m["zmqgrid_events_total"][(("event", "submitted"),)] >= 2
    assert "zmqgrid_bad_messages_total" in m and "zmqgrid_refused_messages_total" in m
    status = served.call("GET", f"{API}/system/overview", "read").json
    assert m["zmqgrid_master_info"] == {(("incarnation", status["incarnation"]),): 1}


def test_every_route_is_in_the_openapi_document(served):
    doc = served.call("GET", "/api/openapi.json", "read").json
    assert doc["openapi"].startswith("3.")
    served_routes = {(r.method, r.resource.canonical) for r in _routes(served)}
    documented = {(method.upper(), path) for path, ops in doc["paths"].items() for method in ops}
    assert served_routes == documented
    assert doc["paths"][f"{API}/tasks"]["post"]["x-zmqgrid-role"] == "client"
    assert doc["paths"][f"{API}/tasks/{{id}}/cancel"]["post"]["x-zmqgrid-role"] == "admin"
    assert "401" in doc["paths"]["/metrics"]["get"]["responses"] and "security" not in doc["paths"]["/healthz"]["get"]


def _routes(served):
    """The routes the application really serves (aiohttp's router), built as the gateway builds it."""
    from zmqgrid.gateway import GatewaySettings, make_app
    app = make_app(GatewaySettings(served.harness.url))
    return [r for r in app.router.routes() if r.method != "HEAD"]


def test_a_master_that_is_down_gives_503_while_healthz_answers_and_metrics_say_it(tmp_path):
    h = Harness(tmp_path)
    gateway = None
    try:
        h.start_master()
        gateway = Gateway(h, tmp_path / "no-tokens.json", "--master-timeout", "0.5")
        assert gateway.call("GET", f"{API}/tasks").status == 200
        h.kill(h.master, signal.SIGKILL)
        down = gateway.call("GET", f"{API}/tasks")
        assert down.status == 503 and "did not answer" in down.json["error"], down.text
        assert gateway.call("POST", f"{API}/tasks", body={"shell": "true"}).status == 503
        assert gateway.call("GET", "/healthz").json == {"state": "up"}
        ready = gateway.call("GET", "/readyz")
        assert ready.status == 503 and ready.json["state"] == "unreachable"
        assert scrape(gateway) == {"zmqgrid_master_up": {(): 0.0}}
        h.start_master()   # the gateway's clients reconnect: no restart of the gateway
        wait_until(lambda: gateway.call("GET", f"{API}/tasks").status == 200, 20, "the gateway to reach the master")
    finally:
        if gateway is not None:
            gateway.stop()
        h.stop()


def test_with_metrics_refresh_a_scrape_is_served_from_the_background_reading_and_sees_the_master_go(tmp_path):
    h = Harness(tmp_path)
    gateway = None
    try:
        h.start_master()
        gateway = Gateway(h, tmp_path / "no-tokens.json", "--metrics-refresh", "0.2", "--master-timeout", "0.5")
        incarnation = h.client().status()["incarnation"]
        first = wait_until(lambda: scrape(gateway).get("zmqgrid_master_info"), 10, "a background reading")
        assert first == {(("incarnation", incarnation),): 1}
        h.kill(h.master, signal.SIGKILL)
        wait_until(lambda: scrape(gateway) == {"zmqgrid_master_up": {(): 0.0}}, 20, "master_up 0 with no master")
        h.start_master()
        again = h.client().status()["incarnation"]
        wait_until(lambda: scrape(gateway).get("zmqgrid_master_info") == {(("incarnation", again),): 1}, 20,
                   "the new master's incarnation")
    finally:
        if gateway is not None:
            gateway.stop()
        h.stop()
