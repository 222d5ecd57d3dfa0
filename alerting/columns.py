"""A cluster's chunk of windows read as columns, for the evaluator's usual case: the same merged spans and
span quantiles as reading, decoding and merging the windows (``Evaluator._chunk_merging``), for less.

The evaluator's catch-up read every window of a chunk back as a ``WindowAggregate`` with a decoded
``DDSketch``, grouped them per minute and merged them; the span quantiles (``alerting.spans``) then walked
the decoded sketches once more. Here, from the stored rows (``aggregator.windows_store.window_rows``):

- the event count per group and minute adds up in integer arrays, and every span's count (and whether the
  group has a window in it) is one subtraction of prefix sums: all a cluster of quantile rules reads
  besides the quantiles (``Counted``);
- a sketch is not decoded into an object: its stored bytes are decompressed and their positive bucket
  counts go straight into the group's matrix of ``alerting.spans`` (one ``np.add.at`` per group and count
  width), with the zero counts, extremes and the number of sketches per row: the arrays
  ``alerting.spans`` builds from the decoded sketches, so the quantiles are the same floats;
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
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from aggregator import sketch as _sketch
from aggregator.model import SeriesKey, WindowAggregate
from alerting.spans import Floats, SpanQuantiles, _read, spans_of
from alerting.state import GroupKey

Rows = Sequence[tuple[SeriesKey, tuple[Any, ...]]]

_HEADER = _sketch._HEADER
_STORE = _sketch._STORE_HEADER
_DTYPES = _sketch._DTYPE_OBJECTS
_INT64 = np.dtype(np.int64)


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


def _gather(data: npt.NDArray[np.uint8], starts: npt.NDArray[np.int64],
            lengths: npt.NDArray[np.int64]) -> npt.NDArray[np.uint8]:
    """The bytes ``data[starts[k]:starts[k] + lengths[k]]`` of every ``k``, one after the other."""
    return data[_gather_index(starts, lengths)]


def _field(data: npt.NDArray[np.uint8], at: npt.NDArray[np.int64], dtype: str) -> npt.NDArray[Any]:
    """The little-endian ``dtype`` field at each byte position ``at``."""
    size = np.dtype(dtype).itemsize
    return data[at[:, None] + np.arange(size)].reshape(-1).view(dtype)


_HEAD = _HEADER.size  # the positive store's header follows the sketch's
_COUNTS = _HEAD + _STORE.size  # its counts follow that
_ITEMSIZE = np.array([d.itemsize for d in _DTYPES], dtype=np.int64)


def _group_quantiles(blobs: list[bytes], at: list[int], rows: int, first: npt.NDArray[np.int64],
                     ends: npt.NDArray[np.int64], per_span: int, qs: Sequence[float]) -> dict[float, Floats]:
    """``alerting.spans``' figures for one group, from its windows' stored sketches (``DDSketch``'s format,
    ``DDSketch._load``: a header, the positive store, the negative store) and their rows ``at``: parsed
    for all of them at once, the counts added into the group's matrix with one ``np.add.at`` per count
    width."""
    bufs = [memoryview(b)[1:] if b[:1] == b"\0" else zlib.decompress(b) for b in blobs]
    sizes = np.fromiter(map(len, bufs), dtype=np.int64, count=len(bufs))
    if (sizes < _COUNTS + _STORE.size).any():
        raise _Refused  # truncated, or not a sketch
    data = np.frombuffer(b"".join(bufs), dtype=np.uint8)
    starts = np.cumsum(sizes) - sizes
    accuracy = _field(data, starts + 2, "<f8")
    mins, maxs = _field(data, starts + 10, "<f8"), _field(data, starts + 18, "<f8")
    zeros = _field(data, starts + 26, "<u8")
    offsets = _field(data, starts + _HEAD, "<i4").astype(np.int64)
    lengths = _field(data, starts + _HEAD + 4, "<u4").astype(np.int64)
    codes = data[starts + _HEAD + 8].astype(np.int64)
    if ((data[starts] != _sketch._FORMAT_VERSION).any() or (accuracy != accuracy[0]).any()
            or ((lengths > 0) & (codes >= len(_DTYPES))).any() or (zeros >= 1 << 63).any()):
        raise _Refused
    extremes = np.concatenate([mins, maxs])
    if np.isnan(extremes).any() or ((extremes == 0.0) & np.signbit(extremes)).any():
        raise _Refused  # alerting.spans leaves NaN and -0.0 extremes to the merge
    nbytes = lengths * _ITEMSIZE[np.minimum(codes, len(_DTYPES) - 1)]
    negative = starts + _COUNTS + nbytes  # the negative store's header
    if (negative + _STORE.size > starts + sizes).any() or _field(data, negative + 4, "<u4").any():
        raise _Refused  # truncated, or negative values: left to the merge
    gamma = _sketch._mapping(float(accuracy[0]))[0]  # raises for an accuracy the decoder refuses
    stored = lengths > 0
    lo = int(offsets[stored].min()) if stored.any() else 0
    width = int((offsets + lengths)[stored].max()) - lo if stored.any() else 1
    if width > _sketch.MAX_BUCKETS:
        raise _Refused
    counts = np.zeros((rows + 1, width), dtype=np.int64)
    flat = counts.reshape(-1)
    row = np.array(at, dtype=np.int64)
    for code in np.unique(codes[stored]).tolist():
        sel = stored & (codes == code)
        values = _gather(data, starts[sel] + _COUNTS, nbytes[sel]).view(_DTYPES[code])  # as the sketch wrote them
        n = lengths[sel]
        index = _gather_index((row[sel] + 1) * width + offsets[sel] - lo, n)
        np.add.at(flat, index, values.astype(_INT64))
    zero_rows = np.zeros(rows + 1, dtype=np.int64)
    np.add.at(zero_rows, row + 1, zeros.astype(_INT64))
    row_min = np.full(rows, math.inf)
    row_max = np.full(rows, -math.inf)
    np.minimum.at(row_min, row, mins)  # no NaN, no -0.0: the builtin min's and max's, in any order
    np.maximum.at(row_max, row, maxs)
    window = first[:, None] + np.arange(per_span, dtype=np.int64)
    spans = spans_of(counts, zero_rows, np.bincount(row + 1, minlength=rows + 1), row_min[window].min(axis=1),
                     row_max[window].max(axis=1), first, ends, lo, gamma)
    return {q: _read(spans, q) for q in qs}


def _gather_index(starts: npt.NDArray[np.int64], lengths: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """The positions ``starts[k] .. starts[k] + lengths[k] - 1`` of every ``k``, one after the other."""
    before = np.cumsum(lengths) - lengths
    return np.repeat(starts - before, lengths) + np.arange(int(lengths.sum()), dtype=np.int64)


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
    sketches: dict[int, tuple[list[bytes], list[int]]] = {}  # per group: its stored sketches and their rows
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
                stored = sketches.get(g)
                if stored is None:
                    stored = sketches[g] = ([], [])
                stored[0].append(row[10])
                stored[1].append(r)
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
        for g, (blobs, sketch_rows) in sketches.items():
            for q, values in _group_quantiles(blobs, sketch_rows, rows, first, ends, grid.per_span,
                                              sorted(qs)).items():
                quantiles.values[q][keys[g]] = values
    except (_Refused, ValueError, OverflowError, zlib.error):
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
