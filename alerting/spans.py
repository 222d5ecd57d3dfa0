"""Quantiles over sliding spans without merging sketches: for a quantile metric, the figure
``aggregator.catalog.value`` reads from ``merge(span's windows).sketch``, at every evaluation point of a
chunk at once.

A catch-up judges every point of a span about ``span / width`` times (5 for the defaults), and merging the
span's sketches per point and group, then reading one quantile with a few small numpy calls, cost most of it
(~10 us per merge, ~40 us per read-out on this machine). Here, per group, the positive bucket counts of the
chunk's windows go into one matrix (a row per window start of the span grid, a column per bucket of the
group's whole range); prefix sums over the rows give every span's counts by one subtraction (integers:
exact), and the ranks of all points are looked up together.

The read-out is the sketch's own: ``aggregator.sketch.interpolated`` (the rule ``DDSketch.quantiles``
applies, here with one count, min and max per span) over rank estimates from ``representatives`` (the
buckets' values), so the figures are the same floats; only finding each rank's bucket differs (a row of
cumulative counts per span). ``tests/alerting/test_alert_spans.py`` compares them with the merged sketches
(zeros, empty sketches, heavy tails, spans with gaps).

A group with a sketch it does not take is left to the caller's merge (``SpanQuantiles.merge``): negative
values (a mirrored store), -0.0 as a min or max, sketches of different accuracies (the merge raises), a
group wider than ``MAX_BUCKETS`` buckets (the merge would collapse its lowest buckets), another type.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from aggregator.sketch import MAX_BUCKETS, DDSketch, interpolated, representatives
from alerting.state import GroupKey

Floats = npt.NDArray[np.float64]


@dataclass(slots=True)
class SpanQuantiles:
    values: dict[float, dict[GroupKey, Floats]]  # per quantile and group: one figure per point (NaN: None)
    merge: set[GroupKey]  # groups left to the caller's merge (see the module docstring)


def span_quantiles(
    sketches: Mapping[GroupKey, Sequence[tuple[int, Any]]],
    rows: int,
    first_rows: npt.NDArray[np.int64],
    per_span: int,
    qs: Iterable[float],
) -> SpanQuantiles:
    """Per quantile and group, the quantile of every span (NaN where the span has no sketch or the
    merged sketch would be empty; the caller also checks the span's event count, as ``value`` does).

    ``sketches``: per group, ``(row, sketch)`` of each window in the order the merge would take them
    (rows ``0 .. rows - 1`` on the span grid); point ``i``'s span is rows ``first_rows[i] .. first_rows[i] +
    per_span - 1``. A group with a sketch this does not take is named in ``merge`` instead."""
    qs = sorted(set(qs))
    out = SpanQuantiles({q: {} for q in qs}, set())
    ends = first_rows + per_span
    for key, items in sketches.items():
        group = _group(items, rows, first_rows, ends, per_span)
        if group is None:
            out.merge.add(key)
            continue
        for q in qs:
            out.values[q][key] = _read(group, q)
    return out


class _Spans:
    """One group's spans: bucket counts (cumulative over the buckets), zeros, min and max (several groups'
    in ``alerting.columns``, which lays the counts out otherwise: ``totals``, ``buckets``)."""

    __slots__ = ("cum", "gamma", "lo", "maxs", "mins", "n", "valid", "zeros")

    def __init__(self, cum: npt.NDArray[np.int64], zeros: npt.NDArray[np.int64], mins: Any,
                 maxs: Any, valid: npt.NDArray[np.bool_], lo: Any, gamma: float, totals: Any = None) -> None:
        self.cum, self.zeros, self.lo, self.gamma = cum, zeros, lo, gamma
        self.n = (cum[:, -1] if totals is None else totals) + zeros
        self.valid = valid & (self.n > 0)
        # Spans without values read 0 (and are NaN in the end): no inf - inf on the way.
        self.mins = np.where(self.valid, np.asarray(mins, dtype=np.float64), 0.0)
        self.maxs = np.where(self.valid, np.asarray(maxs, dtype=np.float64), 0.0)

    def buckets(self, pos_rank: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        """Per span, the index of the positive bucket holding ``pos_rank`` (the first whose cumulative count
        exceeds it: ``searchsorted(..., side="right")``), the last one past the end."""
        return np.minimum((self.cum <= pos_rank[:, None]).sum(axis=1), self.cum.shape[1] - 1)


def _negative_zero(x: float) -> bool:
    return x == 0.0 and math.copysign(1.0, x) < 0.0


def _group(items: Sequence[tuple[int, Any]], rows: int, first: npt.NDArray[np.int64],
           ends: npt.NDArray[np.int64], per_span: int) -> _Spans | None:
    accuracy: float | None = None
    gamma = 0.0
    lo: int | None = None
    hi = 0
    for _, s in items:
        # -0.0 as an extreme: the clip could pick either zero where the merged sketch's read-out picks one
        if type(s) is not DDSketch or s.neg.counts.size or _negative_zero(s.min) or _negative_zero(s.max):
            return None
        if accuracy is None:
            accuracy, gamma = s.relative_accuracy, s._gamma  # the read-out's own gamma, bit for bit
        elif s.relative_accuracy != accuracy:
            return None
        size = s.pos.counts.size
        if size:
            bottom, top = s.pos.offset, s.pos.offset + size - 1
            lo, hi = (bottom, top) if lo is None else (min(lo, bottom), max(hi, top))
    if lo is None:
        lo, width = 0, 1
    else:
        width = hi - lo + 1
        if width > MAX_BUCKETS:
            return None
    counts = np.zeros((rows + 1, width), dtype=np.int64)  # row 0 stays zero: prefix sums start there
    zeros = [0] * (rows + 1)
    sketched = [0] * (rows + 1)
    mins = [math.inf] * rows
    maxs = [-math.inf] * rows
    for row, s in items:
        c = s.pos.counts
        if c.size:
            a = s.pos.offset - lo
            counts[row + 1, a:a + c.size] += c
        zeros[row + 1] += s.zero_count
        sketched[row + 1] += 1
        mins[row] = min(mins[row], s.min)  # builtin min and max in the merge's order, as DDSketch.merge
        maxs[row] = max(maxs[row], s.max)
    span_min = [min(mins[i:i + per_span], default=math.inf) for i in first.tolist()]
    span_max = [max(maxs[i:i + per_span], default=-math.inf) for i in first.tolist()]
    return spans_of(counts, zeros, sketched, span_min, span_max, first, ends, lo, gamma)


def spans_of(counts: npt.NDArray[np.int64], zeros: Any, sketched: Any, span_min: Any, span_max: Any,
             first: npt.NDArray[np.int64], ends: npt.NDArray[np.int64], lo: int, gamma: float) -> _Spans:
    """One group's spans from its windows' rows: ``counts`` (``rows + 1`` by the group's buckets from
    ``lo``; row 0 zero, window row ``r`` at ``r + 1``; summed over in place), ``zeros`` and ``sketched`` (zero
    counts and sketches per row, laid out alike), and each span's min and max (``alerting.columns`` reads
    the same figures from the stored bytes, several groups at once: its ``_Bisected``)."""
    np.cumsum(counts, axis=0, out=counts)
    zero_sums = np.cumsum(np.asarray(zeros, dtype=np.int64))
    sketch_sums = np.cumsum(np.asarray(sketched, dtype=np.int64))
    span_counts = counts[ends] - counts[first]
    return _Spans(np.cumsum(span_counts, axis=1), zero_sums[ends] - zero_sums[first], span_min, span_max,
                  (sketch_sums[ends] - sketch_sums[first]) > 0, lo, gamma)


def _read(g: _Spans, q: float) -> Floats:
    """``DDSketch.quantiles([q])`` of each span's merged sketch: the sketch's own read-out over the spans."""
    n = np.where(g.valid, g.n, 1)
    res = interpolated(q, n, lambda lo, hi: (_at_ranks(g, lo), _at_ranks(g, hi)), g.mins, g.maxs)
    return np.where(g.valid, res, np.nan)


def _at_ranks(g: _Spans, ranks: npt.NDArray[np.int64]) -> Floats:
    """The estimate at one 0-based rank per span: zero below the span's zeros, else the positive bucket
    holding it."""
    pos_rank = ranks - g.zeros
    idx = g.buckets(pos_rank)
    return np.where(pos_rank < 0, 0.0, representatives(g.gamma, g.lo + idx))
