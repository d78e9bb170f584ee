"""Device events: a key revoked (under CURVE, where only an admin key may add rules), and a device online when the
master was killed that never comes back after its restart."""
from __future__ import annotations

import signal

import pytest

from zmqgrid.errors import RemoteError

from ..helpers import Harness, db_query, keys_cli, wait_until
from .conftest import FAST_ALERTS

pytestmark = pytest.mark.timeout(120)


def test_under_curve_only_an_admin_adds_rules_and_a_revoked_key_is_an_event(tmp_path, receiver):
    h = Harness(tmp_path, secured=True, env=FAST_ALERTS)
    try:
        (tmp_path / "authorized" / "client.key").write_text((h.keys / "client.key").read_text())
        h.start_master()
        h.start_worker("w1")
        admin = h.client()
        h.wait_online(admin, "w1")
        client = h.client(curve=h.client_curve("client"))
        with pytest.raises(RemoteError, match="a client key may not send Control alert") as refused:
            client.alert_add("sneaky", "failed", webhook=receiver.url("/x"))
        assert refused.value.code == "forbidden"
        admin.alert_add("keys", "revoked", webhook=receiver.url("/keys"))
        assert [r["name"] for r in client.alerts()] == ["keys"]   # reading is a client's right; no URL path in it
        assert keys_cli(h, "revoke", "w1").returncode == 0
        wait_until(lambda: receiver.bodies("/keys"), 20, "the revoked event")
        [body] = receiver.bodies("/keys")
        assert body["event"] == "revoked" and body["device"]["id"] == "w1" and "revoked" in body["text"]
        assert db_query(h.db, "SELECT rule FROM alert_events") == [("keys",)]
    finally:
        h.stop()


def test_a_device_online_when_the_master_was_killed_that_does_not_return_is_reported_offline(alert_harness,
                                                                                              receiver):
    # Given two online workers and a rule on offline devices
    h = alert_harness
    h.start_master()
    h.start_worker("w1")
    h.start_worker("w2", "--tag", "crawler")
    client = h.client()
    h.wait_online(client, "w1", "w2")
    client.alert_add("gone", "offline", webhook=receiver.url("/gone"))
    client.alert_add("gone-crawlers", "offline", tags="crawler", webhook=receiver.url("/crawlers"))

    # When the master and w2 are killed together, and only the master comes back
    h.kill(h.master, signal.SIGKILL)
    h.kill(h.workers["w2"], signal.SIGKILL)
    h.start_master()

    # Then w2 (and only w2: w1 registers again) is reported offline once
    wait_until(lambda: receiver.bodies("/gone"), 20, "the offline event")
    h.wait_online(h.client(), "w1")
    h.kill(h.workers["w1"], signal.SIGKILL)   # a later event of the same rule comes after w2's, and is w1's
    wait_until(lambda: len(receiver.bodies("/gone")) == 2, 20, "w1's offline event")
    assert [b["device"]["id"] for b in receiver.bodies("/gone")] == ["w2", "w1"]
    assert "did not return after the master restarted" in receiver.bodies("/gone")[0]["device"]["reason"]
    wait_until(lambda: receiver.bodies("/crawlers"), 20, "the tagged rule's event")
    assert [b["device"]["id"] for b in receiver.bodies("/crawlers")] == ["w2"]   # matched by the tag it had
