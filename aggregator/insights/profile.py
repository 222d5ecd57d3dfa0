"""What one complete request says: queries, time in DB/cache/external calls, and N+1 findings.

Pure functions over ``TraceRecord`` values, so that the run's analyzer, the tests and the report agree.

Time in a kind of call is the sum of the durations of the request's calls of that kind, capped at the
request's own duration. Sequential calls (the normal case in a Django view) are counted exactly; calls
that run in parallel (threads, async gather) can add up to more than the request's wall time, and the cap
keeps each share at or below 100%. The shares of different kinds are capped separately, so DB + cache +
external may exceed 100% when calls of different kinds overlap. Interval unions are not used on purpose:
event timestamps have millisecond resolution, and sub-millisecond queries ending in the same millisecond
would look overlapping and be undercounted.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from aggregator.insights.records import TraceRecord, query_fingerprint

CHILD_KINDS = ("db", "cache", "external")


@dataclass(frozen=True, slots=True)
class Finding:
    """One N+1 pattern in one request: the same query fingerprint run ``executions`` times."""

    route: str
    method: str
    fingerprint: str
    text: str
    table: str
    executions: int
    time_ms: float
    trace_id: str
    end: float  # the request's end time (epoch seconds)


@dataclass(slots=True)
class RequestProfile:
    request: TraceRecord
    queries: int = 0
    time_ms: dict[str, float] = field(default_factory=dict)  # kind -> capped time in that kind of call
    findings: list[Finding] = field(default_factory=list)


def profile_request(request: TraceRecord, children: Iterable[TraceRecord], threshold: int) -> RequestProfile:
    """Analyse one request and the db/cache/external operations of its trace (other kinds are ignored)."""
    raw = dict.fromkeys(CHILD_KINDS, 0.0)
    by_fingerprint: dict[str, list[TraceRecord]] = {}
    queries = 0
    for child in children:
        kind = child.kind
        if kind not in raw:
            continue
        raw[kind] += child.duration_ms
        if kind == "db":
            queries += 1
            # Without a fingerprint the text stands in for it; a query with neither cannot be grouped.
            key = child.name or child.detail
            if key:
                by_fingerprint.setdefault(key, []).append(child)
    cap = request.duration_ms
    profile = RequestProfile(request, queries, {k: min(v, cap) for k, v in raw.items()})
    if threshold > 0:
        for fingerprint, runs in by_fingerprint.items():
            if len(runs) >= threshold:
                first = runs[0]
                profile.findings.append(Finding(
                    route=request.name or "",
                    method=request.detail or "",
                    fingerprint=first.name or query_fingerprint(fingerprint),
                    text=first.detail or "",
                    table=first.extra or "",
                    executions=len(runs),
                    time_ms=sum(r.duration_ms for r in runs),
                    trace_id=request.trace_id,
                    end=request.end,
                ))
    return profile


def descendants(root: TraceRecord, records: Iterable[TraceRecord]) -> list[TraceRecord]:
    """The records below ``root`` by parent-span links (any depth), in their original order."""
    items = list(records)
    below = {root.span_id} if root.span_id else set()
    changed = True
    claimed = [False] * len(items)
    while changed:  # a few passes at most: traces are shallow
        changed = False
        for i, rec in enumerate(items):
            if not claimed[i] and rec.parent_span_id and rec.parent_span_id in below:
                claimed[i] = True
                if rec.span_id:
                    below.add(rec.span_id)
                changed = True
    return [rec for i, rec in enumerate(items) if claimed[i]]
