"""What one complete request says: queries, time in DB/cache/external calls, and N+1 findings.

Pure functions over a request and the summed operations of its trace (``partials.OpenTrace``), so that
the run's analyzer, the tests and the report agree.

Time in a kind of call is the sum of the durations of the request's calls of that kind, capped at the
request's own duration. Sequential calls (the normal case in a Django view) are counted exactly; calls
that run in parallel (threads, async gather) can add up to more than the request's wall time, and the cap
keeps each share at or below 100%. The shares of different kinds are capped separately, so DB + cache +
external may exceed 100% when calls of different kinds overlap. Interval unions are not used on purpose:
event timestamps have millisecond resolution, and sub-millisecond queries ending in the same millisecond
would look overlapping and be undercounted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aggregator.insights.partials import OpenTrace, RequestInfo

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
    trace_id: str
    route: str
    method: str
    end: float
    duration_ms: float
    failed: bool  # failure outcome or a 5xx answer
    queries: int = 0
    time_ms: dict[str, float] = field(default_factory=dict)  # kind -> capped time in that kind of call
    findings: list[Finding] = field(default_factory=list)


def profile_request(trace_id: str, request: RequestInfo, ops: OpenTrace | None, threshold: int
                    ) -> RequestProfile:
    """Analyse one request given the summed operations of its trace (None: it had none)."""
    end, duration, outcome, route, method, status = request
    profile = RequestProfile(trace_id, route or "", method or "", end, duration,
                             outcome == "failure" or (status or 0) >= 500)
    if ops is None:
        profile.time_ms = dict.fromkeys(CHILD_KINDS, 0.0)
        return profile
    profile.queries = ops.queries
    profile.time_ms = {"db": min(ops.db_ms, duration), "cache": min(ops.cache_ms, duration),
                       "external": min(ops.external_ms, duration)}
    if threshold > 0:
        for fingerprint, (executions, time_ms, text, table) in ops.fingerprints.items():
            if executions >= threshold:
                profile.findings.append(Finding(profile.route, profile.method, fingerprint, text or "",
                                                table or "", executions, time_ms, trace_id, end))
    return profile
