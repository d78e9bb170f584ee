"""Serving: the bind rule, HTTPS, the token store and its life, the gateway's own key under CURVE, and the gateway
beside a standalone cluster."""
from __future__ import annotations

import os
import stat
import subprocess

import aiohttp
import pytest

from zmqgrid.errors import UsageError
from zmqgrid.gateway.server import check_bind
from zmqgrid.gateway.settings import GatewaySettings
from zmqgrid.gateway.tokens import TokenStore

from ..helpers import Harness, keys_cli, run_cli, wait_until
from .web import Gateway, make_token

pytestmark = pytest.mark.timeout(120)

API = "/api/distribution"


def test_a_non_loopback_bind_without_a_token_is_refused_in_one_line(tmp_path):
    done = run_cli("http", "--host", "0.0.0.0", "--port", "18999", "--tokens", str(tmp_path / "none.json"),
                   "--log-file", str(tmp_path / "g.log"), cwd=tmp_path)
    assert done.returncode == 3, done.stderr
    assert done.stderr.startswith("error: refusing to serve HTTP on 0.0.0.0 with no token") and "Traceback" not in done.stderr
    assert "--insecure" in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_the_bind_rule_allows_loopback_open_a_token_store_or_insecure(tmp_path):
    empty = TokenStore(tmp_path / "empty.json")
    check_bind(GatewaySettings("tcp://127.0.0.1:8000", host="127.0.0.1"), empty)
    check_bind(GatewaySettings("tcp://127.0.0.1:8000", host="::1"), empty)
    check_bind(GatewaySettings("tcp://127.0.0.1:8000", host="0.0.0.0", insecure=True), empty)
    with pytest.raises(UsageError):
        check_bind(GatewaySettings("tcp://127.0.0.1:8000", host="10.1.2.3"), empty)
    full = TokenStore(tmp_path / "full.json")
    full.create("ops", "read")
    check_bind(GatewaySettings("tcp://127.0.0.1:8000", host="0.0.0.0"), full)


def test_tokens_are_stored_hashed_owner_only_revoked_live_and_never_logged(tmp_path):
    h = Harness(tmp_path)
    store = tmp_path / "tokens.json"
    gateway = None
    try:
        h.start_master()
        token = make_token(h, store, "ops", "read")
        assert token.startswith("zg_") and len(token) > 40
        assert stat.S_IMODE(os.stat(store).st_mode) == 0o600
        assert token not in store.read_text()
        gateway = Gateway(h, store, "--log-level", "DEBUG")
        assert gateway.call("GET", f"{API}/tasks", token).status == 200
        assert gateway.call("GET", f"{API}/tasks", token + "x").status == 401
        listed = run_cli("http", "tokens", "list", "--json", "--tokens", str(store), cwd=tmp_path)
        assert '"ops"' in listed.stdout and token not in listed.stdout and "sha256" not in listed.stdout
        revoked = run_cli("http", "tokens", "revoke", "ops", "--tokens", str(store), cwd=tmp_path)
        assert revoked.returncode == 0, revoked.stderr
        # The store is empty now: the gateway is open again (loopback), so a revoked token is as good as none.
        make_token(h, store, "other", "admin")
        assert gateway.call("GET", f"{API}/tasks", token).status == 401
        store.write_text("{not json")   # a store broken under a running gateway lets nobody in, and says so
        broken = gateway.call("GET", f"{API}/tasks", token)
        assert broken.status == 500 and broken.json["error"] == "the gateway's token store cannot be read"
        assert gateway.call("GET", "/healthz").status == 200
    finally:
        if gateway is not None:
            gateway.stop()
        h.stop()
    for log in tmp_path.glob("gateway.*"):
        assert token not in log.read_text(errors="replace"), log


def test_a_list_of_more_than_10000_specs_is_a_413(tmp_path):
    h = Harness(tmp_path)
    gateway = None
    try:
        h.start_master()
        gateway = Gateway(h, tmp_path / "none.json")
        answer = gateway.call("POST", f"{API}/tasks", body=[{"shell": "true"}] * 10_001)
        assert answer.status == 413 and "at most 10,000" in answer.json["error"], answer.text
        assert gateway.call("GET", f"{API}/tasks").json["tasks"] == []
    finally:
        if gateway is not None:
            gateway.stop()
        h.stop()


def test_https_with_certfile_and_keyfile(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    h = Harness(tmp_path)
    gateway = None
    try:
        h.start_master()
        gateway = Gateway(h, tmp_path / "none.json", "--certfile", str(cert), "--keyfile", str(key), cafile=cert)
        assert gateway.call("GET", f"{API}/system/overview").json["master"] == h.url
        plain = Gateway.__new__(Gateway)
        plain.base, plain.tls = gateway.base.replace("https", "http"), None
        with pytest.raises(aiohttp.ClientError):
            plain.call("GET", "/healthz", timeout_s=5)
    finally:
        if gateway is not None:
            gateway.stop()
        h.stop()


def test_a_gateway_with_a_client_key_reads_and_submits_but_never_cancels_for_an_admin_caller(tmp_path):
    h = Harness(tmp_path, secured=True)
    gateway = None
    try:
        h.start_master()
        accepted = keys_cli(h, "accept", str(h.keys / "client.key"), "--role", "client")
        assert accepted.returncode == 0, accepted.stderr
        env = {"ZMQGRID_CLIENT_KEY_FILE": str(h.keys / "client.key_secret")}
        gateway = Gateway(h, tmp_path / "none.json", env=env)   # no token: the caller is admin
        ids = wait_until(lambda: (a := gateway.call("POST", f"{API}/tasks", body={"shell": "true"})).status == 201
                         and a.json["ids"], 20, "the master to take the gateway's client key")
        assert gateway.call("GET", f"{API}/tasks/{ids[0]}").json["id"] == ids[0]
        refused = gateway.call("POST", f"{API}/tasks/{ids[0]}/cancel")
        assert refused.status == 403 and "admin key" in refused.json["hint"], refused.text
    finally:
        if gateway is not None:
            gateway.stop()
        h.stop()


def test_token_commands_refuse_a_bad_name_a_duplicate_and_an_unknown_token_in_one_line(tmp_path):
    store = str(tmp_path / "tokens.json")
    bad = run_cli("http", "tokens", "create", "bad name", "--tokens", store, cwd=tmp_path)
    assert bad.returncode == 3 and bad.stderr.startswith("error: token name 'bad name' is not allowed"), bad.stderr
    assert run_cli("http", "tokens", "create", "ops", "--tokens", store, cwd=tmp_path).returncode == 0
    twice = run_cli("http", "tokens", "create", "ops", "--tokens", store, cwd=tmp_path)
    assert twice.returncode == 3 and "exists" in twice.stderr and "http tokens revoke ops" in twice.stderr
    unknown = run_cli("http", "tokens", "revoke", "nobody", "--tokens", store, cwd=tmp_path)
    assert unknown.returncode == 3 and unknown.stderr.strip() == \
        "error: no token named 'nobody'; list them with: python main.py http tokens list"
    for done in (bad, twice, unknown):
        assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
