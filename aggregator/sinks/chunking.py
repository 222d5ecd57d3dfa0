"""Cut a run of vendor items into requests that each stay under the vendor's size limits.

The limits are on bytes (compressed on the wire, and decompressed), which depend on how well a batch
compresses; so the plan measures exactly (the same encoding the SDK will do) and learns the compression
ratio as it goes: a greedy fill by estimated raw size, a check of the exact sizes, halving when over.
Requests are contiguous ranges of the input, which keeps the items of one window together.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

from aggregator.model import MetricPoint, SinkReport
from aggregator.sinks.base import RequestLimits, VendorSink

# Fill to this share of a limit: the exact check then rarely has to halve a request.
FILL = 0.9
INITIAL_RATIO = 4.0  # raw bytes per wire byte, until the first measurement says otherwise


def plan_requests(
    items: Sequence[Any],
    sizes: Callable[[Sequence[Any]], tuple[int, int]],
    item_size: Callable[[Any], int],
    limits: RequestLimits,
) -> Iterator[tuple[int, int]]:
    """Yield ``(start, end)`` ranges of ``items``, each a request within ``limits``.

    A single item over a limit on its own is still yielded alone: the vendor's 413 then says so, and the
    delivery stage drops it with that reason rather than looping.
    """
    ratio = INITIAL_RATIO
    estimates = [item_size(it) for it in items]
    n = len(items)
    i = 0
    while i < n:
        raw_budget = min(limits.max_raw_bytes, limits.max_wire_bytes * ratio) * FILL
        j = i
        total = 0
        while j < n and (limits.max_items <= 0 or j - i < limits.max_items):
            if j > i and total + estimates[j] > raw_budget:
                break
            total += estimates[j]
            j += 1
        while True:
            wire, raw = sizes(items[i:j])
            if wire > 0:
                ratio = max(1.0, raw / wire)
            if (wire <= limits.max_wire_bytes and raw < limits.max_raw_bytes) or j - i == 1:
                break
            j = i + max(1, (j - i) // 2)
        yield i, j
        i = j


def send_planned(sink: VendorSink, points: Sequence[MetricPoint]) -> SinkReport:
    """``Sink.send`` for a vendor sink: prepare, cut into requests, send each once (no retry, no split)."""
    prepared = sink.prepare(points)
    report = SinkReport(dropped=dict(prepared.dropped))
    size = getattr(sink, "item_size", None) or (lambda item: len(repr(item)))
    for lo, hi in plan_requests(prepared.items, sink.sizes, size, sink.request_limits):
        sink.send_items(prepared.items[lo:hi])
        report.requests += 1
        report.sent += hi - lo
    return report
