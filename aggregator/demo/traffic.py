"""The demo's traffic: a plan of requests at event times, and a driver that replays it through Django.

The plan is a pure function of its seed: arrival times spread over the span (a gentle wave, like a day's
traffic in miniature), each request picking an endpoint by weight and a story by popularity (a few
stories get most of the reads, so the cache has a realistic hit rate).

The driver sends the requests in event-time order through Django's test client (the full middleware and
view stack, in this process) from a small thread pool, each request on the clock of its scheduled time
(``aggregator.demo.clock``).
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field

from aggregator.demo import clock

# endpoint label -> (weight, method, path template)
ENDPOINTS: dict[str, tuple[float, str, str]] = {
    "story": (0.34, "GET", "/api/stories/{story}/"),
    "like": (0.10, "POST", "/api/stories/{story}/like/"),
    "feed": (0.16, "GET", "/api/feed/"),
    "search": (0.14, "GET", "/api/search/?q={word}"),
    "checkout": (0.12, "POST", "/api/checkout/?story={story}"),
    "export": (0.14, "GET", "/api/reports/export/"),
}
_WORDS = ("river", "glass", "night", "ember", "atlas", "echo", "winter", "signal")


@dataclass(frozen=True, slots=True)
class Call:
    at: float  # event time the request starts
    endpoint: str
    method: str
    path: str


def plan(n: int, start: float, end: float, *, stories: int, seed: int = 7) -> list[Call]:
    """``n`` requests between ``start`` and ``end`` (epoch seconds), in time order."""
    rng = random.Random(seed)
    span = end - start
    times: list[float] = []
    while len(times) < n:  # rejection sampling of a wave: busier in the middle of the span
        x = rng.random()
        if rng.random() < 0.75 + 0.25 * math.sin(math.pi * x):
            times.append(start + x * span)
    times.sort()
    names = list(ENDPOINTS)
    weights = [ENDPOINTS[k][0] for k in names]
    popularity = [1.0 / (i + 1) ** 1.3 for i in range(stories)]
    ids = list(range(1, stories + 1))
    calls = []
    for t in times:
        name = rng.choices(names, weights)[0]
        _, method, template = ENDPOINTS[name]
        path = template.format(story=rng.choices(ids, popularity)[0], word=rng.choice(_WORDS))
        calls.append(Call(t, name, method, path))
    return calls


@dataclass(slots=True)
class DriveResult:
    sent: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    by_endpoint: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)  # requests the client itself could not make
    elapsed: float = 0.0


Progress = Callable[[int, int, Call, DriveResult], None]


def drive(calls: Sequence[Call], *, threads: int = 8, on_progress: Progress | None = None) -> DriveResult:
    """Send every call through the Django stack; returns what came back. Call inside ``clock.shifted_clock``."""
    from django.db import connections
    from django.test import Client

    local = threading.local()
    result = DriveResult()

    def send(call: Call) -> int:
        client = getattr(local, "client", None)
        if client is None:
            client = local.client = Client(raise_request_exception=False)
        with clock.at(call.at):
            response = client.generic(call.method, call.path)
        return int(response.status_code)

    def close_connections() -> None:
        connections.close_all()

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="demo-traffic") as pool:
        futures = {pool.submit(send, call): call for call in calls}
        for done, future in enumerate(as_completed(futures), start=1):
            call = futures[future]
            try:
                status = future.result()
            except Exception as exc:  # the test client raised: a bug in the demo, shown, not hidden
                result.failures.append(f"{call.method} {call.path}: {type(exc).__name__}: {exc}")
                status = 0
            result.sent += 1
            result.statuses[status] += 1
            result.by_endpoint[call.endpoint] += 1
            if on_progress is not None:
                on_progress(done, len(calls), call, result)
        # Each worker thread holds its own database connection; close what can be reached.
        for f in [pool.submit(close_connections) for _ in range(threads)]:
            f.result()
    result.elapsed = time.perf_counter() - started
    return result
