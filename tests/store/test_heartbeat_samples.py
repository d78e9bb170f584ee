"""Heartbeat samples on a real ledger file: pruned per device as they come, newest kept."""
from __future__ import annotations

from zmqgrid.store.task_store import PRUNE_SAMPLES_EVERY, TaskStore


def test_samples_beyond_the_retention_are_pruned_per_device_as_they_come_keeping_the_newest(tmp_path):
    store = TaskStore(tmp_path / "ledger.db")
    try:
        # Given a retention of 10 samples per device
        store.prune_heartbeats(10)
        # When one device sends two prune periods of samples and five more, and another only a few
        for i in range(2 * PRUNE_SAMPLES_EVERY + 5):
            store.sample_heartbeat("busy", float(i), {"cpu_percent": float(i)}, 0)
            if i < 3:
                store.sample_heartbeat("quiet", float(i), {"cpu_percent": 1.0}, 0)
            store.commit()
        rows = lambda d: [r[0] for r in store.db.execute(  # noqa: E731
            "SELECT at FROM heartbeats WHERE device_id = ? ORDER BY at", [d])]
        # Then the busy device keeps its newest 10 as of its last prune plus the 5 since; the quiet one keeps all
        last = 2 * PRUNE_SAMPLES_EVERY + 4
        assert rows("busy") == [float(i) for i in range(last - 14, last + 1)]
        assert rows("quiet") == [0.0, 1.0, 2.0]
    finally:
        store.close()
