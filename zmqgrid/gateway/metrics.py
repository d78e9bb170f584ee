"""`/metrics`: the cluster in Prometheus's text format, rendered by prometheus-client from the master's `metrics`
answer (docs/architecture.md, "Metrics")."""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Callable, Iterable, Iterator

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from ..errors import MasterUnavailable
from ..model import DeviceState
from .routing import SETTINGS, UPSTREAM, Role, add

logger = logging.getLogger(__name__)

DEVICE_FIGURES = (("cpu_percent", "device_cpu_percent", "CPU use of the device's machine, percent"),
                  ("memory_percent", "device_memory_percent", "memory use of the device's machine, percent"),
                  ("disk_percent", "device_disk_percent", "disk use of the device's machine, percent"))


@dataclass
class Reading:
    """The master's `metrics` answer at one moment (`at`, monotonic); `up` False when it did not answer."""

    answer: dict = field(default_factory=dict)
    up: bool = False
    at: float = float("-inf")


class ClusterCollector:
    """Yields the metric families of the latest Reading (the per-device ones as Lazy: built only if changed)."""

    def __init__(self) -> None:
        self.reading = Reading()

    def collect(self) -> Iterator[Metric | Lazy]:
        r = self.reading
        yield _gauge("master_up", "1 when the master answered the gateway's last query, else 0", value=int(r.up))
        if not r.up:
            return
        s = r.answer
        info = GaugeMetricFamily("zmqgrid_master_info", "the master's incarnation (changes at each start)",
                                 labels=["incarnation"])
        info.add_metric([str(s.get("incarnation", ""))], 1)
        yield info
        yield _gauge("master_uptime_seconds", "seconds since the master started", value=s.get("uptime_s", 0))
        tasks = s.get("tasks", {})
        yield _by_label("tasks", "unfinished tasks by state", "state", tasks)
        finished = CounterMetricFamily("zmqgrid_tasks_finished", "tasks that ended, by final state, since the "
                                       "master started (0 again after a restart)", labels=["state"])
        for state, count in sorted((s.get("finished") or {}).items()):
            finished.add_metric([str(state)], _number(count) or 0)
        yield finished
        yield _gauge("queue_depth", "tasks queued, waiting for a worker", value=tasks.get("queued", 0))
        yield _gauge("oldest_queued_task_age_seconds", "seconds since the oldest queued task was submitted "
                     "(0 when none is queued)", value=s.get("oldest_queued_age_s") or 0)
        yield _gauge("stuck_tasks", "queued tasks no online worker can take", value=s.get("stuck_tasks", 0))
        yield _durations(s.get("buckets") or [], s.get("durations") or {})
        yield _by_label("devices", "devices by state", "state", s.get("devices_by_state", {}))
        events = CounterMetricFamily("zmqgrid_events", "the master's own counts since it started", labels=["event"])
        for event, count in sorted((s.get("counters") or {}).items()):
            events.add_metric([str(event)], _number(count) or 0)
        yield events
        yield _counter("bad_messages", "messages the master could not decode, since it started", s.get("bad_messages", 0))
        yield _counter("refused_messages", "messages the master refused (keys, roles), since it started",
                       s.get("refused_messages", 0))
        yield from self._devices(s.get("device_fields") or [], s.get("devices") or [])

    def _devices(self, fields: list, rows: list) -> Iterator[Lazy]:
        at = {name: n for n, name in enumerate(fields)}
        if not {"device_id", "state", "running", "concurrency"} <= at.keys():
            return   # a master that answers rows of another shape: none shown rather than wrong ones
        ids = tuple(str(row[at["device_id"]]) for row in rows)

        def column(key: str, value=_number) -> tuple:
            i = at.get(key)
            return tuple(value(row[i]) for row in rows) if i is not None else (None,) * len(rows)
        # An offline device's last figures are not live: the master gives none, and no sample is shown for it.
        for name, doc, values in (
                ("device_up", "1 when the device is online or draining", column("state", lambda s: int(s in LIVE))),
                ("device_running_tasks", "tasks running on the device", column("running", _zero)),
                ("device_concurrency", "tasks the device runs at once", column("concurrency", _zero)),
                *((name, doc, column(key)) for key, name, doc in DEVICE_FIGURES)):
            yield Lazy(f"zmqgrid_{name}", (ids, values), partial(_per_device, f"zmqgrid_{name}", doc, ids, values))


def _per_device(name: str, doc: str, ids: tuple, values: tuple) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=["device"])
    for device, value in zip(ids, values):
        if value is not None:
            family.add_metric([device], value)
    return family


def _zero(value: object) -> float:
    return _number(value) or 0.0


@dataclass(frozen=True)
class Lazy:
    """A family built (by `build`) only when `key`, the values it shows, differs from the last reading's."""

    name: str
    key: tuple
    build: Callable[[], Metric]


LIVE = (DeviceState.ONLINE, DeviceState.DRAINING)


def _durations(bounds: list, by_name: dict) -> HistogramMetricFamily:
    """The master's cumulative bucket counts per task name ([count <= bound ..., count of all, sum])."""
    family = HistogramMetricFamily("zmqgrid_task_duration_seconds", "run time of tasks that ended done, by task "
                                   "name (the first 50 names; any later one under \"other\"), since the master "
                                   "started", labels=["name"])
    les = [_le(b) for b in bounds] + ["+Inf"]
    for name, row in sorted(by_name.items()):
        if isinstance(row, list) and len(row) == len(les) + 1:
            family.add_metric([str(name)], list(zip(les, row[:-1])), sum_value=_number(row[-1]) or 0)
    return family


def _le(bound: object) -> str:
    return repr(float(bound)) if isinstance(bound, (int, float)) else str(bound)


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"zmqgrid_{name}", doc, value=_number(value) or 0)


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(f"zmqgrid_{name}", doc, value=_number(value) or 0)


def _by_label(name: str, doc: str, label: str, counts: dict) -> GaugeMetricFamily:
    family = GaugeMetricFamily(f"zmqgrid_{name}", doc, labels=[label])
    for key, count in sorted(counts.items()):
        family.add_metric([str(key)], _number(count) or 0)
    return family


class _One:
    """A registry of one family, for prometheus-client's generate_latest."""

    def __init__(self, family: Metric) -> None:
        self.family = family

    def collect(self) -> list[Metric]:
        return [self.family]


class FamilyTexts:
    """The exposition text of each family, rendered by prometheus-client's generate_latest and kept while the
    family's samples stay the same. Most per-device families (up, running, concurrency, disk) change seldom between
    readings, and rendering is most of a reading's cost (about 5 us a sample): only the families that changed are
    rendered again. Families come in the collector's order, each whole (HELP, TYPE, then its samples)."""

    def __init__(self) -> None:
        self.kept: dict[str, tuple[tuple, bytes]] = {}

    def render(self, families: Iterable[Metric | Lazy]) -> bytes:
        kept, out = {}, []
        for family in families:
            if isinstance(family, Lazy):
                key = family.key
            else:
                key = tuple((s.name, tuple(s.labels.values()), s.value) for s in family.samples)
            hit = self.kept.get(family.name)
            if hit is not None and hit[0] == key:
                text = hit[1]
            else:
                text = generate_latest(_One(family.build() if isinstance(family, Lazy) else family))
            kept[family.name] = (key, text)
            out.append(text)
        self.kept = kept
        return b"".join(out)


class Metrics:
    """The collector, the reading behind it and its rendered text. Rendering 1,000 devices' samples takes
    prometheus-client tens of ms, so it is done once per reading, on a pool thread with the query (never on the
    event loop, which serves the other requests).

    On demand (`refresh_s` 0): a scrape asks the master when the last reading is `max_age_s` old or more, so the
    master answers one `metrics` query per scrape interval whatever the number of scrapers. In the background
    (`refresh_s` > 0): a reading is taken every `refresh_s` from the gateway's start and a scrape never waits on the
    master (its figures are up to `refresh_s` plus one reading old), at one query per `refresh_s`.
    """

    def __init__(self, max_age_s: float, refresh_s: float = 0.0) -> None:
        self.max_age_s = max_age_s
        self.refresh_s = refresh_s
        self.collector = ClusterCollector()
        self.texts = FamilyTexts()
        self.lock = asyncio.Lock()
        self.body = b""

    def _read_and_render(self, client) -> bytes:
        t0 = time.perf_counter()
        try:
            self.collector.reading = Reading(client.metrics(), True, time.monotonic())
            t1 = time.perf_counter()
        except MasterUnavailable:
            self.collector.reading = Reading(at=time.monotonic())
            raise
        finally:
            t2 = time.perf_counter()
            self.body = self.render()
        logger.debug("metrics reading query_ms=%.1f render_ms=%.1f bytes=%d", (t1 - t0) * 1000,
                     (time.perf_counter() - t2) * 1000, len(self.body))
        return self.body

    def render(self) -> bytes:
        return self.texts.render(self.collector.collect())

    async def text(self, upstream) -> bytes:
        """The exposition text of the latest reading: in the background mode the one at hand (once there is one),
        else one at most `max_age_s` old."""
        if self.refresh_s > 0 and self.body:
            return self.body
        async with self.lock:   # scrapes that come together share one reading
            if time.monotonic() - self.collector.reading.at >= self.max_age_s:
                try:
                    await upstream.call(self._read_and_render)
                except MasterUnavailable:
                    pass   # rendered as master_up 0
            return self.body


    async def keep_fresh(self, upstream) -> None:
        """The background mode's loop: a reading every `refresh_s` until cancelled."""
        while True:
            async with self.lock:
                try:
                    await upstream.call(self._read_and_render)
                except MasterUnavailable:
                    pass
                except Exception:
                    logger.exception("reading the master for /metrics failed")
            await asyncio.sleep(self.refresh_s)


METRICS = web.AppKey("metrics", Metrics)
REFRESHER = web.AppKey("metrics_refresher", asyncio.Task)


async def metrics(request: web.Request) -> web.Response:
    body = await request.app[METRICS].text(request.app[UPSTREAM])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _start_refresher(app: web.Application) -> None:
    app[REFRESHER] = asyncio.get_running_loop().create_task(app[METRICS].keep_fresh(app[UPSTREAM]))


async def _stop_refresher(app: web.Application) -> None:
    app[REFRESHER].cancel()
    try:
        await app[REFRESHER]
    except asyncio.CancelledError:
        pass


def add_routes(app: web.Application) -> None:
    settings = app[SETTINGS]
    app[METRICS] = Metrics(settings.metrics_max_age_s, settings.metrics_refresh_s)
    if settings.metrics_refresh_s > 0:
        app.on_startup.append(_start_refresher)
        app.on_cleanup.insert(0, _stop_refresher)   # before the Upstream's threads are closed
    add(app, "GET", "/metrics", Role.READ, metrics, "The cluster in Prometheus text format",
        content="text/plain")
