"""The no-op task of tools/bench_peers.py, for Dramatiq and Celery (optional extra `peers`; not used by the tests).

Imported by the peers' worker processes (`dramatiq peer_jobs`, `celery -A peer_jobs worker`, with this folder on
PYTHONPATH) and by the benchmark's client. Both read the Redis address from ZG_PEERS_REDIS_URL
(redis://127.0.0.1:PORT, the redis-server that bench_peers.py started) and use separate databases:
Dramatiq broker 0 and results 1, Celery broker 2 and results 3.

Each system is configured as its documentation shows, with its defaults: Dramatiq's RedisBroker with the Results
middleware (the client blocks on `message.get_result`), Celery with the Redis broker and result backend (JSON,
acks before running, prefetch multiplier 4). Neither logs anything per task at the log level the benchmark starts it with (Dramatiq INFO, Celery WARNING).
"""
from __future__ import annotations

import os

REDIS_URL = os.environ.get("ZG_PEERS_REDIS_URL", "redis://127.0.0.1:6379")


def noop(x=None):
    """The same no-op as zmqgrid.samples:noop."""
    return x


# ------------------------------------------------------------------------------------------------ Dramatiq

try:
    import dramatiq
    from dramatiq.brokers.redis import RedisBroker
    from dramatiq.results import Results
    from dramatiq.results.backends import RedisBackend
except ImportError:  # the extra is not installed; bench_peers.py says so before importing this module
    dramatiq = None

if dramatiq is not None:
    dramatiq_results = RedisBackend(url=f"{REDIS_URL}/1")
    dramatiq_broker = RedisBroker(url=f"{REDIS_URL}/0")
    dramatiq_broker.add_middleware(Results(backend=dramatiq_results))
    dramatiq.set_broker(dramatiq_broker)

    @dramatiq.actor(store_results=True, max_retries=0, queue_name="zg_bench")
    def dramatiq_noop(x=None):
        return x


# ------------------------------------------------------------------------------------------------ Celery

try:
    from celery import Celery
except ImportError:
    Celery = None

if Celery is not None:
    app = Celery("peer_jobs", broker=f"{REDIS_URL}/2", backend=f"{REDIS_URL}/3")
    app.conf.update(
        broker_connection_retry_on_startup=True,   # only silences a deprecation warning at start-up
        task_default_queue="zg_bench",
    )

    @app.task(name="peer_jobs.celery_noop")
    def celery_noop(x=None):
        return x
