"""Judging the rules in event time.

Evaluation points are window ends (multiples of the window width). A point ``t`` is judged once event time
has passed it - when the store holds a window starting at or after ``t`` (the newest window start is the
watermark) - over the windows starting in ``[t - span, t)``. Each rule remembers the last point it judged,
so a run judges every point since, in order: a run delayed by an hour judges the hour's 60 points, and a
backfill or a replay of old logs judges the points of its windows, at the same event times and with the
same outcome as the live runs would have.

Per point and group (the ``group_by`` tag values), the span's windows are merged with
``aggregator.catalog.merge`` and the rule's metric read with ``aggregator.catalog.value`` (one place for
what a metric means). A quantile metric (p95, p99) is read without merging sketches when the catalog says
which quantile it is (``alerting.spans``: the same figure, for all the points of a chunk at once). A 1M-event
hour's catch-up of the 8 default rules (480 points) went from 0.40 to 0.15 CPU s with it, the merges of the
exact fields alone and ``WindowsStore`` decoding less (``bench/alerting_bench.py --state``).

A group with fewer than ``min_samples`` events in the span does not breach; a group with no events at all
follows the rule's ``no_data`` ("ok": does not breach, "keep": its state stays as it is, "alert":
breaches).

The lifecycle per group (Prometheus' semantics, in event time):

    inactive --breach--> pending --breach for `for`--> firing --clear for `keep_firing_for`--> resolved
    pending --clear--> inactive                           firing --still breaching, `repeat` later--> repeat

Firing, repeat and resolved make notifications due; they are logged with the new states in the caller's
transaction (see ``alerting.state``).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol, cast

from aggregator.model import WindowAggregate, WindowReader
from alerting.columns import Grid, group_mapping, read_chunk
from alerting.rules import Rule, Shown, format_duration, render_message
from alerting.spans import Floats, SpanQuantiles, span_quantiles
from alerting.state import AlertStore, GroupKey, GroupState, Notification, Transition

CHUNK_POINTS = 120  # evaluation points read from the store at once (bounds memory on a long catch-up)


class MetricCatalog(Protocol):
    """What evaluation needs from ``aggregator.catalog``."""

    def family_of(self, metric_name: str, prefix: str | None = None) -> str: ...

    def value(self, metric_name: str, agg: WindowAggregate, prefix: str | None = None) -> float | None: ...

    def merge(self, aggs: Iterable[WindowAggregate]) -> WindowAggregate | None: ...


class SpanCatalog(MetricCatalog, Protocol):
    """What ``aggregator.catalog`` also says, so that a span's quantiles need no merged sketch (a catalog
    without it is judged by merging, as before)."""

    def quantile_of(self, metric_name: str, prefix: str | None = None) -> float | None: ...

    def reads_sketch(self, metric_name: str, prefix: str | None = None) -> bool: ...

    def merge(self, aggs: Iterable[WindowAggregate], series: Any = None, *,  # type: ignore[override]
              sketches: bool = True) -> WindowAggregate | None: ...


# A rule's quantile per group for the points of a chunk (alerting.spans), the point's index, and the groups
# whose spans are merged with their sketches instead (catalog.value reads those).
Column = tuple[dict[GroupKey, Floats], int, Container[GroupKey]]


@dataclass(slots=True)
class Counted:
    """A span's (or a minute's) merge when only its event count is read (see ``Evaluator._merge``)."""

    count: int


Merged = WindowAggregate | Counted


MergedAt = Callable[[int, int], Mapping[GroupKey, Merged | None]]  # (point index, point) -> its merged spans per group


@dataclass(frozen=True, slots=True)
class _Chunk:
    """One chunk of a cluster's evaluation points to read."""

    family: str
    match: dict[str, str] | None
    group_by: tuple[str, ...]
    span: int
    chunk: list[int]
    quantiles: dict[str, float | None] | None  # Evaluator._quantiles
    grid: Grid


@dataclass(slots=True)
class EvaluationReport:
    points: int = 0  # (rule, evaluation point) pairs judged
    notifications: list[Notification] = field(default_factory=list)
    transitions: list[Transition] = field(default_factory=list)
    firing: int = 0
    pending: int = 0
    errors: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Judgement:
    value: float | None
    samples: int
    breach: bool | None  # None: leave the state as it is (no data, rule says "keep")


def _row_reader(reader: WindowReader, catalog: MetricCatalog | None) -> Callable[..., Any] | None:
    """The stored rows of ``reader`` (``window_rows``) when it is the state store's ``WindowsStore`` and
    the metrics are ``aggregator.catalog``'s, for ``alerting.columns``; None for any other reader or catalog."""
    try:
        from aggregator.windows_store import WindowsStore, window_rows
    except ImportError:
        return None
    if type(reader) is not WindowsStore or (catalog is not None and catalog is not _default_catalog()):
        return None
    return partial(window_rows, reader)


def _default_catalog() -> MetricCatalog:
    from aggregator import catalog

    return catalog  # type: ignore[return-value]


class Evaluator:
    """Judges rules against a ``WindowReader`` and records the outcome in an ``AlertStore``."""

    def __init__(
        self,
        alerts: AlertStore,
        reader: WindowReader,
        *,
        width: int,
        prefix: str = "apm",
        max_catchup_seconds: int = 6 * 3600,
        send_resolved: bool = True,
        notifiers: Sequence[str] = (),
        catalog: MetricCatalog | None = None,
        now: float = 0.0,
    ) -> None:
        self.alerts = alerts
        self.reader = reader
        self.width = width
        self.prefix = prefix
        self.max_catchup = max_catchup_seconds
        self.send_resolved = send_resolved
        self.notifiers = tuple(notifiers)
        self.catalog = catalog or _default_catalog()
        self._spans_catalog = (cast(SpanCatalog, self.catalog) if hasattr(self.catalog, "quantile_of")
                               and hasattr(self.catalog, "reads_sketch") else None)
        self.now = now
        self._row_reader = _row_reader(reader, catalog)
        self._earliest_cache: dict[tuple[str, tuple[tuple[str, str], ...], int], int | None] = {}

    def run(self, rules: Sequence[Rule]) -> EvaluationReport:
        """Judge every rule at every point up to the watermark. The caller holds the transaction.

        Rules over the same family, filter, grouping and span (p95, p99 and error rate by route) form one
        cluster: its windows are read and decoded once, merged per group and minute once, and merged over
        the span once per point; each rule then only reads its metric from the merged aggregate. When every
        rule of a cluster is a quantile or needs no sketch (the defaults), the merges leave the sketches out
        and the quantiles of all the chunk's spans are read at once (``alerting.spans``): same figures."""
        report = EvaluationReport()
        self.alerts.forget_rules_except((r.name for r in rules), self.now)
        watermark = self.reader.latest_window_start()
        clusters: dict[tuple[str, tuple[tuple[str, str], ...], tuple[str, ...], int], list[Rule]] = {}
        for rule in rules:
            try:
                family = self.catalog.family_of(rule.metric, self.prefix)
            except Exception as exc:
                report.errors.append(f"rule {rule.name}: {type(exc).__name__}: {exc}")
                continue
            clusters.setdefault((family, rule.match, rule.group_by, rule.span_seconds), []).append(rule)
        conn = self.alerts.conn
        for (family, match, group_by, span), members in clusters.items():
            # A savepoint per cluster: a cluster that fails half-way leaves none of its writes behind, and
            # its rules are judged again (from where they were) by the next run.
            marks = (len(report.notifications), len(report.transitions), report.points)
            conn.execute("SAVEPOINT alert_cluster")
            try:
                self._cluster(family, dict(match) or None, group_by, span, members, watermark, report)
            except Exception as exc:  # one broken rule (a metric an extension lacks) must not stop the rest
                conn.execute("ROLLBACK TO alert_cluster")
                del report.notifications[marks[0]:], report.transitions[marks[1]:]
                report.points = marks[2]
                report.errors.extend(f"rule {r.name}: {type(exc).__name__}: {exc}" for r in members)
            finally:
                conn.execute("RELEASE alert_cluster")
        return report

    # --- a cluster of rules ---------------------------------------------------------------------------------

    def _cluster(
        self,
        family: str,
        match: dict[str, str] | None,
        group_by: tuple[str, ...],
        span: int,
        rules: list[Rule],
        watermark: int | None,
        report: EvaluationReport,
    ) -> None:
        states = {r.name: self.alerts.groups(r.name) for r in rules}
        points: dict[str, set[int]] = {}
        if watermark is not None:
            points = {r.name: set(self._points(r, family, match, watermark)) for r in rules}
        every = sorted(set().union(*points.values())) if points else []
        quantiles = self._quantiles(rules) if every else None
        for chunk_start in range(0, len(every), CHUNK_POINTS):
            chunk = every[chunk_start:chunk_start + CHUNK_POINTS]
            job = _Chunk(family, match, group_by, span, chunk, quantiles, Grid.of(chunk, span, self.width))
            found, merged_at = self._chunk_columns(job) or self._chunk_merging(job)
            for i, t in enumerate(chunk):
                merged = merged_at(i, t)
                for rule in rules:
                    if t in points[rule.name]:
                        q = quantiles.get(rule.name) if quantiles is not None else None
                        column = None if found is None or q is None else (found.values[q], i, found.merge)
                        self._point(rule, t, merged, states[rule.name], report, column)
                        report.points += 1
        for rule in rules:
            if points.get(rule.name):
                self.alerts.set_last_eval(rule.name, max(points[rule.name]))
            self.alerts.save_groups(states[rule.name].values())
            report.firing += sum(1 for g in states[rule.name].values() if g.state == "firing")
            report.pending += sum(1 for g in states[rule.name].values() if g.state == "pending")

    def _chunk_merging(self, job: _Chunk) -> tuple[SpanQuantiles | None, MergedAt]:
        """The chunk's span quantiles (None: none read, or every span merged with its sketches) and each
        point's merged spans per group, from the decoded windows merged per group and minute."""
        span, chunk, quantiles, group_by = job.span, job.chunk, job.quantiles, job.group_by
        # per window start and group: the group's series merged (one aggregate per group and minute)
        minute: dict[int, dict[GroupKey, list[WindowAggregate]]] = defaultdict(lambda: defaultdict(list))
        keys: dict[Any, GroupKey] = {}  # per series (a series recurs in every window): its group
        for agg in self.reader.windows(job.family, chunk[0] - span, chunk[-1], match=job.match):
            key = keys.get(agg.series)
            if key is None:
                key = keys[agg.series] = tuple((g, agg.series.tag(g)) for g in group_by)
            minute[agg.start][key].append(agg)
        found: SpanQuantiles | None = None
        counts = quantiles is not None and None not in quantiles.values()
        if quantiles is not None:
            qs = {q for q in quantiles.values() if q is not None}
            found = self._span_quantiles(minute, job.grid, qs) if qs else SpanQuantiles({}, set())
        per_minute = {
            start: {key: m for key, aggs in groups.items()
                    if (m := self._merge(found, key, aggs, counts)) is not None}
            for start, groups in minute.items()
        }
        del minute

        def merged_at(i: int, t: int) -> dict[GroupKey, Merged | None]:
            spans: dict[GroupKey, list[Merged]] = defaultdict(list)
            for start in range(t - span, t, self.width):
                for key, part in per_minute.get(start, {}).items():
                    spans[key].append(part)
            return {key: self._merge(found, key, aggs, counts) for key, aggs in spans.items()}

        return found, merged_at

    def _chunk_columns(self, job: _Chunk) -> tuple[SpanQuantiles, MergedAt] | None:
        """What ``_chunk_merging`` gives, from the stored rows as columns (``alerting.columns``); None when
        that does not apply (another reader or catalog, a rule reading the sketch otherwise than by a
        quantile, spans off the window grid, a window off the span grid, a sketch ``alerting.spans``
        leaves to the merge)."""
        if self._row_reader is None or job.quantiles is None or job.span % self.width:
            return None
        window_rows = self._row_reader
        cat = cast(SpanCatalog, self._spans_catalog)
        grid, family, match, end = job.grid, job.family, job.match, job.chunk[-1]
        qs = {q for q in job.quantiles.values() if q is not None}
        read = read_chunk(lambda sketches: window_rows(family, grid.base, end, match=match, sketches=sketches),
                          job.group_by, grid, qs, None in job.quantiles.values())
        if read is None:
            return None
        chunk_read = read

        def merged_at(i: int, t: int) -> dict[GroupKey, Merged]:
            present = group_mapping(chunk_read, i)
            if chunk_read.minutes is None:
                return {key: Counted(count) for key, count in present.items()}
            spans: dict[GroupKey, list[WindowAggregate]] = {key: [] for key in present}
            for r in range(int(grid.first[i]), int(grid.first[i]) + grid.per_span):
                for key, part in chunk_read.minutes[r].items():
                    spans[key].append(part)
            return {key: m for key, aggs in spans.items() if (m := cat.merge(aggs, sketches=False)) is not None}

        return chunk_read.quantiles, merged_at

    def _quantiles(self, rules: list[Rule]) -> dict[str, float | None] | None:
        """Per rule, the quantile it reads (None: a metric of the exact fields alone); None when a rule
        reads the sketch otherwise, or the catalog cannot say: then spans are merged with their sketches."""
        cat = self._spans_catalog
        if cat is None:
            return None
        out: dict[str, float | None] = {}
        try:
            for rule in rules:
                q = cat.quantile_of(rule.metric, self.prefix)
                if q is None and cat.reads_sketch(rule.metric, self.prefix):
                    return None
                out[rule.name] = q
        except Exception:  # whatever fails here fails where the merging path reads the metric, as before
            return None
        return out

    def _merge(self, found: SpanQuantiles | None, key: GroupKey, aggs: Sequence[Merged],
               counts: bool = False) -> Merged | None:
        """Merged with the sketches, unless ``alerting.spans`` reads this group's quantiles (or none are
        read): then the exact fields alone; or only the event count (``counts``: every rule of the cluster
        reads a quantile, which ``alerting.spans`` gives, so ``_judge`` reads nothing else)."""
        if found is None or key in found.merge:
            return self.catalog.merge(cast(Sequence[WindowAggregate], aggs))
        if counts:
            total = 0  # the merge's own sum: its count starts at 0 and adds each one's, in order
            for agg in aggs:
                total += agg.count
            return Counted(total)
        return cast(SpanCatalog, self._spans_catalog).merge(cast(Sequence[WindowAggregate], aggs), sketches=False)

    def _span_quantiles(
        self,
        minute: dict[int, dict[GroupKey, list[WindowAggregate]]],
        grid: Grid,
        qs: set[float],
    ) -> SpanQuantiles | None:
        """The chunk's quantiles per group and point (``alerting.spans``); None to merge every group's
        sketches instead (a window off the span grid)."""
        w = self.width
        sketches: dict[GroupKey, list[tuple[int, Any]]] = defaultdict(list)
        for start, groups in minute.items():
            row, off = divmod(start - grid.base, w)
            if off or not 0 <= row < grid.rows:
                return None
            for key, aggs in groups.items():
                sketches[key].extend((row, a.sketch) for a in aggs if a.sketch is not None)
        return span_quantiles(sketches, grid.rows, grid.first, grid.per_span, qs)

    def _points(self, rule: Rule, family: str, match: dict[str, str] | None, watermark: int) -> list[int]:
        w = self.width
        last = self.alerts.last_eval(rule.name)
        if last is None:
            # First judgement: from the family's earliest window (bounded), so that a replay into a fresh
            # store judges the same points a live run would have.
            floor = watermark - self.max_catchup
            earliest = self._earliest(family, match, floor, watermark)
            first = (earliest + w) if earliest is not None else watermark
            first = max(first, (floor // w) * w + w)
        else:
            first = last + w
        first = -(-first // w) * w  # align up to a window end
        return list(range(first, watermark + 1, w))

    def _earliest(self, family: str, match: dict[str, str] | None, floor: int, watermark: int) -> int | None:
        """The earliest window start in ``[floor, watermark]``: one query when the reader can say
        (``WindowsStore.earliest_start``), else reading five windows at a time (a long history is not
        decoded just to find where it begins; empty stretches cost one query each)."""
        cache_key = (family, tuple(sorted((match or {}).items())), floor)
        if cache_key in self._earliest_cache:
            return self._earliest_cache[cache_key]
        found: int | None = None
        earliest_start = getattr(self.reader, "earliest_start", None)
        if earliest_start is not None:
            found = earliest_start(family, floor, watermark + 1, match=match)
        else:
            step = 5 * self.width
            for lo in range(floor, watermark + 1, step):
                found = min((a.start for a in self.reader.windows(family, lo, min(lo + step, watermark + 1),
                                                                  match=match)), default=None)
                if found is not None:
                    break
        self._earliest_cache[cache_key] = found
        return found

    def _point(
        self,
        rule: Rule,
        t: int,
        merged: Mapping[GroupKey, Merged | None],
        states: dict[GroupKey, GroupState],
        report: EvaluationReport,
        column: Column | None = None,
    ) -> None:
        keys = set(merged) | {k for k, g in states.items() if g.state in ("pending", "firing")}
        if not rule.group_by:
            keys.add(())
        for key in sorted(keys):
            judgement = self._judge(rule, merged.get(key), key, column)
            state = states.get(key)
            if state is None:
                if not judgement.breach:
                    continue  # an inactive group without a row stays without one
                state = states[key] = GroupState(rule.name, key)
            self._advance(rule, state, t, judgement, report)

    def _judge(self, rule: Rule, merged: Merged | None, key: GroupKey = (),
               column: Column | None = None) -> Judgement:
        samples = merged.count if merged is not None else 0
        value: float | None
        if merged is None:
            value = None
        elif column is not None and key not in column[2]:  # alerting.spans' figure: catalog.value's
            values, i, _ = column
            found = values.get(key)
            x = float(found[i]) if found is not None and merged.count else math.nan
            value = x if math.isfinite(x) else None
        else:
            value = self.catalog.value(rule.metric, cast(WindowAggregate, merged), self.prefix)  # never Counted
        if value is None or samples == 0:
            if rule.no_data == "keep":
                return Judgement(None, samples, None)
            return Judgement(None, samples, rule.no_data == "alert")
        if samples < rule.min_samples:
            return Judgement(value, samples, False)
        return Judgement(value, samples, rule.breaches(value))

    # --- the lifecycle --------------------------------------------------------------------------------------

    def _advance(self, rule: Rule, g: GroupState, t: int, j: Judgement, report: EvaluationReport) -> None:
        g.dirty = True
        g.last_eval = t
        if j.breach is None:
            return
        g.last_samples = j.samples
        before = g.state
        if j.breach:
            g.last_value = j.value
            if g.state in ("inactive", "resolved"):
                g.state, g.active_since, g.resolved_at = "pending", t, None
            if g.state == "pending" and t - (g.active_since or t) >= rule.for_seconds:
                g.state, g.firing_since, g.cleared_since, g.last_notified = "firing", t, None, t
                self._move(rule, g, before, t, report)
                self._notify(rule, g, "firing", t, j, report)
                return
            if g.state == "firing":
                g.cleared_since = None
                if g.last_notified is not None and t - g.last_notified >= rule.repeat_seconds:
                    g.last_notified = t
                    self._notify(rule, g, "repeat", t, j, report)
            self._move(rule, g, before, t, report)
            return
        # not breaching
        if g.state == "pending":
            g.state, g.active_since = "inactive", None
            g.last_value = j.value
        elif g.state == "firing":
            if g.cleared_since is None:
                g.cleared_since = t
            if t - g.cleared_since >= rule.keep_firing_for_seconds:
                g.state, g.resolved_at, g.last_value = "resolved", t, j.value
                self._move(rule, g, before, t, report)
                if self.send_resolved:
                    self._notify(rule, g, "resolved", t, j, report)
                return
            if g.last_notified is not None and t - g.last_notified >= rule.repeat_seconds:
                g.last_notified = t
                self._notify(rule, g, "repeat", t, j, report)
        self._move(rule, g, before, t, report)

    def _move(self, rule: Rule, g: GroupState, before: str, t: int, report: EvaluationReport) -> None:
        if before == g.state:
            return
        tr = Transition(rule.name, g.key, t, before, g.state, g.last_value)
        report.transitions.append(tr)
        self.alerts.record_transition(tr, self.now)

    def _notify(self, rule: Rule, g: GroupState, kind: str, t: int, j: Judgement, report: EvaluationReport) -> None:
        body = alert_body(rule, g, kind, t, j.value, j.samples)
        n = Notification(rule.name, g.key, kind, t, body)  # type: ignore[arg-type]
        if self.alerts.enqueue(n, self.notifiers, self.now) is not None:
            report.notifications.append(n)


def series_label(key: GroupKey) -> str:
    return ", ".join(f"{k}={v or '(none)'}" for k, v in key) if key else "overall"


def alert_body(rule: Rule, g: GroupState, kind: str, t: int, value: float | None, samples: int) -> dict[str, Any]:
    """The snapshot a notification carries: enough to write the message without the rule or the store
    (the rule may change before a failed delivery is retried)."""
    series = tuple(sorted((dict(rule.match) | dict(g.key)).items()))  # the filter's tags describe it too
    fields: dict[str, Any] = {
        "rule": rule.name, "metric": rule.metric, "op": rule.op, "severity": rule.severity,
        "value": Shown(value, rule.unit), "threshold": Shown(rule.threshold, rule.unit),
        "series": series_label(series), "since": g.firing_since, "span": format_duration(rule.span_seconds),
        "unit": rule.unit, "samples": samples,
    }
    fields.update(dict(series))
    return {
        "rule": rule.name, "kind": kind, "at": t, "severity": rule.severity, "metric": rule.metric,
        "op": rule.op, "threshold": rule.threshold, "unit": rule.unit, "value": value, "samples": samples,
        "series": dict(series), "since": g.firing_since, "resolved_at": g.resolved_at if kind == "resolved" else None,
        "span_seconds": rule.span_seconds, "message": render_message(rule.message, fields),
        "description": rule.description,
    }

