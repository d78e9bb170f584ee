"""The fetches a sync grants (zmqgrid.master.syncs, docs/architecture.md, Projects, "Sync and what workers hold"):
a device may fetch the version it was told to sync, and nothing else, for SYNC_GRANT_S after the sync or its last
fetch of it, at most MAX_GRANTS versions at a time."""
from __future__ import annotations

from zmqgrid.master.syncs import MAX_GRANTS, SYNC_GRANT_S, Syncs

A, B = "a" * 64, "b" * 64


def test_a_grant_is_for_its_device_and_version_and_lapses_when_unused_for_sync_grant_s():
    syncs = Syncs(fleet=None, projects=None)   # grants need neither
    syncs.grant("w1", A, 100.0)
    assert not syncs.allows("w2", A, 100.0) and not syncs.allows("w1", B, 100.0)
    assert syncs.allows("w1", A, 100.0 + SYNC_GRANT_S - 1)
    assert syncs.allows("w1", A, 100.0 + 2 * SYNC_GRANT_S - 2)   # each fetch renews it
    assert not syncs.allows("w1", A, 100.0 + 3 * SYNC_GRANT_S)
    assert not syncs.allows("w1", A, 100.0)                      # and once lapsed it is gone


def test_a_device_holds_at_most_max_grants_and_the_oldest_goes_first():
    syncs = Syncs(fleet=None, projects=None)
    versions = [f"{n:064x}" for n in range(MAX_GRANTS + 1)]
    for version in versions:
        syncs.grant("w1", version, 0.0)
    assert not syncs.allows("w1", versions[0], 1.0)
    assert all(syncs.allows("w1", version, 1.0) for version in versions[1:])
