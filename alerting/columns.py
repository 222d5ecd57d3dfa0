"""A cluster's chunk of windows read as columns, for the evaluator's usual case: the same merged spans and
span quantiles as reading, decoding and merging the windows (``Evaluator._chunk_merging``), for less.

The evaluator's catch-up read every window of a chunk back as a ``WindowAggregate`` with a decoded
``DDSketch``, grouped them per minute and merged them; the span quantiles (``alerting.spans``) then walked
the decoded sketches once more. Here, from the stored rows (``aggregator.windows_store.window_rows``):

- the event count per group and minute adds up in integer arrays, and every span's count (and whether the
  group has a window in it) is one subtraction of prefix sums: all a cluster of quantile rules reads
  besides the quantiles (``Counted``);
- a sketch is not decoded into an object: the stored bytes of all are decoded at once, in C
  (``aggregator.sketch.stored_columns``), and their positive bucket counts added, run by run, into one matrix
  per batch of groups (a row per window row, a block of buckets per group; a batch at most ``_CELLS``
  cells), summed over the rows and the buckets; a span's count up to a bucket is then four reads, and the
  ranks' buckets are found by bisection for all spans of the batch at once, with the zero counts, extremes
  and the number of sketches per row: the figures ``alerting.spans`` reads from the decoded sketches, the
  same floats;
- sketches are not read at all when no rule of the cluster reads a quantile;
- only a cluster with a rule of the exact fields (an error or hit rate) makes aggregates, without their
  sketches, and merges them as the evaluator does (``catalog.merge(..., sketches=False)``, same order).

Whatever this does not take, the caller reads the merging way (``None``): a window off the span grid, a
sketch it cannot parse or ``alerting.spans`` would leave to the merge (negative values, -0.0 or NaN as an
extreme, accuracies that differ within a group, more than ``MAX_BUCKETS`` buckets). That path then gives
the figures, or raises the error, it always did.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from aggregator import sketch as _sketch
from aggregator.model import SeriesKey, WindowAggregate
from alerting.spans import Floats, SpanQuantiles, _read, _Spans
from alerting.state import GroupKey
from logging_apm._native import load as load_native

Rows = Sequence[tuple[SeriesKey, tuple[Any, ...]]]

_INT64 = np.dtype(np.int64)
# alerting/_columns.c (optional; None: not built, or LOGAPM_NATIVE=0): _add_runs' and _sum_rows' loops in C.
_native = load_native("alerting._columns")


class _Refused(Exception):
    """Something ``alerting.spans`` would leave to the merge, or the decoder would raise for."""


@dataclass(slots=True)
class Chunk:
    """Per group (``keys``) and evaluation point of a chunk: whether the group has a window in the point's
    span (``present``), its event count (``counts``), and the quantiles read (``quantiles``); ``minutes``, when
    the exact fields are read: per window row, the group's aggregate of that minute (without sketch)."""

    keys: list[GroupKey]
    present: npt.NDArray[np.bool_]
    counts: npt.NDArray[np.int64]
    quantiles: SpanQuantiles
    minutes: list[dict[GroupKey, WindowAggregate]] | None


# The most cells of summed counts (int64) made at once: 32 MB (see _chunk_quantiles).
_CELLS = 1 << 22


def _chunk_quantiles(blobs: list[bytes], at: Any, owner: list[int], groups: int, rows: int,
                     first: npt.NDArray[np.int64], ends: npt.NDArray[np.int64], per_span: int,
                     qs: Sequence[float]) -> dict[float, Floats]:
    """``alerting.spans``' figures for the chunk's sketched groups (``owner``: each blob's group, ``0 ..
    groups - 1``), a row of points per group, from their windows' stored sketches (``blobs``, read together by
    ``aggregator.sketch.stored_columns``) and their rows ``at``, a batch of
    groups at a time: the same integer sums, extremes and float steps per span as ``alerting.spans``, for
    ~0.7 of the CPU of doing it group by group (which laid out every span's counts: points x buckets per
    group)."""
    # Group by group (in their order within a group): each group's runs of counts land near each other.
    group = np.array(owner, dtype=np.int64)
    order = np.argsort(group, kind="stable")
    group = group[order]
    at = np.array(at, dtype=np.int64)[order]
    meta, counts = _sketch.stored_columns(list(map(blobs.__getitem__, order.tolist())))
    accuracy, mins, maxs, zeros = meta["accuracy"], meta["min"], meta["max"], meta["zeros"]
    offsets, lengths, starts = meta["offset"], meta["length"], meta["start"]
    first_blob = np.full(groups, len(meta), dtype=np.int64)
    np.minimum.at(first_blob, group, np.arange(len(meta), dtype=np.int64))
    group_accuracy = accuracy[first_blob]
    if (accuracy != group_accuracy[group]).any() or (zeros >= 1 << 63).any():
        raise _Refused  # (sketches of different accuracies within a group: the merge raises)
    extremes = np.concatenate([mins, maxs])
    if np.isnan(extremes).any() or ((extremes == 0.0) & np.signbit(extremes)).any():
        raise _Refused  # alerting.spans leaves NaN and -0.0 extremes to the merge
    if meta["negative"].any():
        raise _Refused  # negative values: left to the merge
    gammas = {float(a): _sketch._mapping(float(a))[0] for a in group_accuracy.tolist()}  # raises for a bad one
    stored = lengths > 0
    lo = np.full(groups, np.iinfo(np.int64).max, dtype=np.int64)
    hi = np.full(groups, np.iinfo(np.int64).min, dtype=np.int64)
    np.minimum.at(lo, group[stored], offsets[stored])
    np.maximum.at(hi, group[stored], (offsets + lengths)[stored])
    bare = hi < lo  # no stored bucket: one empty bucket from 0, as alerting.spans lays it out
    lo[bare], hi[bare] = 0, 1
    widths = hi - lo
    if (widths > _sketch.MAX_BUCKETS).any():
        raise _Refused
    per_row = np.zeros((2, (rows + 1) * groups), dtype=np.int64)  # zero counts and sketches per row and group
    sketch_cell = (at + 1) * groups + group
    np.add.at(per_row[0], sketch_cell, zeros.astype(_INT64))
    np.add.at(per_row[1], sketch_cell, 1)
    sums = np.cumsum(per_row.reshape(2, rows + 1, groups), axis=1)
    row_min = np.full(rows * groups, math.inf)
    row_max = np.full(rows * groups, -math.inf)
    np.minimum.at(row_min, sketch_cell - groups, mins)  # no NaN, no -0.0: the builtin min's and max's, in any order
    np.maximum.at(row_max, sketch_cell - groups, maxs)
    window = first[:, None] + np.arange(per_span, dtype=np.int64)
    n_points = len(first)
    # Per point and group (point-major), as alerting.spans has them per group.
    span_zeros = (sums[0][ends] - sums[0][first]).reshape(-1)
    span_min = row_min.reshape(rows, groups)[window].min(axis=1).reshape(-1)
    span_max = row_max.reshape(rows, groups)[window].max(axis=1).reshape(-1)
    sketched = (sums[1][ends] - sums[1][first]).reshape(-1) > 0
    out = {q: np.empty(n_points * groups) for q in qs}
    # The summed counts are (rows + 1) x the groups' buckets: all groups at once would be ~1 GB for a
    # thousand routes; a batch of groups at a time keeps them under _CELLS (each group's figures are its own).
    cells = np.cumsum((widths + 1) * (rows + 1))
    g0 = 0
    while g0 < groups:
        g1 = max(g0 + 1, int(np.searchsorted(cells, (cells[g0 - 1] if g0 else 0) + _CELLS, "right")))
        b0, b1 = np.searchsorted(group, [g0, g1]).tolist()
        whole = g0 == 0 and g1 == groups
        flat, width, blocks, monotone = _summed_counts(counts, group[b0:b1] - g0, at[b0:b1], offsets[b0:b1],
                                                       starts[b0:b1], lengths[b0:b1], lo[g0:g1], widths[g0:g1],
                                                       rows)
        for accuracy_, gamma in gammas.items():  # one read-out per accuracy: the bucket values' float steps
            chosen = group_accuracy[g0:g1] == accuracy_
            if not chosen.any():
                continue
            sel: Any = slice(None)
            if len(gammas) > 1 or not whole:
                mask = np.zeros(groups, dtype=bool)
                mask[g0:g1] = chosen
                sel = np.tile(mask, n_points)
            spans = _Bisected(flat, width, first, ends, blocks[chosen], widths[g0:g1][chosen], lo[g0:g1][chosen],
                              span_zeros[sel], span_min[sel], span_max[sel], sketched[sel], gamma, monotone)
            for q in qs:
                out[q][sel] = _read(spans, q)
        g0 = g1
    return {q: values.reshape(n_points, groups).T for q, values in out.items()}


def _add_runs(flat: npt.NDArray[np.int64], runs: npt.NDArray[np.int64], places: npt.NDArray[np.int64],
              starts: npt.NDArray[np.int64], lengths: npt.NDArray[np.int64]) -> None:
    """Add each sketch's run of counts ``runs[starts[i]: starts[i] + lengths[i]]`` into ``flat`` from
    ``places[i]``, in order: in C (``alerting/_columns.c``, one loop for them all) when it is built and the
    runs lie where they should, else run by run here (the runs are a few hundred counts; numpy arrays of
    every count's position cost more than the loop)."""
    if _native is not None and _native.add_runs(flat, runs, places, starts, lengths):
        return
    for place, start, n in zip(places.tolist(), starts.tolist(), lengths.tolist(), strict=True):
        flat[place:place + n] += runs[start:start + n]


def _summed_counts(runs: npt.NDArray[np.int64], group: npt.NDArray[np.int64], at: npt.NDArray[np.int64],
                   offsets: npt.NDArray[np.int64], starts: npt.NDArray[np.int64], lengths: npt.NDArray[np.int64],
                   lo: npt.NDArray[np.int64], widths: npt.NDArray[np.int64],
                   rows: int) -> tuple[npt.NDArray[np.int64], int, npt.NDArray[np.int64], bool]:
    """The counts of these groups' sketches (``group``: ``0 ..``, sorted; each sketch's positive counts
    ``runs[start: start + length]`` from bucket ``offset``) summed over the rows and along each row, as
    ``_Bisected`` reads them, with the row width, each group's block and whether the sums are ``monotone``."""
    stored = lengths > 0
    # The counts of a row per window row (row 0 zero), each group's buckets in its block after a zero
    # column, summed over the rows and along each row: a span's cumulative count up to a bucket is then
    # four reads, and no span's counts are laid out (half the work before, in matrices per group).
    blocks = np.cumsum(widths + 1) - widths - 1
    width = int((widths + 1).sum())
    cell = (at + 1) * width + blocks[group] + 1 - lo[group]
    flat = np.zeros((rows + 1) * width, dtype=np.int64)
    _add_runs(flat, runs, (cell + offsets)[stored], starts[stored], lengths[stored])
    # No count negative (form 1's uint64 past 2**63, read as the decoder reads it) and their sum far below 2**63:
    # the sums cannot wrap or decrease. (These sketches' runs are one slice of ``runs``.)
    used = runs[int(starts[0]): int(starts[-1] + lengths[-1])] if len(starts) else runs[:0]
    monotone = not (used < 0).any() and float(used.sum(dtype=np.float64)) < 2.0 ** 61
    _sum_rows(flat, rows + 1, width)
    return flat, width, blocks, monotone


def _sum_rows(flat: npt.NDArray[np.int64], rows: int, width: int) -> None:
    """``flat`` (``rows`` x ``width``) summed along each row, then over the rows, in place: in C
    (``alerting/_columns.c``'s ``summed``, the same int64s) when it is built, else numpy. The catch-up of the
    5M-event benchmark log's hour sums 3 matrices of 2.1M cells in all: 5.3 ms with numpy (its cumsum, a serial
    accumulate through memory, ~2.2 ns a cell), 1.9 ms in C (the row's sum kept in a register); the whole
    ``evaluate_rules`` on that store 92.0 -> 84.5 ms CPU in a fresh process (medians of 11 interleaved rounds,
    load average ~6)."""
    if _native is not None and _native.summed(flat, rows, width):
        return
    counts = flat.reshape(rows, width)
    np.cumsum(counts, axis=1, out=counts)
    for r in range(1, rows):
        np.add(counts[r], counts[r - 1], out=counts[r])


class _Bisected(_Spans):
    """``alerting.spans``' spans of several groups, a row per point and group (point-major), over the
    chunk's counts summed over the rows and along each row (``summed``: ``rows + 1`` rows of ``row_width``,
    a group's buckets after its block's zero column ``blocks``): a span's cumulative count up to a bucket
    is the difference of two rows less the same at the block's zero column (in int64's wrapping arithmetic
    the same number as summing the span's counts first, as ``alerting.spans`` does). ``monotone`` (no count
    negative, no sum near 2**63: the sums do not decrease): ``buckets`` bisects all spans at once, else it
    compares every bucket of a group's spans, as ``alerting.spans`` does."""

    __slots__ = ("before", "end_row", "first_row", "monotone", "width", "widths")

    def __init__(self, summed: npt.NDArray[np.int64], row_width: int, first: npt.NDArray[np.int64],
                 ends: npt.NDArray[np.int64], blocks: npt.NDArray[np.int64], widths: npt.NDArray[np.int64],
                 lo: npt.NDArray[np.int64], zeros: npt.NDArray[np.int64], mins: Any, maxs: Any,
                 valid: npt.NDArray[np.bool_], gamma: float, monotone: bool) -> None:
        points = len(first)
        self.first_row = np.repeat(first, len(blocks)) * row_width + np.tile(blocks, points)
        self.end_row = np.repeat(ends, len(blocks)) * row_width + np.tile(blocks, points)
        self.before = summed[self.end_row] - summed[self.first_row]
        self.width, self.widths = np.tile(widths, points), widths.tolist()
        self.monotone = monotone
        totals = summed[self.end_row + self.width] - summed[self.first_row + self.width] - self.before
        super().__init__(summed, zeros, mins, maxs, valid, np.tile(lo, points), gamma, totals)

    def _cumulative(self, spans: Any, buckets: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        """The ``spans``' cumulative counts up to their ``buckets`` (0-based: column ``bucket + 1``)."""
        if buckets.ndim == 1:
            return (self.cum[self.end_row[spans] + buckets + 1] - self.cum[self.first_row[spans] + buckets + 1]
                    - self.before[spans])
        return (self.cum[self.end_row[spans][:, None] + buckets + 1]
                - self.cum[self.first_row[spans][:, None] + buckets + 1] - self.before[spans][:, None])

    def buckets(self, pos_rank: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        # How many of a span's cumulative counts are at or below the rank, then the last bucket for a
        # rank past them all.
        if not self.monotone:
            found = np.empty(len(pos_rank), dtype=np.int64)
            for g, width in enumerate(self.widths):
                mine = slice(g, None, len(self.widths))
                block = self._cumulative(mine, np.arange(width, dtype=np.int64)[None, :])
                found[mine] = (block <= pos_rank[mine][:, None]).sum(axis=1)
            return np.minimum(found, self.width - 1)
        low = np.zeros(len(pos_rank), dtype=np.int64)
        high = self.width.copy()
        everything = slice(None)
        while True:
            open_ = low < high
            if not open_.any():
                return np.minimum(low, self.width - 1)
            mid = np.minimum((low + high) // 2, self.width - 1)  # (a closed span's stays in its block)
            at_or_below = (self._cumulative(everything, mid) <= pos_rank) & open_
            low = np.where(at_or_below, mid + 1, low)
            high = np.where(open_ & ~at_or_below, mid, high)


@dataclass(frozen=True, slots=True)
class Grid:
    """A chunk's window rows: row ``r`` starts at ``base + r * width``; point ``i``'s span is rows
    ``first[i] .. first[i] + per_span - 1`` (the window starts the evaluator's merging loop visits)."""

    base: int
    width: int
    per_span: int
    rows: int
    first: npt.NDArray[np.int64]

    @classmethod
    def of(cls, chunk: list[int], span: int, width: int) -> Grid:
        per_span = len(range(-span, 0, width))
        return cls(chunk[0] - span, width, per_span, (chunk[-1] - chunk[0]) // width + per_span,
                   np.array([(t - chunk[0]) // width for t in chunk], dtype=np.int64))


def read_chunk(rows_of: Callable[[bool], Rows], group_by: tuple[str, ...], grid: Grid, qs: set[float],
               exact: bool) -> Chunk | None:
    """The chunk's groups, counts and quantiles (``qs``) from ``rows_of(sketches)`` (``window_rows``'
    ``(series, row)`` pairs, by start then tags); ``exact``: also each group's aggregate per minute, the
    exact fields merged as ``catalog.merge(..., sketches=False)`` merges them. None: read it the merging
    way."""
    rows = grid.rows
    index: dict[GroupKey, int] = {}
    keys: list[GroupKey] = []
    group_of: dict[str, int] = {}  # per series (its stored tags): its group
    cells: list[int] = []  # per window: group * rows + row
    events: list[int] = []
    blobs: list[bytes] = []  # the stored sketches, their rows and their groups (numbered as they first come)
    blob_rows: list[int] = []
    blob_groups: list[int] = []
    sketched: dict[int, int] = {}  # per group with a sketch: its number among those
    minute: dict[int, WindowAggregate] | None = {} if exact else None
    try:
        for series, row in rows_of(bool(qs)):
            g = group_of.get(row[1])
            if g is None:
                key = tuple((name, series.tag(name)) for name in group_by)
                g = index.get(key)
                if g is None:
                    g = index[key] = len(keys)
                    keys.append(key)
                group_of[row[1]] = g
            r, off = divmod(row[2] - grid.base, grid.width)
            if off or not 0 <= r < rows:
                return None  # off the span grid: the merging way
            cell = g * rows + r
            cells.append(cell)
            events.append(row[4])
            if row[10] is not None:
                blobs.append(row[10])
                blob_rows.append(r)
                blob_groups.append(sketched.setdefault(g, len(sketched)))
            if minute is not None:
                _merge_row(minute, cell, series, row)
        n_groups = len(keys)
        per_cell = np.zeros(n_groups * rows, dtype=np.int64)
        windows = np.zeros(n_groups * rows, dtype=np.int64)
        if cells:
            at = np.array(cells, dtype=np.int64)
            np.add.at(per_cell, at, np.array(events, dtype=np.int64))
            np.add.at(windows, at, 1)
        first = grid.first
        ends = first + grid.per_span
        quantiles = SpanQuantiles({q: {} for q in sorted(qs)}, set())
        if blobs:
            for q, values in _chunk_quantiles(blobs, blob_rows, blob_groups, len(sketched), rows, first, ends,
                                              grid.per_span, sorted(qs)).items():
                quantiles.values[q].update(zip([keys[g] for g in sketched], values, strict=True))
    except (_Refused, ValueError, OverflowError):
        return None
    minutes: list[dict[GroupKey, WindowAggregate]] | None = None
    if minute is not None:
        minutes = [{} for _ in range(rows)]
        for cell, agg in minute.items():
            g, r = divmod(cell, rows)
            minutes[r][keys[g]] = agg
    return Chunk(keys, _span_sums(windows.reshape(n_groups, rows), first, ends) > 0,
                 _span_sums(per_cell.reshape(n_groups, rows), first, ends), quantiles, minutes)


def _merge_row(minute: dict[int, WindowAggregate], cell: int, series: SeriesKey, row: tuple[Any, ...]) -> None:
    """Add a stored row's exact fields to its group's aggregate of the minute: what ``catalog.merge`` of the
    minute's ``WindowsStore.windows`` aggregates (``_row_to_agg``) gives without sketches, in the same
    order (the rows come by tags)."""
    _family, _tags, start, width, count, errors, total, mn, mx, counters, _blob = row
    agg = minute.get(cell)
    if agg is None:
        agg = minute[cell] = WindowAggregate(series, int(start), int(width))
    elif width > agg.width:  # the merge spans to the latest end
        agg.width = int(width)
    agg.count += int(count)
    agg.errors += int(errors)
    agg.total += float(total)
    if mn is not None and float(mn) < agg.min:
        agg.min = float(mn)
    if mx is not None and float(mx) > agg.max:
        agg.max = float(mx)
    items = orjson.loads(counters)
    if items:
        into = agg.counters
        for k, v in items.items():
            name = str(k)
            into[name] = into.get(name, 0.0) + float(v)


def _span_sums(per_row: npt.NDArray[np.int64], first: npt.NDArray[np.int64],
               ends: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Per group (row of ``per_row``) and point: the sum over the point's span (integers: exact)."""
    cum = np.zeros((per_row.shape[0], per_row.shape[1] + 1), dtype=np.int64)
    np.cumsum(per_row, axis=1, out=cum[:, 1:])
    return cum[:, ends] - cum[:, first]


def group_mapping(chunk: Chunk, i: int) -> Mapping[GroupKey, int]:
    """Point ``i``'s groups with a window in its span, and their event counts."""
    present = np.flatnonzero(chunk.present[:, i]).tolist()
    counts = chunk.counts[:, i].tolist()
    return {chunk.keys[g]: counts[g] for g in present}
