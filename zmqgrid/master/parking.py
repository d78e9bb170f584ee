"""Queued tasks that no ready worker can take, held by requirement until a worker that meets it has room
(docs/architecture.md, "Tasks no worker can take")."""
from __future__ import annotations

from collections import Counter
from typing import Callable, Iterable

from ..model import TASK_KINDS, DeviceState
from ..protocol import NO_KIND_TAG
from .entries import DeviceEntry, Requirement, TaskEntry
from .taskqueue import TaskQueue

_KIND_REFUSALS = tuple((kind, NO_KIND_TAG + kind) for kind in TASK_KINDS)


class Lot(TaskQueue):
    """The tasks parked on one requirement, and where the lot is filed."""

    __slots__ = ("where", "drops")

    def __init__(self, live: Callable[[str, int], bool], where: tuple[str, str]) -> None:
        super().__init__(live)
        self.where = where
        self.drops = 0   # queued tasks of its requirement that ended since it was last pruned


class Parking:
    """One lot (a TaskQueue: priority, FIFO and aging inside it) per requirement, filed under a key that only a
    worker able to meet it can have: the device it names, its tag the fewest online workers have, or its kind.

    Each dispatch turn, `wake` lets every ready worker look up the lots filed under its device id, its tags and the
    kinds it runs, and take from each lot it meets as many tasks as it has credit. A lot no ready worker files
    under is not looked at: its tasks cost nothing per turn however many they are."""

    def __init__(self, live: Callable[[str, int], bool]) -> None:
        self.live = live
        self.lots: dict[Requirement, Lot] = {}
        # what ("device", "tag", "kind") -> value -> the lot filed under it, or a set of them when several are:
        # most keys hold one lot, and a set costs 200 bytes (a client can make a lot per task by giving each its own
        # tag). Apart by what, so that a ready worker looks up only what it could match (see wake).
        self.filed: dict[str, dict[str, Requirement | set[Requirement]]] = {"device": {}, "tag": {}, "kind": {}}
        # Per tag, the online workers that have it: counted when a lot is filed, once per dispatch turn (wake, the
        # turn's start, forgets it; so does the parking when it empties, as then no turn calls wake).
        self.online_tags: Counter | None = None
        self.parked = 0     # tasks put into a lot (a counter, for status and tests)
        self.woken = 0      # tasks taken back out for the queue

    def __bool__(self) -> bool:
        return bool(self.lots)

    def park(self, entry: TaskEntry, devices: dict[str, DeviceEntry]) -> None:
        """Out of the queue into its requirement's lot (`devices`: the master's, to file a new lot by)."""
        need = entry.need
        lot = self.lots.get(need)
        if lot is None:
            lot = self.lots[need] = Lot(self.live, self._file_key(need, devices))
            what, value = lot.where
            filed = self.filed[what]
            there = filed.get(value)
            if there is None:
                filed[value] = need
            elif isinstance(there, set):
                there.add(need)
            else:
                filed[value] = {there, need}
        lot.push(entry.priority, entry.seq, entry.gen, entry.id)
        self.parked += 1

    def _file_key(self, need: Requirement, devices: dict[str, DeviceEntry]) -> tuple[str, str]:
        if need.device:
            return ("device", need.device)
        if need.tags:
            have = self.online_tags
            if have is None:
                have = self.online_tags = Counter(tag for d in devices.values() if d.registered
                                                  and d.state == DeviceState.ONLINE for tag in d.tags)
            return ("tag", min(need.tags, key=lambda tag: (have[tag], tag)))
        return ("kind", need.kind)

    def wake(self, ready: Iterable[DeviceEntry]) -> list[str]:
        """Ids of parked tasks that ready workers meet: at most a worker's credit from each lot it meets, best
        first. The caller puts them back into the queue at their old place.

        It runs every dispatch turn while tasks are parked, for every ready worker: a worker with nothing filed
        under its id, tags or kinds costs a few checks (1,000 ready workers: ~0.1 ms)."""
        out: list[str] = []
        self.online_tags = None
        by_device, by_tag, by_kind = self.filed["device"], self.filed["tag"], self.filed["kind"]
        tag_keys = by_tag.keys()
        for device in ready:
            tags = device.tags
            if by_device and device.device_id in by_device:
                self._wake_from(by_device[device.device_id], device, out)
            if tags and by_tag and not tag_keys.isdisjoint(tags):
                for tag in tags:
                    if tag in by_tag:
                        self._wake_from(by_tag[tag], device, out)
            if by_kind:
                for kind, refusal in _KIND_REFUSALS:
                    if kind in by_kind and refusal not in tags:
                        self._wake_from(by_kind[kind], device, out)
        self.woken += len(out)
        return out

    def _wake_from(self, there: Requirement | set[Requirement], device: DeviceEntry, out: list[str]) -> None:
        if not isinstance(there, set):   # a Requirement is a tuple: iterating it would give its fields
            there = {there}
        for need in [n for n in there if n.met_by(device)]:   # a copy: taking may close a lot
            self._take(need, device.credit, out)

    def _take(self, need: Requirement, count: int, out: list[str]) -> None:
        lot = self.lots[need]
        for _ in range(count):
            task_id = lot.pop()
            if task_id is None:
                break
            out.append(task_id)
        if not lot:   # empty, or only stale items were left (cancelled or re-queued tasks): the lot goes
            self._close(need)

    def dropped(self, need: Requirement) -> None:
        """A queued task of `need` ended (cancelled), maybe in its lot. A lot whose worker never comes is never
        popped, so its stale items would stay: once as many tasks ended as half the lot holds, it is pruned (a walk
        of the lot for every half of it that ended: constant per task)."""
        lot = self.lots.get(need)
        if lot is None:
            return
        lot.drops += 1
        if 2 * lot.drops >= len(lot):
            lot.drops = 0
            lot.prune()
            if not lot:
                self._close(need)

    def _close(self, need: Requirement) -> None:
        what, value = self.lots.pop(need).where
        if not self.lots:
            self.online_tags = None
        filed = self.filed[what]
        there = filed[value]
        if isinstance(there, set):
            there.discard(need)
            if len(there) == 1:
                filed[value] = there.pop()
        else:
            del filed[value]

    def __len__(self) -> int:
        """Items held, stale ones included: an upper bound of parked tasks."""
        return sum(len(lot) for lot in self.lots.values())
