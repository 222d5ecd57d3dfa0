"""Quantiles over sliding spans without merging sketches: for a quantile metric, the figure
``aggregator.catalog.value`` reads from ``merge(span's windows).sketch``, at every evaluation point of a
chunk at once.

A catch-up judges every point of a span about ``span / width`` times (5 for the defaults), and merging the
span's sketches per point and group, then reading one quantile with a few small numpy calls, cost most of it
(~10 us per merge, ~40 us per read-out on this machine). Here, per group, the positive bucket counts of the
chunk's windows go into one matrix (a row per window start of the span grid, a column per bucket of the
group's whole range); prefix sums over the rows give every span's counts by one subtraction (integers:
exact), and the ranks of all points are looked up together.

The read-out repeats ``aggregator.sketch.DDSketch.quantiles`` step by step, in the same float64 operations
(``h = q (n - 1)``, its floor and the next rank, the bucket's representative ``2 gamma^k / (1 + gamma)``
through ``np.power``, the exact min and max at the extreme ranks, the interpolation, the clip), so the
figures are the same floats. ``tests/alerting/test_alert_spans.py`` compares them with the merged sketches
(zeros, empty sketches, heavy tails, spans with gaps); keep the two in step if the sketch's read-out changes.

What it does not take it leaves to the caller's merge (``span_quantiles`` returns None): negative values (a
mirrored store), sketches of different accuracies in one group (the merge raises), a group wider than
``MAX_BUCKETS`` buckets (the merge would collapse its lowest buckets), a sketch of another type.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from aggregator.sketch import MAX_BUCKETS, DDSketch
from alerting.state import GroupKey

Floats = npt.NDArray[np.float64]


def span_quantiles(
    sketches: Mapping[GroupKey, Sequence[tuple[int, Any]]],
    rows: int,
    first_rows: npt.NDArray[np.int64],
    per_span: int,
    qs: Iterable[float],
) -> dict[float, dict[GroupKey, Floats]] | None:
    """Per quantile and group, the quantile of every span (NaN where the span has no sketch or the
    merged sketch would be empty; the caller also checks the span's event count, as ``value`` does).

    ``sketches``: per group, ``(row, sketch)`` of each window (rows ``0 .. rows - 1`` on the span grid);
    point ``i``'s span is rows ``first_rows[i] .. first_rows[i] + per_span - 1``. None: a sketch this does
    not take (see the module docstring)."""
    qs = sorted(set(qs))
    out: dict[float, dict[GroupKey, Floats]] = {q: {} for q in qs}
    ends = first_rows + per_span
    for key, items in sketches.items():
        group = _group(items, rows, first_rows, ends, per_span)
        if group is None:
            return None
        for q in qs:
            out[q][key] = _read(group, q)
    return out


class _Spans:
    """One group's spans: bucket counts (cumulative over the buckets), zeros, min and max."""

    __slots__ = ("cum", "gamma", "lo", "maxs", "mins", "n", "valid", "zeros")

    def __init__(self, cum: npt.NDArray[np.int64], zeros: npt.NDArray[np.int64], mins: Floats, maxs: Floats,
                 valid: npt.NDArray[np.bool_], lo: int, gamma: float) -> None:
        self.cum, self.zeros, self.lo, self.gamma = cum, zeros, lo, gamma
        self.n = cum[:, -1] + zeros
        self.valid = valid & (self.n > 0)
        # Spans without values read 0 (and are NaN in the end): no inf - inf on the way.
        self.mins, self.maxs = np.where(self.valid, mins, 0.0), np.where(self.valid, maxs, 0.0)


def _group(items: Sequence[tuple[int, Any]], rows: int, first: npt.NDArray[np.int64],
           ends: npt.NDArray[np.int64], per_span: int) -> _Spans | None:
    accuracy: float | None = None
    gamma = 0.0
    lo: int | None = None
    hi = 0
    for _, s in items:
        if type(s) is not DDSketch or s.neg.counts.size:
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
    zeros = np.zeros(rows + 1, dtype=np.int64)
    sketched = np.zeros(rows + 1, dtype=np.int64)
    mins = np.full(rows, np.inf)
    maxs = np.full(rows, -np.inf)
    for row, s in items:
        c = s.pos.counts
        if c.size:
            a = s.pos.offset - lo
            counts[row + 1, a:a + c.size] += c
        zeros[row + 1] += s.zero_count
        sketched[row + 1] += 1
        if s.min < mins[row]:
            mins[row] = s.min
        if s.max > maxs[row]:
            maxs[row] = s.max
    np.cumsum(counts, axis=0, out=counts)
    np.cumsum(zeros, out=zeros)
    np.cumsum(sketched, out=sketched)
    span_counts = counts[ends] - counts[first]
    if per_span > 0:
        span_min = np.lib.stride_tricks.sliding_window_view(mins, per_span).min(axis=1)[first]
        span_max = np.lib.stride_tricks.sliding_window_view(maxs, per_span).max(axis=1)[first]
    else:
        span_min = np.full(first.size, np.inf)
        span_max = np.full(first.size, -np.inf)
    return _Spans(np.cumsum(span_counts, axis=1), zeros[ends] - zeros[first], span_min, span_max,
                  (sketched[ends] - sketched[first]) > 0, lo, gamma)


def _read(g: _Spans, q: float) -> Floats:
    """``DDSketch.quantiles([q])`` of each span's merged sketch, as its float64 steps compute it."""
    n = np.where(g.valid, g.n, 1)
    h = q * (n - 1)
    lo = np.floor(h).astype(np.int64)
    hi = np.minimum(lo + 1, n - 1)
    v_lo = np.where(lo == 0, g.mins, np.where(lo == n - 1, g.maxs, _at_ranks(g, lo)))
    v_hi = np.where(hi == 0, g.mins, np.where(hi == n - 1, g.maxs, _at_ranks(g, hi)))
    res = v_lo + (h - lo) * (v_hi - v_lo)
    res = np.clip(res, g.mins, g.maxs)
    return np.where(g.valid, res, np.nan)


def _at_ranks(g: _Spans, ranks: npt.NDArray[np.int64]) -> Floats:
    """The estimate at one 0-based rank per span: zero below the span's zeros, else the positive bucket
    holding it (the first whose cumulative count exceeds the rank: ``searchsorted(..., side="right")``)."""
    pos_rank = ranks - g.zeros
    idx = (g.cum <= pos_rank[:, None]).sum(axis=1)
    idx = np.minimum(idx, g.cum.shape[1] - 1)
    est = 2.0 * np.power(g.gamma, g.lo + idx) / (1.0 + g.gamma)
    return np.where(pos_rank < 0, 0.0, est)
