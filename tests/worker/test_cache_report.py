"""What a worker's heartbeats say of its project cache (zmqgrid.worker.cache_report): always within the Heartbeat
schema, those in progress or failed first, and only when it changed (or every RESEND_EVERY heartbeats)."""
from __future__ import annotations

from zmqgrid import protocol as p
from zmqgrid.worker.cache_report import RESEND_EVERY, CacheReport, brief


def version(n: int) -> str:
    return f"{n:064x}"


def beat(projects) -> p.Heartbeat:
    """A heartbeat carrying `projects`, through the master's decoder."""
    sent = p.Heartbeat(device_id="w1", incarnation="i", seq=1, running=[], held=[], metrics={}, sent_at=1.0,
                       projects=projects)
    return p.decode(sent.encode())


def test_the_list_passes_the_schema_with_the_busy_and_failed_first_and_at_most_64_entries():
    report = CacheReport()
    for n in range(100):
        report.set(version(n), "cached", "ready")
    report.set(version(3), "fetching")
    report.set(version(4), "cached", "failed", "its environment could not be built\x1b[2J\n" + "x" * 500)
    report.synced(version(3), 7)

    listed = beat(report.snapshot()).projects

    assert len(listed) == 64
    assert [entry[:4] for entry in listed[:2]] == [(version(4), "cached", "failed", 0), (version(3), "fetching",
                                                                                          "unknown", 7)]
    assert [entry[0] for entry in listed[2:5]] == [version(99), version(98), version(97)]   # most recent next
    reason = listed[0][4]
    assert len(reason) <= p.MAX_CACHED_REASON and reason.isprintable() and reason.startswith("its environment")


def test_an_unchanged_list_is_left_out_until_every_resend_every_th_heartbeat_and_an_emptied_one_is_sent_empty():
    report = CacheReport()
    assert report.snapshot() is None   # nothing ever held: nothing to say
    report.set(version(1), "fetching")
    assert [entry[0] for entry in report.snapshot()] == [version(1)]
    assert [report.snapshot() for _ in range(RESEND_EVERY - 1)] == [None] * (RESEND_EVERY - 1)
    assert report.snapshot() is not None   # told again: a master may have started since
    report.synced(version(1), 3)
    assert report.snapshot()[0][3] == 3
    report.forget_syncs()                  # a new master incarnation: seqs mean nothing to it
    assert report.snapshot()[0][3] == 0
    report.drop(version(1))
    assert report.snapshot() == [] and beat([]).projects == []
    assert report.snapshot() is None


def test_a_failure_is_told_by_its_first_line_and_the_end_of_the_installers_words():
    why = "its environment could not be built: uv pip install exited with code 1\n$ uv venv ...\n" + \
          "\n".join(f"line {n}" for n in range(100)) + "\nBecause zgdemo was not found, it is unsatisfiable."
    said = brief(why)
    assert said.startswith("its environment could not be built: uv pip install exited with code 1 ... ")
    assert said.endswith("zgdemo was not found, it is unsatisfiable.") and len(said) <= p.MAX_CACHED_REASON
    assert brief("one line") == "one line"
