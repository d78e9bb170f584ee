"""Parking lots in-process, on the master's own records: what a ready worker takes from a lot, where a lot is filed,
and that a lot whose worker never comes does not keep the tasks cancelled in it."""
from __future__ import annotations

from zmqgrid.master.entries import DeviceEntry, Requirements, TaskEntry
from zmqgrid.master.parking import Parking


class Queued:
    """The tasks a test has queued, by id, and the generation each is queued under (as Cluster keeps them)."""

    def __init__(self) -> None:
        self.tasks: dict[str, TaskEntry] = {}
        self.needs = Requirements()

    def live(self, task_id: str, gen: int) -> bool:
        entry = self.tasks.get(task_id)
        return entry is not None and entry.gen == gen

    def add(self, n: int, tags: list[str], priority: int = 0, device: str | None = None) -> list[TaskEntry]:
        out = []
        for _ in range(n):
            seq = len(self.tasks) + 1
            entry = TaskEntry(f"t{seq}", {"kind": "python"}, self.needs.get("python", device, tags), priority, 0,
                              None, seq=seq, gen=1)
            self.tasks[entry.id] = entry
            out.append(entry)
        return out


def ready(device_id: str, credit: int, *tags: str) -> DeviceEntry:
    return DeviceEntry(device_id, device_id.encode(), registered=True, credit=credit, tags=frozenset(tags))


def test_a_ready_worker_takes_from_a_lot_it_meets_at_most_its_credit_best_first():
    queued = Queued()
    parking = Parking(queued.live)
    low = queued.add(3, ["gpu"], priority=0)
    high = queued.add(3, ["gpu"], priority=5)
    for entry in low + high:
        parking.park(entry, {})

    assert parking.wake([ready("plain", 10)]) == []   # meets nothing: looks at nothing filed under gpu
    assert parking.wake([ready("g1", 2, "gpu")]) == [high[0].id, high[1].id]
    assert parking.wake([ready("g1", 10, "gpu", "other")]) == [high[2].id] + [e.id for e in low]
    assert not parking


def test_a_lot_is_filed_under_the_tag_the_fewest_online_workers_have_or_the_device_it_names():
    queued = Queued()
    parking = Parking(queued.live)
    online = {f"g{i}": ready(f"g{i}", 0, "gpu") for i in range(3)}
    parking.park(queued.add(1, ["gpu", "nosuch"])[0], online)
    parking.park(queued.add(1, ["gpu"], device="ghost")[0], online)
    assert {what: set(filed) for what, filed in parking.filed.items()} == {"tag": {"nosuch"}, "device": {"ghost"},
                                                                          "kind": set()}
    # A gpu worker does not meet the first (it lacks nosuch) nor the second (it is not ghost): nothing comes out
    assert parking.wake([ready("g1", 5, "gpu")]) == []
    assert len(parking.lots) == 2


def test_the_tasks_cancelled_in_a_lot_no_worker_empties_are_dropped_from_it():
    queued = Queued()
    parking = Parking(queued.live)
    entries = queued.add(1000, ["nosuch"])
    for entry in entries:
        parking.park(entry, {})
    # When all but the last are cancelled (Cluster.finish tells the parking)
    for entry in entries[:-1]:
        del queued.tasks[entry.id]
        parking.dropped(entry.need)
    # Then the lot holds no more than twice its live tasks; and once the last goes, no lot is left
    assert len(parking) <= 2
    del queued.tasks[entries[-1].id]
    parking.dropped(entries[-1].need)
    assert not parking and parking.filed == {"device": {}, "tag": {}, "kind": {}}


def test_lots_filed_under_one_key_are_each_woken_by_the_worker_that_meets_them_and_then_unfiled():
    queued = Queued()
    parking = Parking(queued.live)
    ax, ay = queued.add(1, ["a", "x"])[0], queued.add(1, ["a", "y"])[0]
    parking.park(ax, {})   # nobody has a, x or y: both are filed under a, the first of them
    parking.park(ay, {})
    assert list(parking.filed["tag"]) == ["a"]

    assert parking.wake([ready("wy", 1, "a", "y")]) == [ay.id]
    assert parking.filed["tag"] == {"a": ax.need}
    assert parking.wake([ready("wx", 1, "a", "x")]) == [ax.id]
    assert not parking and parking.filed == {"device": {}, "tag": {}, "kind": {}}
