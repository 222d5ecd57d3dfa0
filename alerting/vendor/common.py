"""What the vendors' monitors and dashboards share: the standard dashboard's panels and apply results."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

MANAGED_TAG = "managed-by:logapm"
Aggregation = Literal["avg", "max", "sum"]


class VendorError(RuntimeError):
    """An API call of a vendor failed; the message is scrubbed of secrets."""


@dataclass(frozen=True, slots=True)
class Series:
    metric: str  # without prefix, e.g. "request.duration.p95"
    aggregation: Aggregation = "avg"
    by: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Panel:
    title: str
    series: tuple[Series, ...]


def standard_panels() -> list[Panel]:
    """The standard dashboard: latency percentiles by route, throughput, error rate, DB, cache, external
    services, tasks and queue depth. Names are the catalog's (checked in the tests)."""
    return [
        Panel("Request latency p50 / p95 / p99 by route (ms)", (
            Series("request.duration.p50", "avg", ("route",)),
            Series("request.duration.p95", "avg", ("route",)),
            Series("request.duration.p99", "avg", ("route",)),
        )),
        Panel("Throughput (requests per window)", (Series("request.count", "sum"),)),
        Panel("Error rate by route", (Series("request.error_rate", "avg", ("route",)),)),
        Panel("Apdex", (Series("request.apdex", "avg"),)),
        Panel("DB query p95 by table (ms)", (Series("db.query.duration.p95", "avg", ("table",)),)),
        Panel("DB queries and slow queries", (Series("db.query.count", "sum"), Series("db.query.slow", "sum"))),
        Panel("DB pool utilization", (Series("db.pool.utilization.max", "max", ("db",)),)),
        Panel("Cache hit rate by cache", (Series("cache.hit_rate", "avg", ("cache",)),)),
        Panel("External services p95 (ms)", (Series("external.duration.p95", "avg", ("peer_service",)),)),
        Panel("External error rate", (Series("external.error_rate", "avg", ("peer_service",)),)),
        Panel("Task duration p95 by task (ms)", (Series("task.duration.p95", "avg", ("task",)),)),
        Panel("Task runs and failures", (Series("task.count", "sum"), Series("task.failures", "sum"))),
        Panel("Queue depth", (Series("task.queue.depth.max", "max", ("queue",)),)),
        Panel("Queue wait p95 (ms)", (Series("task.queue_wait.p95", "avg", ("queue",)),)),
    ]


@dataclass(slots=True)
class ApplyReport:
    """What an apply did, per object: created, updated or unchanged (by name)."""

    vendor: str
    kind: str
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)

    @property
    def changes(self) -> int:
        return len(self.created) + len(self.updated)

    def lines(self) -> list[str]:
        out = [f"{self.vendor} {self.kind}: {len(self.created)} created, {len(self.updated)} updated, "
               f"{len(self.unchanged)} unchanged"]
        out += [f"  created {n}" for n in self.created] + [f"  updated {n}" for n in self.updated]
        return out


def subset_equal(desired: Any, actual: Any) -> bool:
    """Whether ``actual`` holds everything ``desired`` says (extra keys the vendor adds are ignored;
    lists compare element-wise; numbers compare as numbers)."""
    if isinstance(desired, dict):
        return isinstance(actual, dict) and all(subset_equal(v, actual.get(k)) for k, v in desired.items())
    if isinstance(desired, list | tuple):
        return (isinstance(actual, list | tuple) and len(desired) == len(actual)
                and all(subset_equal(d, a) for d, a in zip(desired, actual, strict=True)))
    if isinstance(desired, bool) or isinstance(actual, bool):
        return desired is actual
    if isinstance(desired, int | float) and isinstance(actual, int | float):
        return float(desired) == float(actual)
    return bool(desired == actual)


def minutes(seconds: int) -> int:
    return max(1, round(seconds / 60))


def sorted_tags(tags: Sequence[str]) -> list[str]:
    return sorted(set(tags))
