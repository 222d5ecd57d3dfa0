"""The delivery stage of a run: the outbox's pending windows -> each sink, as the vendors' APIs demand.

For each sink (``aggregator.sinks.build_sinks``), after the run's commit:

1. take the entries due (``Outbox.pending``), oldest window first;
2. leave out the points the vendor would drop for age (Datadog: older than 1 h or more than 10 min ahead;
   New Relic: older than 48 h or more than 24 h ahead), counting them; an entry with nothing left is
   ``dropped`` with that reason;
3. check and normalise names, tags and attributes (``aggregator.sinks.validate``), counting what was cut;
4. cut the items into requests under the vendor's byte limits (``aggregator.sinks.chunking``);
5. send each request; a 413 splits it in halves (down to single items), a 400 likewise isolates the items
   the vendor refuses; 429, 5xx, timeouts and refused connections are retried with full-jitter backoff,
   honouring ``Retry-After``, within ``sinks.retry.max_attempts`` and ``sinks.retry.budget_seconds``;
6. mark each entry ``delivered`` as soon as all its items are accepted; when the vendor stays down, the
   entries left are ``failed`` with a ``retry_at`` (backoff across runs) and a later run sends them.

The stage never raises for a vendor's failure: it reports it (``StageResult``), so alerting still runs.
No secret reaches a log line, a summary line or the store: every message is scrubbed with
``Config.secrets()``.
"""

from __future__ import annotations

import logging
import random
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aggregator.model import Delivery, MetricPoint, Outbox, RunContext, Sink, SinkError, StageResult
from aggregator.sinks.base import (
    AnyPoint,
    PayloadRejected,
    PayloadTooLarge,
    SummaryPoint,
    VendorSink,
    bump,
    scrub,
)
from aggregator.sinks.chunking import plan_requests
from aggregator.sinks.retry import RetryBudget, RetryPolicy, RetryStats, call_with_retry

log = logging.getLogger("aggregator.delivery")

PENDING_BATCH = 200  # outbox entries taken at a time
STAGE = "delivery"


@dataclass(slots=True)
class SinkOutcome:
    """What one sink's delivery did in one run (Vector's component counters, plus the outbox's view)."""

    sink: str
    sent: int = 0  # points (items) accepted by the vendor
    requests: int = 0
    delivered: int = 0  # outbox entries
    failed: int = 0  # entries left pending for a later run
    dropped_entries: int = 0
    dropped: dict[str, int] = field(default_factory=dict)  # points not sent, by reason
    cut: dict[str, int] = field(default_factory=dict)  # normalisations, by kind
    splits: int = 0
    retry: RetryStats = field(default_factory=RetryStats)
    error: str | None = None
    next_attempt: float | None = None
    deferred: bool = False  # the time budget ran out with entries still due


class _Stop(Exception):
    """The sink failed for good in this run; the entries not settled were recorded as failed."""


class _OutOfTime(Exception):
    """The run's time budget for this sink is spent; the entries not reached stay due."""


_DURATION_BASES: dict[str, str] | None = None


def duration_summaries() -> dict[str, str]:
    """family -> summary metric name (without prefix), derived from the catalog's quantile metrics."""
    global _DURATION_BASES
    if _DURATION_BASES is None:
        from aggregator import catalog

        bases: dict[str, str] = {}
        for d in catalog.definitions():
            m = re.fullmatch(r"(.+)\.p\d+", d.name)
            if m and not d.family.startswith(("metric:", "trace")):
                bases.setdefault(d.family, m.group(1))
        _DURATION_BASES = bases
    return _DURATION_BASES


def window_summaries(store: Any, window_start: int, prefix: str) -> list[SummaryPoint]:
    """Count, sum, min and max of every duration series of one window, from the stored aggregates."""
    from aggregator.windows_store import WindowsStore

    bases = duration_summaries()
    out: list[SummaryPoint] = []
    for agg in WindowsStore(store).all_windows(window_start, window_start + 1, families=list(bases)):
        if agg.count <= 0 or agg.min > agg.max:
            continue
        out.append(SummaryPoint(f"{prefix}.{bases[agg.series.family]}", agg.series.tags, agg.start,
                                float(agg.count), float(agg.total), float(agg.min), float(agg.max), agg.width))
    return out


def deliver_vendor(
    sink: VendorSink,
    outbox: Outbox,
    *,
    now: float,
    policy: RetryPolicy,
    secrets: Sequence[str] = (),
    rng: random.Random | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    extra_points: Callable[[Delivery], Sequence[AnyPoint]] | None = None,
    batch: int = PENDING_BATCH,
) -> SinkOutcome:
    """Deliver ``sink``'s pending entries. ``extra_points`` adds points to an entry (New Relic summaries)."""
    rng = rng or random.Random()
    outcome = SinkOutcome(sink.name)
    budget = RetryBudget(policy.budget, clock=clock)
    while budget.remaining > 0:
        entries = outbox.pending(sink.name, now, limit=batch)
        if not entries:
            break
        try:
            _deliver_batch(sink, outbox, entries, outcome, now=now, policy=policy, budget=budget, rng=rng,
                           sleep=sleep, extra_points=extra_points, secrets=secrets)
        except _Stop:
            break
        except _OutOfTime:
            outcome.deferred = True
            break
        if len(entries) < batch:
            break
    else:
        outcome.deferred = bool(outbox.pending(sink.name, now, limit=1))
    return outcome


def _deliver_batch(
    sink: VendorSink,
    outbox: Outbox,
    entries: list[Delivery],
    outcome: SinkOutcome,
    *,
    now: float,
    policy: RetryPolicy,
    budget: RetryBudget,
    rng: random.Random,
    sleep: Callable[[float], None],
    extra_points: Callable[[Delivery], Sequence[AnyPoint]] | None,
    secrets: Sequence[str],
) -> None:
    items: list[Any] = []
    owner: list[int] = []  # index into entries, per item
    remaining: list[int] = []  # items of each entry not yet accepted
    counts: list[int] = []  # items of each entry
    refused: list[dict[str, int]] = []  # items of each entry the vendor refused, by reason
    age_dropped: list[dict[str, int]] = []
    for k, entry in enumerate(entries):
        points: list[AnyPoint] = list(entry.points)
        if extra_points is not None:
            points.extend(extra_points(entry))
        keep: list[AnyPoint] = []
        ages: dict[str, int] = {}
        for p in points:
            verdict = sink.age_limits.verdict(p.timestamp, now)
            if verdict:
                bump(ages, verdict)
            else:
                keep.append(p)
        prepared = sink.prepare(keep)
        for reason, n in ages.items():
            bump(outcome.dropped, reason, n)
        for reason, n in prepared.dropped.items():
            bump(outcome.dropped, reason, n)
        for reason, n in prepared.cut.items():
            bump(outcome.cut, reason, n)
        items.extend(prepared.items)
        owner.extend([k] * len(prepared.items))
        remaining.append(len(prepared.items))
        counts.append(len(prepared.items))
        refused.append({})
        age_dropped.append(ages)

    settled = [False] * len(entries)

    def settle(ks: Sequence[int]) -> None:
        done: list[int] = []
        gone: list[tuple[int, str]] = []
        for k in ks:
            if settled[k] or remaining[k] > 0:
                continue
            settled[k] = True
            accepted = counts[k] - sum(refused[k].values())
            lost = {**age_dropped[k], **refused[k]}
            if lost and accepted <= 0:
                why = ", ".join(f"{n} {r.replace('_', ' ')}" for r, n in sorted(lost.items()))
                gone.append((k, scrub(f"nothing {sink.name} would accept: {why}", secrets)))
            else:
                done.append(k)
        if done:
            outbox.delivered(sink.name, [entries[k].id for k in done])
            outcome.delivered += len(done)
        for k, reason in gone:
            outbox.dropped(sink.name, [entries[k].id], reason)
            outcome.dropped_entries += 1

    # Entries with no items to send (empty window, or every point dropped for age or value).
    settle([k for k in range(len(entries)) if remaining[k] == 0])

    def accept(lo: int, hi: int) -> None:
        touched = set()
        for i in range(lo, hi):
            remaining[owner[i]] -= 1
            touched.add(owner[i])
        outcome.sent += hi - lo
        settle(sorted(touched))

    def refuse(i: int, reason: str) -> None:
        k = owner[i]
        remaining[k] -= 1
        bump(refused[k], reason)
        bump(outcome.dropped, reason)
        settle([k])

    def send_range(lo: int, hi: int) -> None:
        try:
            call_with_retry(lambda: sink.send_items(items[lo:hi]), policy, budget, rng=rng, sleep=sleep,
                            stats=outcome.retry)
            outcome.requests += 1
        except (PayloadTooLarge, PayloadRejected) as exc:
            outcome.requests += 1
            if hi - lo == 1:
                reason = "too_large" if isinstance(exc, PayloadTooLarge) else "rejected"
                log.warning("%s", scrub(f"{sink.name}: one point refused ({exc})", secrets))
                refuse(lo, reason)
                return
            outcome.splits += 1
            mid = lo + (hi - lo) // 2
            send_range(lo, mid)
            send_range(mid, hi)
            return
        accept(lo, hi)

    try:
        for lo, hi in plan_requests(items, sink.sizes, _item_size(sink), sink.request_limits):
            if budget.remaining <= 0:
                raise _OutOfTime()
            send_range(lo, hi)
    except SinkError as error:
        message = scrub(str(error), secrets)
        left = [k for k in range(len(entries)) if not settled[k]]
        worst = 0.0
        for k in left:
            delay = policy.later(entries[k].attempts + 1, rng, error.retry_after)
            worst = max(worst, delay)
            outbox.failed(sink.name, [entries[k].id], message, now + delay)
        outcome.failed += len(left)
        outcome.error = message
        outcome.next_attempt = now + worst if left else None
        log.info("%s", message)  # the stage's summary carries it; a log line would say it twice
        raise _Stop(message) from None


def _item_size(sink: Any) -> Callable[[Any], int]:
    size = getattr(sink, "item_size", None)
    if size is not None:
        return size  # type: ignore[no-any-return]
    return lambda item: len(repr(item))


def deliver_plain(sink: Sink, outbox: Outbox, *, now: float, policy: RetryPolicy, secrets: Sequence[str] = (),
                  rng: random.Random | None = None) -> SinkOutcome:
    """A sink without vendor limits (the OpenMetrics file): every pending entry in one ``send``."""
    rng = rng or random.Random()
    outcome = SinkOutcome(sink.name)
    entries = outbox.pending(sink.name, now, limit=100_000)
    if not entries:
        return outcome
    points: list[MetricPoint] = [p for e in entries for p in e.points]
    try:
        report = sink.send(points)
    except SinkError as exc:
        message = scrub(str(exc), secrets)
        delay = policy.later(max(e.attempts for e in entries) + 1, rng, exc.retry_after)
        outbox.failed(sink.name, [e.id for e in entries], message, now + delay)
        outcome.failed = len(entries)
        outcome.error = message
        outcome.next_attempt = now + delay
        log.info("%s", message)  # the stage's summary carries it; a log line would say it twice
        return outcome
    outbox.delivered(sink.name, [e.id for e in entries])
    outcome.delivered = len(entries)
    outcome.sent = report.sent
    outcome.requests = report.requests
    for reason, n in report.dropped.items():
        bump(outcome.dropped, reason, n)
    return outcome


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def _fmt_counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{r.replace('_', ' ')} {n}" for r, n in sorted(counts.items()))


def summary_line(o: SinkOutcome) -> str:
    parts = [f"{o.sink}: sent {_n(o.sent, 'point')} in {_n(o.requests, 'request')}, "
             f"{_n(o.delivered, 'window')} delivered"]
    if o.retry.retries:
        parts.append(f"{o.retry.retries} retries")
    if o.splits:
        parts.append(f"{o.splits} batches split")
    if o.dropped:
        parts.append(f"not sent: {_fmt_counts(o.dropped)}")
    if o.dropped_entries:
        parts.append(f"{o.dropped_entries} windows dropped")
    if o.cut:
        parts.append(f"normalised: {_fmt_counts(o.cut)}")
    if o.error:
        when = time.strftime("%H:%M:%S", time.gmtime(o.next_attempt)) + "Z" if o.next_attempt else "next run"
        parts.append(f"not delivered: {o.error}; {_n(o.failed, 'window')} pending, next attempt at {when}")
    elif o.deferred:
        parts.append("time budget used up, the rest waits for the next run")
    return "; ".join(parts)


def deliver(ctx: RunContext) -> StageResult:
    """The post-commit stage: deliver every sink's pending windows; report, never raise for a vendor."""
    config = ctx.config
    result = StageResult(name=STAGE)
    secrets = list(config.secrets()) if hasattr(config, "secrets") else []
    try:
        from aggregator.sinks import build_sinks, local_only_note, sink_names

        note = local_only_note(config)
        if note:
            result.lines.append(note)
        names = sink_names(config)
        if not names:
            return result
        sinks = build_sinks(config, names=names)
    except Exception as exc:  # a sink that cannot be built is a setting to fix; the run goes on
        message = scrub(f"sinks not built: {type(exc).__name__}: {exc}", secrets)
        log.error("%s", message)
        result.lines.append(message)
        result.ok = False
        return result
    from aggregator.outbox import StoreOutbox

    prefix = str(config.get("run.metric_prefix", "apm"))
    outbox = StoreOutbox(ctx.store, prefix)
    policy = RetryPolicy.from_config(config)
    for sink in sinks:
        try:
            if isinstance(sink, VendorSink):
                extra = None
                if getattr(sink, "wants_summaries", False):
                    def extra(entry: Delivery) -> list[SummaryPoint]:
                        return window_summaries(ctx.store, entry.window_start, prefix)
                outcome = deliver_vendor(sink, outbox, now=ctx.now, policy=policy, secrets=secrets,
                                         extra_points=extra)
            else:
                outcome = deliver_plain(sink, outbox, now=ctx.now, policy=policy, secrets=secrets)
        except Exception as exc:  # a bug or a store problem in one sink must not stop the others
            message = scrub(f"{sink.name}: delivery stopped: {type(exc).__name__}: {exc}", secrets)
            log.error("%s", message)
            result.lines.append(message)
            result.ok = False
            continue
        finally:
            try:
                sink.close()
            except Exception:
                pass
        if outcome.sent or outcome.error or outcome.dropped or outcome.delivered or outcome.dropped_entries:
            result.lines.append(summary_line(outcome))
        c = result.counters
        c[f"{sink.name}.sent"] = outcome.sent
        c[f"{sink.name}.requests"] = outcome.requests
        c[f"{sink.name}.delivered"] = outcome.delivered
        c[f"{sink.name}.failed"] = outcome.failed
        c[f"{sink.name}.retries"] = outcome.retry.retries
        c[f"{sink.name}.dropped"] = sum(outcome.dropped.values())
        c[f"{sink.name}.dropped_windows"] = outcome.dropped_entries
        if outcome.error:
            result.ok = False
    return result
