"""Run as a script by test_samplers.py: Django on the real PostgreSQL with a psycopg pool, under load.

Prints one JSON object: the utilization seen in each phase and the metric events emitted. A separate
process, so that its Django settings never meet another test's.
"""

from __future__ import annotations

import json
import sys
import threading
import time

import django
from django.conf import settings

MAX_SIZE = 5

settings.configure(
    DATABASES={
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": "test",
            "USER": "postgres",
            "HOST": "127.0.0.1",
            "PORT": "5432",
            "OPTIONS": {"pool": {"min_size": 1, "max_size": MAX_SIZE, "timeout": 30}},
        }
    },
    INSTALLED_APPS=[],
    USE_TZ=True,
)
django.setup()

from django.db import connection  # noqa: E402

from logging_apm import samplers  # noqa: E402
from logging_apm.testing import capture_events  # noqa: E402


def utilization() -> float:
    pools = samplers.django_pools()
    return samplers.pool_utilization(pools["default"])


def settled() -> float:
    """Utilization once returned connections are back in the pool (the pool may finish that in its own
    worker thread after close() returns)."""
    deadline = time.monotonic() + 10
    value = utilization()
    while value > 0 and time.monotonic() < deadline:
        time.sleep(0.02)
        value = utilization()
    return value


def hold(n: int) -> float:
    """n threads each take a connection and keep it; sample while all are held."""
    settled()
    ready = threading.Barrier(n + 1)
    release = threading.Event()

    def worker() -> None:
        with connection.cursor() as cur:
            cur.execute("SELECT 1")
        ready.wait()
        release.wait()
        connection.close()  # returns it to the pool

    threads = [threading.Thread(target=worker) for _ in range(n)]
    for t in threads:
        t.start()
    ready.wait()
    seen = utilization()
    release.set()
    for t in threads:
        t.join()
    return seen


def load(threads: int, queries: int) -> tuple[float, int]:
    """`threads` threads run short queries through a pool of MAX_SIZE; the max utilization sampled."""
    stop = threading.Event()
    peak = [0.0]
    samples = [0]

    def sampler() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], utilization())
            samples[0] += 1
            time.sleep(0.005)

    def worker() -> None:
        for _ in range(queries):
            with connection.cursor() as cur:
                cur.execute("SELECT pg_sleep(0.02)")
            connection.close()

    s = threading.Thread(target=sampler)
    s.start()
    ws = [threading.Thread(target=worker) for _ in range(threads)]
    for w in ws:
        w.start()
    for w in ws:
        w.join()
    stop.set()
    s.join()
    return peak[0], samples[0]


def main() -> None:
    with connection.cursor() as cur:  # opens the pool
        cur.execute("SELECT 1")
    connection.close()
    out: dict[str, object] = {"idle": settled()}
    out["held_4"] = hold(4)
    out["held_5"] = hold(5)
    out["load_peak"], out["load_samples"] = load(threads=8, queries=15)
    out["after"] = settled()
    settled()
    with capture_events() as events:
        release = threading.Event()
        ready = threading.Barrier(5)

        def worker() -> None:
            with connection.cursor() as cur:
                cur.execute("SELECT 1")
            ready.wait()
            release.wait()
            connection.close()

        ts = [threading.Thread(target=worker) for _ in range(4)]
        for t in ts:
            t.start()
        ready.wait()
        samplers.sample_once()  # the in-process sampler: pools only (no broker given)
        release.set()
        for t in ts:
            t.join()
    out["events"] = list(events)
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
