"""Live window accumulators: events -> per (series, window) aggregates, and the run's merged window state.

Two halves:

- ``WindowAccumulator`` runs where the events are decoded (a worker process). ``add(events)`` turns a batch
  into numpy columns (series id, time, value, error and counter flags; see the class docstring), ``flush()``
  folds the buffered columns into the aggregates in bulk (one sort into (series, window) segments; counts,
  sums, min/max, Apdex and slow-query counters, sketch buckets for every value at once) and Python runs once
  per segment. Memory stays bounded by the number of series (and ``FOLD_EVENTS``), never by the input.
  Cost on this 2-core machine (``bench/windows_bench.py``, CPU time of add + take): about 0.8-0.9 us per
  event on a realistic 40 MB part (the previous implementation: 1.3-1.5 us), four fifths of it reading the
  events' fields, each read mostly a cache miss per event (the lookup key, its strings hashed: ~0.5 us; time
  and duration ~0.1 us; a kind's own fields ~0.1 us), the fold ~0.07 us. Many series per window (a generated
  hour: 6,000 windows per 100k events) add ~3.5 us of Python per (series, window). ``add_columns`` takes a
  block's events as columns (``parsers.columns.EventColumns``) instead, with the same result, reading the
  lookup key once per distinct combination of codes rather than once per event (feeding ~0.24 us/event
  instead of ~0.68, take unchanged). The native routine (``aggregator/_windows.c``, optional) does the
  per-event work of both in C: the lookup of a block's columns (``_add_rows_native``), the fold
  (``_fold_native``) and the new windows' aggregates; Python runs per new combination, series and window
  only. ``bench/windows_columns_bench.py`` (the engine's 32 MB parts of the benchmark log, chunks scanned
  just before): add_columns + take 0.138 -> 0.065 CPU us/event against the numpy path, the same aggregates
  (``tests/aggregator/test_windows_native.py``).
- ``WindowState`` runs in the parent: it merges the workers' partial aggregates, then, inside the run's
  transaction, applies them to the stored windows (``apply``): lateness, the series cap, merge with what is
  stored, write back.

Series (the design's metric table), tags named as the metrics' tags:

=================  =====================================  =========================================
family             tags                                   values / counters
=================  =====================================  =========================================
request            route, method, service, env            duration; errors = 5xx or failure;
                                                          satisfied (<= T), tolerating (<= 4T)
db                 db (alias, else system), operation,    duration; errors = failure; slow (> slow ms)
                   table
cache              cache, operation                       duration; hits, misses (reads only)
external           peer_service, operation                duration; errors = failure or 5xx
task               task, queue                            duration; failures (state failure, else
                                                          outcome failure), retries (state retry)
task.queue_wait    task, queue                            task.queue_wait_ms
metric:<name>      the event's metric.tags                metric.value; count_samples (type count)
pipeline           (none)                                 the run's own counts (``pipeline_aggregate``)
=================  =====================================  =========================================
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence, Set
from dataclasses import dataclass, field
from itertools import compress, repeat
from operator import attrgetter, call, itemgetter
from types import ModuleType
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from aggregator.catalog import merge_into
from aggregator.model import SeriesKey, Tags, WindowAggregate, make_tags
from aggregator.sketch import (
    _FORMAT_VERSION,
    MAX_BUCKETS,
    RELATIVE_ACCURACY,
    BucketSlices,
    DDSketch,
    _from_stored,
    merged,
    merged_quick,
)
from aggregator.windows_store import WindowsStore, fold_tags
from logging_apm._native import load as load_native
from parsers.columns import KIND_CODES, METRIC_TYPES, OUTCOMES, TABLE_OF, TASK_STATES, EventColumns

# The per-event work in C (aggregator/_windows.c), or None: not built (it is optional) or turned off with
# LOGAPM_NATIVE=0; then the numpy path below gives the same aggregates (tests/aggregator/test_windows_native.py).
_native: ModuleType | None = load_native("aggregator._windows")

# Families with exactly one aggregate entry per event: the ones whose counts make "events" (late ones too).
EVENT_FAMILIES: Final = frozenset({"request", "db", "cache", "external", "task"})


def is_event_family(family: str) -> bool:
    return family in EVENT_FAMILIES or family.startswith("metric:")


AggKey = tuple[str, Tags, int]  # family, tags, window start
SEAL_WASTE: Final = 8  # WindowState stops sealing when more than 1 in 8 sealed sketches changed again ...
SEAL_SLACK: Final = 256  # ... and more than 256 / 8 did
FOLD_EVENTS: Final = 1 << 18  # events buffered as columns (about 10 MB) before they are folded
FOLDED_MEMO: Final = 1 << 16  # raw keys of folded series remembered per family (faster, exact `folded` counts)
_OTHER_KEY: Final = object()  # marks the raw key of a family's `other` series (no field tuple can equal it)


def cap_warning(family: str, max_series: int) -> str:
    """The one warning a run prints for a family that went over the series cap."""
    return (f"{family}: more than {max_series} series; further tag values fold into 'other' "
            f"(run.max_series_per_metric)")


_KIND = attrgetter("kind")
_TS = attrgetter("ts")
_DURATION = attrgetter("duration_ms")
_QUEUE_WAIT = attrgetter("task_queue_wait_ms")
_METRIC_FIELDS = attrgetter("metric_name", "metric_tags", "metric_value", "metric_type")
_KINDS: Final = tuple(KIND_CODES)
# Per kind, the fields of its series key (the kind first keeps kinds with the same field values apart in one
# table), and the fields its errors depend on.
_KEY_FIELDS: Final[dict[str, tuple[str, ...]]] = {
    "request": ("kind", "http_route", "http_request_method", "service_name", "deployment_environment"),
    "db": ("kind", "db_namespace", "db_system", "db_operation_name", "db_collection_name"),
    "cache": ("kind", "cache_name", "cache_operation"),
    "external": ("kind", "peer_service", "external_operation"),
    "task": ("kind", "task_name", "messaging_destination_name"),
}
_FLAG_FIELDS: Final[dict[str, tuple[str, ...]]] = {  # see _flag_bits
    "request": ("outcome", "http_response_status_code"), "external": ("outcome", "http_response_status_code"),
    "db": ("outcome",), "cache": ("outcome", "cache_hit"), "task": ("outcome", "task_state"),
}
# The key an event is looked up by: its series key, then the few-valued fields its errors and counters
# depend on, so that one lookup gives the series and those flags (see ``WindowAccumulator``). Metric tags
# are a dict, so a metric's series key (the sorted items, as ``_metric_key`` makes it) is built apart, from the
# metric events only; their getter here returns the kind, which stands in the table for every metric event.
_LOOKUP_KEYS: Final[dict[str, Callable[[Any], Any]]] = {
    **{kind: attrgetter(*fields, *_FLAG_FIELDS[kind]) for kind, fields in _KEY_FIELDS.items()},
    "metric": _KIND,
}
_SERIES_KEY: Final = {kind: itemgetter(slice(0, len(fields))) for kind, fields in _KEY_FIELDS.items()}
_FLAG_PART: Final = {kind: itemgetter(slice(len(fields), None)) for kind, fields in _KEY_FIELDS.items()}
_FAILURE: Final = frozenset({"failure"})
_RETRY: Final = frozenset({"retry"})
_COUNT_TYPE: Final = frozenset({"count"})
_SERVER_ERROR: Final = frozenset(range(500, 600))
_TRUE: Final = frozenset({True})
_FALSE: Final = frozenset({False})
_NONE: Final = frozenset({None})
# The lookup table's values: kind code << _CODE_SHIFT | flag bits << _BITS_SHIFT | series index.
_CODE_SHIFT: Final = 40
_BITS_SHIFT: Final = 36
_INDEX_MASK: Final = (1 << _BITS_SHIFT) - 1
_LOOKUP_MAX: Final = 1 << 16  # lookup keys a table holds (beyond, events find their series by a slower path)
_WARM_UP: Final = 512  # events a fresh accumulator takes first, on their own (see ``add``)
_RADIX_KEYS: Final = 1 << 16  # segment keys below this sort as uint16 (numpy's stable sort is a radix sort)
_EXACT_FLOAT: Final = float(1 << 52)  # |ts| / width below this: floor(ts / width) can be checked exactly
# From columns (``parsers.columns``): the column of each flag field, and the attribute's value of each code
# (code -1, absent, reads the last entry: None; the status is its own code, -1 None: see ``_add_kind_columns``).
_FLAG_COLUMN: Final = {"outcome": "outcome", "http_response_status_code": "status", "cache_hit": "cache_hit",
                       "task_state": "task_state"}
_FLAG_VALUE: Final[dict[str, tuple[Any, ...]]] = {
    "outcome": (*OUTCOMES, None), "cache_hit": (False, True, None), "task_state": (*TASK_STATES, None)}
_FLAG_CODES: Final[dict[str, int | None]] = {
    name: len(values) - 1 for name, values in _FLAG_VALUE.items()} | {"http_response_status_code": None}
_COMBO_SPAN: Final = 1 << 62  # combined codes stay below this (int64)
_COMBO_TABLE: Final = 1 << 16  # combined codes below this are numbered by a table, not a sort
_DIRECT_KEYS: Final = 1 << 16  # a fold's (series, window) keys below this (or the values) need no sort
# For the native routine (``aggregator._windows``): the key fields of kinds 0-4 in its order (each kind's
# ``_KEY_FIELDS`` without the kind, kind after kind), the families its blocks fill, and each family's fold.
_NATIVE_FIELDS: Final = tuple(name for kind in _KINDS[:5] for name in _KEY_FIELDS[kind][1:])
_NATIVE_FAMILIES: Final = (*_KINDS[:5], "task.queue_wait")
_FOLD_MODES: Final = {"request": 0, "external": 1, "db": 2, "cache": 3, "task": 4, "task.queue_wait": 5, "metric": 6}
# The counters of each family's fold, in the order it adds them to an aggregate.
_COUNTERS: Final[dict[str, tuple[str, ...]]] = {
    "request": ("satisfied", "tolerating"), "external": (), "db": ("slow",), "cache": ("hits", "misses"),
    "task": ("failures", "retries"), "task.queue_wait": (), "metric": ("count_samples",)}


def _tags(*pairs: tuple[str, Any]) -> Tags:
    """``make_tags`` of pairs already in key order (what it does, without the dict and the sort)."""
    return tuple([(k, str(v)) for k, v in pairs if v is not None and v != ""])


def _series(family: str, raw: tuple[Any, ...]) -> SeriesKey:
    """SeriesKey from a family and the raw field tuple it was grouped by."""
    if family == "request":
        return SeriesKey(family, _tags(("env", raw[3]), ("method", raw[1]), ("route", raw[0]), ("service", raw[2])))
    if family == "db":
        return SeriesKey(family, _tags(("db", raw[0] or raw[1]), ("operation", raw[2]), ("table", raw[3])))
    if family == "cache":
        return SeriesKey(family, _tags(("cache", raw[0]), ("operation", raw[1])))
    if family == "external":
        return SeriesKey(family, _tags(("operation", raw[1]), ("peer_service", raw[0])))
    if family in ("task", "task.queue_wait"):
        return SeriesKey(family, _tags(("queue", raw[1]), ("task", raw[0])))
    if family == "metric":
        return SeriesKey(f"metric:{raw[0]}", make_tags(dict(raw[1])))
    raise ValueError(f"unknown family {family!r}")


def _metric_key(name: str, tags: dict[str, str] | None) -> tuple[str, str, Tags]:
    """A metric event's series key, from its name and tags."""
    return "metric", name, tuple(sorted(tags.items())) if tags else ()


def _flag_bits(kind: str, fields: tuple[Any, ...]) -> int:
    """The flags of a lookup key's flag fields (``_FLAG_FIELDS``). Bit 0: the outcome is a failure. Requests
    and external calls, bit 1: a 5xx status. Cache, bits 1 and 2: a hit, a miss. Task, bits 1, 2 and 3: the
    state is failure, retry, none."""
    bits = int(fields[0] in _FAILURE)
    if kind in ("request", "external"):
        bits |= int(fields[1] in _SERVER_ERROR) << 1
    elif kind == "cache":
        bits |= int(fields[1] in _TRUE) << 1 | int(fields[1] in _FALSE) << 2
    elif kind == "task":
        bits |= int(fields[1] in _FAILURE) << 1 | int(fields[1] in _RETRY) << 2 | int(fields[1] in _NONE) << 3
    return bits


def _flags(members: frozenset[Any], values: Iterable[Any], n: int) -> npt.NDArray[np.bool_]:
    """``value in members`` for each value, in C (``frozenset.__contains__`` mapped)."""
    return np.fromiter(map(members.__contains__, values), dtype=np.bool_, count=n)


def _items(seq: Sequence[Any], at: list[int]) -> Sequence[Any]:
    """The items at the places ``at`` (at least one), in order: a tuple built in C (``itemgetter`` of one
    place returns the item itself, not a tuple)."""
    return (seq[at[0]],) if len(at) == 1 else itemgetter(*at)(seq)


def _pick(events: Sequence[Any], idx: npt.NDArray[np.intp] | None) -> Sequence[Any]:
    """The events at ``idx``, in order; all of them for None."""
    return events if idx is None else _items(events, idx.tolist())


def _combos(parts: list[npt.NDArray[Any]], codes: list[int | None],
            ) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """The distinct rows of the code columns ``parts`` (codes -1 .. ``codes[i]`` - 1 in column ``i``; None:
    the codes are few but sparse, a status): each row's combination number, and a row of each combination.
    The codes combine in mixed radix (the combinations so far renumbered densely when the next column would
    overflow int64), then a table of the combined values numbers them (``np.unique`` past ``_COMBO_TABLE``)."""
    key: npt.NDArray[np.int64] | None = None
    span = off = 1  # key + off: the combined codes + 1, below span
    for part, size in zip(parts, codes, strict=True):
        if size is not None:
            r = size + 1
        else:  # numbered densely (1 .. the distinct codes), in code order
            part = np.add(part, 1, dtype=np.intp)
            used = np.zeros(int(part.max()) + 1, dtype=np.bool_)
            used[part] = True
            part = np.cumsum(used)[part]
            r = int(part.max()) + 2
        if key is None:
            key, span = part.astype(np.int64), r
            continue
        if span * r >= _COMBO_SPAN:
            seen, key = np.unique(key, return_inverse=True)
            span, off = seen.size, 0
        key *= r
        key += part
        span *= r
        off = off * r + 1
    assert key is not None
    if span <= _COMBO_TABLE:  # a table of the values the combined codes take
        key += off
        used = np.zeros(span, dtype=np.bool_)
        used[key] = True
        seen = np.flatnonzero(used)
        number = np.empty(span, dtype=np.intp)
        number[seen] = np.arange(seen.size)
        inv = number[key]
    else:
        seen, inv = np.unique(key, return_inverse=True)
    rows = np.empty(seen.size, dtype=np.intp)
    rows[inv] = np.arange(inv.size)  # any row of each combination (they all have its codes)
    return inv, rows


def _errors_and_flags(family: str, ids: npt.NDArray[np.int64],
                      ) -> tuple[npt.NDArray[np.bool_], dict[str, npt.NDArray[np.bool_]]]:
    """A family's errors and counter flags (``_fold``'s), from its events' lookup values: the flag bits
    (``_flag_bits``; a metric's: counted) above the series id."""
    bits = (ids >> _BITS_SHIFT).astype(np.uint8)  # (the kind's code above them: masked off below)
    failed = (bits & 1).astype(np.bool_)
    flags: dict[str, npt.NDArray[np.bool_]] = {}
    if family in ("request", "external"):
        errors = (bits & 3).astype(np.bool_)  # a failure or a 5xx
    elif family == "task":  # the state's failure, else (no state) the outcome's
        errors = (bits & 2).astype(np.bool_) | ((bits & 8).astype(np.bool_) & failed)
        flags["failures"] = errors
        flags["retries"] = (bits & 4).astype(np.bool_)
    elif family in ("task.queue_wait", "metric"):
        errors = np.zeros(ids.size, dtype=np.bool_)
        if family == "metric":
            flags["count_samples"] = failed
    else:
        errors = failed
    if family == "cache":
        flags["hits"] = (bits & 2).astype(np.bool_)
        flags["misses"] = (bits & 4).astype(np.bool_)
    return errors, flags


def _window_index(ts: npt.NDArray[np.float64], width: int, lo: float, hi: float) -> npt.NDArray[np.int64]:
    """``floor_divide(ts, width)`` as int64, cheaper: ``floor(ts / width)`` is that or one more (the
    quotient rounded up to an integer), and ``q * width > ts`` (exact for an integer width and these
    magnitudes) tells which. Times from 0 on (as a run's are; below 2 ** 52) cheaper still, in integers:
    ``floor(ts / width) == floor(ts) // width`` for an integer width, and ``astype`` truncates: floors them
    (both ways give that exact floor: ``tests/aggregator/test_windows_fold.py``)."""
    if type(width) is not int or max(abs(lo), abs(hi)) / width >= _EXACT_FLOAT:
        return np.floor_divide(ts, width).astype(np.int64)
    if lo >= 0.0 and hi < _EXACT_FLOAT and width < _EXACT_FLOAT:
        whole = ts.astype(np.int64)
        whole //= width
        return whole
    q = np.floor(ts / width)
    q -= q * width > ts
    return q.astype(np.int64)


def _key_extremes(x: npt.NDArray[Any], key: npt.NDArray[np.int64], nkeys: int, seg_keys: npt.NDArray[np.intp],
                  ) -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
    """The min and max of ``x`` per key (``key``: each value's, below ``nkeys``), at the keys ``seg_keys`` (each
    one some value's): ``minimum.at`` / ``maximum.at`` compare a key's values in array order, from +-inf (or
    the integer extremes), as ``reduceat`` over the same values in that order does."""
    if x.dtype.kind == "f":
        hi_init, lo_init = np.inf, -np.inf
    else:
        info = np.iinfo(x.dtype)
        hi_init, lo_init = info.max, info.min
    ext = np.full(nkeys, hi_init, dtype=x.dtype)
    np.minimum.at(ext, key, x)
    mins = ext[seg_keys]
    ext.fill(lo_init)
    np.maximum.at(ext, key, x)
    return mins, ext[seg_keys]


class WindowAccumulator:
    """Per-process accumulator: ``add`` batches of events, ``take`` the aggregates.

    Columnar and vectorised. Each field that several kinds use is read in one pass over the whole batch in
    memory order, ``attrgetter`` mapped in C: reading events in the order they were decoded costs about half as
    much per field as reading one kind's events, scattered among the others. The first pass reads each event's
    kind (which picks the fields) and its lookup key: its series key, then the few-valued fields its errors and
    counters depend on (outcome; the status of requests and external calls, the cache hit, the task state);
    ``dict.get`` mapped over the keys gives, in one lookup, the kind's code, those flags and the series id. Then
    time and duration, one pass each. The other fields of a kind (task queue wait; metric name, tags, value and
    type) are read from its events, once each; a metric's series key is its sorted tag items, built in C too.
    The kind split is a stable radix sort of the codes and numpy gathers, and everything after that is numpy
    over the whole batch (window index, segment sort, sums, min/max, threshold counts, sketch bucket keys for
    every value and one ``bincount`` over (segment, bucket)). Python runs once per (series, window) of the batch
    and once per new lookup key, never per event. The series table is bounded by the memo (``FOLDED_MEMO``) and
    the lookup table by ``_LOOKUP_MAX`` keys; past that, events find their series by re-reading their keys (in
    C, slower).

    Measured and not kept (slower here): one getter of all fields then ``zip(*rows)``, numpy structured
    ``fromiter``, one key over every kind's fields, an (outcome, status) -> error bits table in a pass of its
    own, kind codes instead of the kind strings to pick the key getter. The flags in the lookup key multiply
    its entries by the values they take (part.log: 240 lookup keys for 96 series).
    """

    def __init__(self, width: int = 60, apdex_t_ms: float = 500.0, slow_query_ms: float = 100.0, *,
                 max_series: int | None = None, admitted: Mapping[str, Set[Tags]] | None = None) -> None:
        """``max_series`` (the run's series cap) with ``admitted`` (the series the store already admitted,
        per family) bounds what this accumulator holds: a new series once its family has ``max_series``
        folds into the family's ``other`` series at once, as ``WindowState.apply`` would fold it at the
        commit (which stays the final authority, over what several accumulators admitted)."""
        if width <= 0:
            raise ValueError("window width must be positive")
        self.width = width
        self.apdex_t = apdex_t_ms
        self.slow_ms = slow_query_ms
        self._aggs: dict[AggKey, WindowAggregate] = {}
        # Series key (kind, raw fields...) -> dense series index within the kind, every kind in one table
        # (with the `other` series' keys); per kind, the SeriesKeys by index and how many entries are the
        # kind's. The lookup table: an event's lookup key -> its kind, error bits and series (see
        # _LOOKUP_KEYS; "metric" stands for every metric event, whose series are looked up on their own).
        self._index: dict[Any, int] = {}
        self._sizes: dict[str, int] = {}
        self._lookup: dict[Any, int] = {"metric": KIND_CODES["metric"] << _CODE_SHIFT}
        self._series: dict[str, list[SeriesKey]] = {}
        # Columns waiting to be folded, per family: (lookup values, ts, values); the lookup values hold the
        # series id and the flag bits the family's errors and counters come from (``_errors_and_flags``).
        self._pending: dict[str, list[tuple[Any, ...]]] = {}
        # The lookup of scanned columns in C, mirroring ``_lookup`` (and the fold in C): None without it.
        self._native: Any = None if _native is None else _native.Router(
            _KINDS, _FLAG_VALUE["outcome"], _FLAG_VALUE["cache_hit"], _FLAG_VALUE["task_state"])
        self._buffered = 0
        self.max_series = max_series
        self._admitted: Mapping[str, Set[Tags]] = admitted or {}
        self._held: dict[str, set[Tags]] = {}  # per series family: admitted tags, the store's included
        self.folded: dict[str, int] = {}  # series family -> new series folded here (events past the memo)
        self._mapping = DDSketch()  # its bucket mapping, for whole batches
        self.events = 0
        self.by_kind: dict[str, int] = {}
        self.max_ts: float | None = None
        self.min_ts: float | None = None

    # --- per batch ------------------------------------------------------------------------------------

    def add(self, events: Sequence[Any]) -> None:
        """Take one batch of events: its columns are extracted now (compact numpy arrays), folded into the
        aggregates once ``FOLD_EVENTS`` are buffered (so the per-(series, window) Python work is amortised
        over many chunks) and at ``take``."""
        n = len(events)
        self._take_batches(n, lambda lo, hi: self._add_batch(events if hi - lo == n else events[lo:hi]))

    def _take_batches(self, n: int, add_batch: Callable[[int, int], None]) -> None:
        """Take ``n`` events as batches (``add_batch(lo, hi)``), then fold if ``FOLD_EVENTS`` are buffered."""
        if not n:
            return
        if len(self._lookup) == 1 and n > 4 * _WARM_UP:
            # A fresh accumulator knows no series: its first few hundred events register the usual ones, so
            # that few of the rest miss the table (a miss reads its event again, in Python).
            add_batch(0, _WARM_UP)
            add_batch(_WARM_UP, n)
        else:
            add_batch(0, n)
        self._buffered += n
        if self._buffered >= FOLD_EVENTS:
            self.flush()

    def _add_batch(self, events: Sequence[Any]) -> None:
        m = len(events)
        # The series key of every event, its kind read along (one pass: the table's value carries the kind's
        # code, so the kinds need no pass of their own).
        try:
            ids = np.fromiter(map(self._lookup.get, map(call, map(_LOOKUP_KEYS.__getitem__, map(_KIND, events)),
                                                        events), repeat(-1)), dtype=np.int64, count=m)
        except KeyError:  # a kind no family takes (the parsers never produce one): its events are skipped
            known = [e for e in events if e.kind in KIND_CODES]
            if known:
                self._add_batch(known)
            return
        codes = (ids >> _CODE_SHIFT).astype(np.int8)
        miss = np.flatnonzero(ids < 0)
        if miss.size:  # keys not in the table yet (see _resolve): their kinds read again
            at = miss.tolist()
            codes[miss] = np.fromiter(map(KIND_CODES.__getitem__, map(_KIND, _items(events, at))), dtype=np.int8,
                                      count=len(at))
        self._add(events, codes, ids)

    def _add(self, events: Sequence[Any], codes: npt.NDArray[np.int8], ids: npt.NDArray[np.int64]) -> None:
        m = len(events)
        present: list[int] = np.bincount(codes, minlength=len(_KINDS)).tolist()
        # One pass per field over the whole batch, in memory order (see the class docstring).
        ts = np.fromiter(map(_TS, events), dtype=np.float64, count=m)
        timed = m - present[KIND_CODES["metric"]]
        values = np.fromiter(map(_DURATION, events), dtype=np.float64, count=m) if timed else ts
        if max(present) == m:  # one kind: nothing to split
            order = None
        else:
            order = np.argsort(codes, kind="stable")  # a radix sort; keeps each kind's events in order
            ids, ts, values = ids[order], ts[order], values[order]
        for _, kind, pos, end in self._kinds(present):
            idx = None if order is None else order[pos:end]  # the kind's events, by their place in the batch
            if kind == "metric":
                self._add_metrics(_pick(events, idx), ts[pos:end])
            else:
                self._add_kind(kind, events, idx, ids[pos:end], ts[pos:end], values[pos:end])

    def _kinds(self, present: list[int]) -> Iterator[tuple[int, str, int, int]]:
        """The kinds a batch has (``present``: its events per kind code), each counted in ``by_kind`` and
        ``events``, with its code and its place ``pos:end`` among the batch's events sorted by kind."""
        pos = 0
        for code, kind in enumerate(_KINDS):
            k = present[code]
            if k:
                self.by_kind[kind] = self.by_kind.get(kind, 0) + k
                self.events += k
                yield code, kind, pos, pos + k
                pos += k

    # --- per batch, from columns ---------------------------------------------------------------------

    def add_columns(self, cols: EventColumns) -> None:
        """``add`` of a block's events given as columns (``parsers.columns.EventColumns``): the same
        aggregates, series, counters and counts as ``add`` of the same events, in any sequence of calls of
        either (the state is the same too: series registered in the order they first occur, the lookup
        table, the cap's admitted and folded series), without one Python object per event.

        Per kind, the codes of an event's lookup key fields (``_KEY_FIELDS``, ``_FLAG_FIELDS``) are combined
        into one int64 (mixed radix) and numpy numbers the block's distinct combinations (a few hundred); the
        lookup key ``add`` would build is built once per combination (strings from the block's tables) and
        looked up in the same table, the misses resolved by ``add``'s own code (``_resolve_keys``) in the
        order their first events come (event by event near the folded-key memo's end, where ``add``
        registers such a key again at each event), and the ids go back to the events with one gather. Time,
        duration and queue wait are the columns themselves; metric events (rare) are keyed one by one, as in
        ``add``. Feeding costs about a third of ``add``'s (``bench/windows_bench.py --columns``: 0.24 vs
        0.68 CPU us/event on a generated hour; ``take`` is the same for both); with the native routine
        (``_add_rows_native``) 0.033 against 0.081 on the benchmark log's scanned chunks."""
        self._take_batches(cols.n, lambda lo, hi: self._add_rows(cols, lo, hi))  # add's batches

    def _add_rows(self, cols: EventColumns, lo: int, hi: int) -> None:
        """The events ``lo:hi`` of ``cols`` as one batch (``_add`` of columns)."""
        router = self._native
        if router is not None:
            self._add_rows_native(router, cols, lo, hi)
            return
        m = hi - lo
        codes = cols.kind[lo:hi]
        present: list[int] = np.bincount(codes, minlength=len(_KINDS)).tolist()
        # A radix sort of the kinds (unless there is one): it keeps each kind's events in order.
        order = np.arange(lo, hi) if max(present) == m else np.argsort(codes, kind="stable") + lo
        for _, kind, pos, end in self._kinds(present):
            idx = order[pos:end]  # the kind's events, by their place in cols
            if kind == "metric":
                self._add_metric_columns(cols, lo, idx)
            else:
                self._add_kind_columns(kind, cols, idx)

    def _add_metric_columns(self, cols: EventColumns, lo: int, idx: npt.NDArray[np.intp]) -> None:
        """The metric events ``idx`` (their places in ``cols``, in order, all from ``lo`` on)."""
        first = int(np.count_nonzero(cols.kind[:lo] == KIND_CODES["metric"]))  # metric_tags: one per metric event
        table: list[Any] = [*cols.tables["metric_name"], None]
        self._add_metric_series(list(map(table.__getitem__, cols.codes["metric_name"][idx].tolist())),
                                cols.metric_tags[first:first + idx.size], cols.ts[idx], cols.metric_value[idx],
                                cols.metric_type[idx] == METRIC_TYPES["count"])

    def _add_rows_native(self, router: Any, cols: EventColumns, lo: int, hi: int) -> None:
        """``_add_rows`` by the native routine: one pass looks every event's combination of codes up in its
        table (the keys ``_lookup`` holds, with its values); the combinations it has not seen come back as
        lookup keys, once each, and are resolved here as ``_add_kind_columns`` resolves its misses (the same
        calls in the same order: the same series, lookup table and folded counts); a second pass writes the
        kinds' pending columns. Metric events (rare) go as in ``_add_rows``."""
        counts, misses = router.probe(
            cols.kind, lo, hi, tuple([(cols.codes[name], cols.tables[TABLE_OF[name]]) for name in _NATIVE_FIELDS]),
            cols.outcome, cols.status, cols.cache_hit, cols.task_state, cols.queue_wait_ms)
        resolved: list[Any] = [None] * 5
        for code, kind, _, _ in self._kinds(list(counts[:6])):
            if code < 5:
                self._family(kind)
                got = misses[code]
                if got is not None:
                    resolved[code] = self._resolve_native(kind, got[0], np.frombuffer(got[1], dtype=np.int32))
        out = tuple([None if not k else (np.empty(k, dtype=np.int64), np.empty(k), np.empty(k))
                     for k in (*counts[:5], counts[6])])
        router.emit(cols.kind, cols.ts, cols.duration_ms, cols.queue_wait_ms, tuple(resolved), out)
        pending = self._pending
        for family, columns in zip(_NATIVE_FAMILIES, out, strict=True):
            if columns is not None:
                pending.setdefault(family, []).append(columns)
        if counts[5]:
            self._add_metrics_native(cols, lo, hi, counts[5])

    def _add_metrics_native(self, cols: EventColumns, lo: int, hi: int, k: int) -> None:
        """``_add_metric_columns`` of the ``k`` metric events among ``lo:hi`` by the native routine: each one's
        series key (``_metric_key``'s) looked up in ``_index`` in C (the keys found kept in a cache read by the
        hashes of the name and tags, no key built), the new ones registered here in the order they come, as
        ``_add_metric_series`` does."""
        self._family("metric")
        ids, ts, values = np.empty(k, dtype=np.int64), np.empty(k), np.empty(k)
        missed = self._native.metric_series(cols.kind, lo, hi, cols.codes["metric_name"], cols.tables["metric_name"],
                                            cols.metric_tags, self._index, cols.metric_type, METRIC_TYPES["count"],
                                            cols.ts, cols.metric_value, ids, ts, values)
        if missed is not None:
            places, keys, counted = missed
            ids[places] = self._series_ids("metric", keys) | np.array(counted, dtype=np.int64) << _BITS_SHIFT
        self._pending.setdefault("metric", []).append((ids, ts, values))

    def _resolve_native(self, kind: str, keys: list[Any], inv: npt.NDArray[np.int32],
                        ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """The lookup values of the events whose combination the native table has not (``keys``: the
        combinations' lookup keys, in the order their first events come; ``inv``: each such event's), as
        ``_add_kind_columns`` gives them, and per key what the table takes: its value in ``_lookup`` now, or
        -1 (a key ``_lookup`` does not hold: a folded series past the memo, a full table)."""
        lookup = self._lookup
        found = list(map(lookup.get, keys, repeat(-1)))
        miss = [i for i, f in enumerate(found) if f < 0]
        cap = self.max_series
        if miss and cap is not None and self._sizes[kind] + 2 * len(miss) >= FOLDED_MEMO + cap:
            values = self._combo_values(kind, keys, inv, ordered=True)  # near the memo's end: event by event
        else:  # (as _resolve_combos does it, in lists: a block's misses are a few dozen keys)
            if miss:
                for i, v in zip(miss, self._key_values(kind, [keys[i] for i in miss]), strict=True):
                    found[i] = v
            values = np.array(found, dtype=np.int64)[inv]
        return values, np.array(list(map(lookup.get, keys, repeat(-1))), dtype=np.int64)

    def _combo_values(self, kind: str, keys: list[Any], inv: npt.NDArray[np.integer[Any]], ordered: bool = False,
                      ) -> npt.NDArray[np.int64]:
        """The lookup values of events given as their combinations' lookup keys ``keys`` and each event's
        combination ``inv``: from the table, the misses resolved (``ordered``: ``keys`` come in the order of
        their first events)."""
        found = np.fromiter(map(self._lookup.get, keys, repeat(-1)), dtype=np.int64, count=len(keys))
        missed = found < 0
        ev = None
        if missed.any():
            ev = self._resolve_combos(kind, keys, found, missed, inv, ordered)
        values = found[inv]
        if ev is not None:
            values[ev[0]] = ev[1]
        return values

    def _add_kind_columns(self, kind: str, cols: EventColumns, idx: npt.NDArray[np.intp]) -> None:
        """One kind's events (``idx``: their places in ``cols``, in order): ``_add_kind`` from columns."""
        self._family(kind)
        names = _KEY_FIELDS[kind][1:]
        parts = [cols.codes[name][idx] for name in names]
        parts += [getattr(cols, _FLAG_COLUMN[name])[idx] for name in _FLAG_FIELDS[kind]]
        sizes: list[int | None] = [len(cols.tables[TABLE_OF[name]]) for name in names]
        inv, rep = _combos(parts, sizes + [_FLAG_CODES[name] for name in _FLAG_FIELDS[kind]])
        # Each combination's lookup key, as _LOOKUP_KEYS[kind] reads it from an event.
        fields: list[list[Any]] = []
        for name, part in zip((*names, *_FLAG_FIELDS[kind]), parts, strict=True):
            got = part[rep].tolist()
            if name not in _FLAG_COLUMN:
                strings: list[str | None] = [*cols.tables[TABLE_OF[name]], None]
                fields.append(list(map(strings.__getitem__, got)))
            elif name in _FLAG_VALUE:
                fields.append(list(map(_FLAG_VALUE[name].__getitem__, got)))
            else:  # the status
                fields.append([None if c < 0 else c for c in got])
        ids = self._combo_values(kind, list(zip(repeat(kind), *fields)), inv)
        ts = cols.ts[idx]
        self._pend(kind, ids, ts, cols.duration_ms[idx])
        if kind == "task":
            waits = cols.queue_wait_ms[idx]
            has = ~np.isnan(waits)
            if has.any():
                self._pending.setdefault("task.queue_wait", []).append((ids[has], ts[has], waits[has]))

    def _resolve_combos(self, kind: str, keys: list[Any], found: npt.NDArray[np.int64],
                        missed: npt.NDArray[np.bool_], inv: npt.NDArray[np.integer[Any]], ordered: bool,
                        ) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.int64]] | None:
        """``_resolve`` of the combinations that missed the table (``found`` -1), in the order their first
        events come (``ordered``: the order of ``keys``), once per combination. Near the memo's end (where ``_series_ids`` registers a folded key
        again at each of its events) the missed events' keys go one by one, as ``add``'s do: -> those events
        (places in the kind) and their lookup values, else None."""
        ev = None
        if ordered:  # the keys come in the order of their first events already
            miss = np.flatnonzero(missed)
        else:
            ev = np.flatnonzero(missed[inv])  # the events whose key missed, in order
            combos, first = np.unique(inv[ev], return_index=True)
            miss = combos[np.argsort(first)]
        cap = self.max_series
        if cap is None or self._sizes[kind] + 2 * miss.size < FOLDED_MEMO + cap:  # every new key is remembered
            self._resolve_keys(kind, list(_items(keys, miss.tolist())), found, miss)
            return None
        if ev is None:
            ev = np.flatnonzero(missed[inv])
        ids = np.full(ev.size, -1, dtype=np.int64)
        self._resolve_keys(kind, list(_items(keys, inv[ev].tolist())), ids, np.arange(ev.size))
        return ev, ids

    def _resolve(self, kind: str, events: Sequence[Any], idx: npt.NDArray[np.intp] | None,
                 ids: npt.NDArray[np.int64]) -> None:
        """Fill in the lookup values of the events whose lookup key is not in the table (-1): their series
        (``_series_ids``) and error bits, worked out once per distinct key; the keys of remembered series
        join the table while it has room."""
        miss = np.flatnonzero(ids < 0)
        if not miss.size:  # the usual case after warm-up
            return
        at = (miss if idx is None else idx[miss]).tolist()
        self._resolve_keys(kind, list(map(_LOOKUP_KEYS[kind], _items(events, at))), ids, miss)

    def _resolve_keys(self, kind: str, keys: list[Any], ids: npt.NDArray[np.int64],
                      miss: npt.NDArray[np.intp]) -> None:
        """``_resolve`` of the lookup keys ``keys`` (in order of occurrence), whose values go to ``ids[miss]``."""
        ids[miss] = self._key_values(kind, keys)

    def _key_values(self, kind: str, keys: list[Any]) -> list[int]:
        """The lookup values of the lookup keys ``keys`` (in order of occurrence), their series registered
        (``_series_list``), the keys of remembered series entered in the table while it has room. In lists:
        a block's misses are a few dozen keys, for which numpy's calls cost more than the work."""
        js = self._series_list(kind, list(map(_SERIES_KEY[kind], keys)))
        flagged = list(map(_FLAG_PART[kind], keys))
        bits_of = {f: _flag_bits(kind, f) for f in dict.fromkeys(flagged)}  # a few values each
        bits = list(map(bits_of.__getitem__, flagged))
        code = KIND_CODES[kind] << _CODE_SHIFT
        values = [code | b << _BITS_SHIFT | j for b, j in zip(bits, js, strict=True)]
        lookup = self._lookup
        if len(lookup) < _LOOKUP_MAX:
            index = self._index
            for lkey, b in dict(zip(keys, bits, strict=True)).items():  # distinct keys
                j = index.get(_SERIES_KEY[kind](lkey))
                if j is not None:  # a remembered series (see _register)
                    lookup[lkey] = code | b << _BITS_SHIFT | j
                    if len(lookup) >= _LOOKUP_MAX:
                        break
        return values

    def _series_ids(self, kind: str, raws: list[Any]) -> npt.NDArray[np.int64]:
        """``_series_list`` as an array."""
        return np.array(self._series_list(kind, raws), dtype=np.int64)

    def _series_list(self, kind: str, raws: list[Any]) -> list[int]:
        """The series of each series key: new ones registered in the order they first occur (Python once per
        new key, so a part's first chunk, where every key is new, costs no Python per event), and keys folded
        past the memo, which register (and count) again at every event, as documented in ``_register``."""
        index = self._index
        js = list(map(index.get, raws, repeat(-1)))
        unknown = [i for i, j in enumerate(js) if j < 0]
        if not unknown:
            return js
        new = [raws[i] for i in unknown]
        first = {raw: self._register(kind, raw, _series(kind, raw[1:])) for raw in dict.fromkeys(new)}
        got = list(map(index.get, new, repeat(-1)))
        for i, g in enumerate(got):  # keys not remembered: their first event was counted above, the others now
            if g < 0:
                raw = new[i]
                j = first.pop(raw, None)
                got[i] = self._register(kind, raw, _series(kind, raw[1:])) if j is None else j
        for i, g in zip(unknown, got, strict=True):
            js[i] = g
        return js

    def _register(self, kind: str, lkey: Any, sk: SeriesKey) -> int:
        """The series id of a new series key: its own series, or its family's `other` one over the cap."""
        index = self._index
        series = self._series[kind]
        cap = self.max_series
        if cap is not None:
            fam = sk.family
            held = self._held.get(fam)
            if held is None:
                held = self._held[fam] = set(self._admitted.get(fam, ()))
            if sk.tags not in held and len(held) >= cap:
                folded = fold_tags(sk.tags)
                held.add(folded)  # counted as the commit counts it
                okey = (_OTHER_KEY, fam, folded)
                j = index.get(okey)
                if j is None:
                    j = index[okey] = len(series)
                    self._sizes[kind] += 1
                    series.append(SeriesKey(fam, folded))
                self.folded[fam] = self.folded.get(fam, 0) + 1
                # Remembering the folded key spares rebuilding its tags next time; past the memo each event
                # of an unremembered key is rebuilt (and counted) again, and memory stays bounded.
                if self._sizes[kind] < FOLDED_MEMO + cap:
                    index[lkey] = j
                    self._sizes[kind] += 1
                return j
            held.add(sk.tags)
        j = index[lkey] = len(series)
        self._sizes[kind] += 1
        series.append(sk)
        return j

    def _family(self, kind: str) -> None:
        if kind not in self._series:
            self._series[kind] = []
            self._sizes[kind] = 0

    def _add_kind(self, kind: str, events: Sequence[Any], idx: npt.NDArray[np.intp] | None,
                  ids: npt.NDArray[np.int64], ts: npt.NDArray[np.float64], values: npt.NDArray[np.float64]) -> None:
        """One kind's columns (``idx``: its events' places in ``events``, None for all of them; ``ids``: their
        lookup values, -1 where the key missed); the kind's own fields are read from its events, which are
        picked out only for the kinds that have such fields."""
        m = ids.size
        self._family(kind)
        self._resolve(kind, events, idx, ids)
        self._pend(kind, ids, ts, values)
        if kind == "task":
            waits = list(map(_QUEUE_WAIT, _pick(events, idx)))
            has = ~_flags(_NONE, waits, m)
            k = int(has.sum())
            if k:
                wv = np.fromiter(compress(waits, has.tolist()), dtype=np.float64, count=k)
                self._pending.setdefault("task.queue_wait", []).append((ids[has], ts[has], wv))

    def _pend(self, kind: str, ids: npt.NDArray[np.int64], ts: npt.NDArray[np.float64],
              values: npt.NDArray[np.float64]) -> None:
        """Buffer one kind's columns from its events' lookup values (all resolved)."""
        self._pending.setdefault(kind, []).append((ids, ts, values))

    def _add_metrics(self, sub: Sequence[Any], ts: npt.NDArray[np.float64]) -> None:
        m = len(sub)
        names, tags, metric_values, types = zip(*map(_METRIC_FIELDS, sub), strict=True)
        self._add_metric_series(names, tags, ts, np.fromiter(metric_values, dtype=np.float64, count=m),
                                _flags(_COUNT_TYPE, types, m))

    def _add_metric_series(self, names: Sequence[str], tags: Sequence[Any],
                           ts: npt.NDArray[np.float64], values: npt.NDArray[np.float64],
                           counted: npt.NDArray[np.bool_]) -> None:
        """Metric events from their names, tags, times, values and count flags."""
        m = len(names)
        self._family("metric")
        try:  # the keys _metric_key makes, built in C: sorted tag items
            sid = np.fromiter(map(self._index.get, zip(repeat("metric"), names,
                                                       map(tuple, map(sorted, map(dict.items, tags)))),
                                  repeat(-1)), dtype=np.int64, count=m)
        except TypeError:  # an event without tags
            sid = np.fromiter(map(self._index.get, map(_metric_key, names, tags), repeat(-1)), dtype=np.int64,
                              count=m)
        miss = np.flatnonzero(sid < 0)
        if miss.size:
            sid[miss] = self._series_ids("metric", [_metric_key(names[i], tags[i]) for i in miss.tolist()])
        self._pending.setdefault("metric", []).append((sid | counted.astype(np.int64) << _BITS_SHIFT, ts, values))

    def flush(self) -> None:
        """Fold the buffered columns into the aggregates."""
        pending, self._pending = self._pending, {}
        self._buffered = 0
        for family, batches in pending.items():
            if family == "task.queue_wait":
                series = [SeriesKey(family, sk.tags) for sk in self._series.get("task", [])]
            else:
                series = self._series[family]
            if len(batches) == 1:
                ids, ts, values = batches[0]
            else:
                ids, ts, values = (np.concatenate(column) for column in zip(*batches, strict=True))
            if self._native is None or not self._fold_native(family, series, ids, ts, values):
                self._fold(family, series, ids & _INDEX_MASK, ts, values, *_errors_and_flags(family, ids))

    def _fold_native(self, family: str, series: list[SeriesKey], ids: npt.NDArray[np.int64],
                     ts: npt.NDArray[np.float64], values: npt.NDArray[np.float64]) -> bool:
        """``_fold`` in C (``aggregator._windows.fold``: one pass finds each value's segment, mostly its
        series' last one, and adds it up; one counts the sketch buckets): the same segments, sums (added in the
        same order), counters, extremes and buckets, and the new windows' aggregates made in C too
        (``merge_new``). -> False where it declines (times before 0 or past 2 ** 52, a width not an integer):
        ``_fold`` does those."""
        width = self.width
        if type(width) is not int or ids.dtype != np.int64:
            return False
        ids, ts, values = np.ascontiguousarray(ids), np.ascontiguousarray(ts), np.ascontiguousarray(values)
        mapping = self._mapping
        with np.errstate(all="ignore"):  # zeros, negatives, NaN: their segments take the general path
            logs = np.log(values)  # numpy's log, as key_of takes it (its SIMD loops may round unlike libm)
        assert _native is not None
        got = _native.fold(ids, ts, values, logs, width, _FOLD_MODES[family], float(self.apdex_t),
                           float(self.slow_ms), mapping.min_indexable, mapping._multiplier, RELATIVE_ACCURACY,
                           _FORMAT_VERSION, MAX_BUCKETS, len(series))
        if got is None:
            return False
        every, tmin, tmax, *arrays, blobs = got
        i64, f64 = np.int64, np.float64
        cols: list[Any] = [np.frombuffer(a, dtype=t) for a, t in zip(
            arrays, (i64, i64, i64, i64, f64, f64, f64, np.bool_, i64, i64, i64, i64, f64, i64), strict=True)]
        sid, win, counts, errs, sums, mins, maxs, positive, kmin, widths, base, binned, extras, order = cols
        nseg = counts.size
        starts = np.cumsum(counts) - counts  # each segment's first value, the values sorted by segment
        v = values
        if not every:  # min / max as reduceat gives them over the values in order (see _fold)
            v = values[order]
            mins = np.minimum.reduceat(v, starts)
            maxs = np.maximum.reduceat(v, starts)
        names = _COUNTERS[family]
        # the new windows whose sketch came made, in C (_merge's loop: ~1 us a window instead of ~2.5)
        todo = _native.merge_new(self._aggs, series, sid, win, width, counts, errs, sums, mins, maxs, extras, names,
                                 blobs, WindowAggregate, _from_stored)
        if todo:  # the rest, in order (a new one holds its place in the dict, as None)
            at = np.array(todo, dtype=np.intp)
            extra = {name: extras[i * nseg: (i + 1) * nseg][at].tolist() for i, name in enumerate(names)}
            self._merge(series, sid[at].tolist(), (win[at] * width).tolist(), counts[at], errs[at], sums[at],
                        mins[at], maxs[at], positive[at], base[at], widths[at], kmin[at], starts[at], extra, binned,
                        v, tmin, tmax, [blobs[i] for i in todo])
        else:
            self._extend_times(tmin, tmax)
        return True

    def _fold(self, family: str, series: list[SeriesKey], sid: npt.NDArray[np.int64], ts: npt.NDArray[np.float64],
              values: npt.NDArray[np.float64], errors: npt.NDArray[np.bool_],
              flags: dict[str, npt.NDArray[np.bool_]]) -> None:
        """Aggregate one family's batch per (series, window) segment and merge into the aggregates.

        A segment's key is ``series * span + window`` (``span``: the batch's windows). While there are few
        possible keys (``_DIRECT_KEYS``, or up to one per value) the segments need no sort: ``bincount`` over
        the keys themselves gives counts, sums and threshold counts, ``minimum.at`` / ``maximum.at`` the
        extremes and the sketch key ranges (numpy's ``ufunc.at``, in array order). Else they come from one
        stable sort of the keys (a radix sort while there are fewer than 65,536 keys). Either way each
        segment's values are taken in batch order: the sums (``bincount`` adds in array order) are the same to
        the bit as a running sum over the segment's events. Min / max: the same values, but numpy's
        ``reduceat`` (SIMD) and a running min may differ in the sign of a zero result, so a segment holding a
        value not above the sketch's smallest bucket (zero, negative: gauges) takes ``reduceat``'s, from the
        values sorted then (``tests/aggregator/test_windows_fold.py`` holds the two ways to each other)."""
        n = ts.size
        tmin, tmax = float(ts.min()), float(ts.max())
        win = _window_index(ts, self.width, tmin, tmax)
        wmin = int(win.min())
        span = int(win.max()) - wmin + 1
        key = sid * span
        win -= wmin
        key += win
        nkeys = (int(sid.max()) + 1) * span
        direct = nkeys <= max(_DIRECT_KEYS, n)
        if direct:
            at_key = np.bincount(key, minlength=nkeys)
            seg_keys = np.flatnonzero(at_key)
            nseg = seg_keys.size
            counts = at_key[seg_keys]
            inv = key  # each value's place in the per-key arrays (nkeys of them), taken at seg_keys
            v = values
            starts = np.cumsum(counts) - counts  # each segment's first value, the values sorted by key (below)
            mins, maxs = _key_extremes(v, key, nkeys, seg_keys)
            errors_, flags_ = errors, flags

            def per_segment(weights: npt.NDArray[Any]) -> npt.NDArray[Any]:
                return np.bincount(key, weights=weights, minlength=nkeys)[seg_keys]
        else:
            if nkeys <= _RADIX_KEYS:
                order = np.argsort(key.astype(np.uint16), kind="stable")
            else:
                order = np.argsort(key, kind="stable")
            sk = key[order]
            starts = np.flatnonzero(np.concatenate(([True], sk[1:] != sk[:-1])))
            nseg = starts.size
            seg_keys = sk[starts]
            counts = np.diff(np.append(starts, n))
            inv = np.repeat(np.arange(nseg, dtype=np.intp), counts)  # segment of each sorted value
            v = values[order]
            mins = np.minimum.reduceat(v, starts)
            maxs = np.maximum.reduceat(v, starts)
            errors_ = errors[order]
            flags_ = {name: flag[order] for name, flag in flags.items()}

            def per_segment(weights: npt.NDArray[Any]) -> npt.NDArray[Any]:
                return np.bincount(inv, weights=weights, minlength=nseg)
        sums = per_segment(v)
        err = per_segment(errors_) if errors.any() else np.zeros(nseg)
        extra: dict[str, list[float]] = {}
        if family == "request":
            sat = per_segment(v <= self.apdex_t)
            extra["satisfied"] = sat.tolist()
            extra["tolerating"] = (per_segment(v <= 4.0 * self.apdex_t) - sat).tolist()
        elif family == "db":
            extra["slow"] = per_segment(v > self.slow_ms).tolist()
        for name, flag in flags_.items():
            extra[name] = per_segment(flag).tolist()

        # Sketch buckets for every positive value at once; segments with zeros or negatives (gauges only)
        # take the sketch's general path.
        mapping = self._mapping
        floor = mapping.min_indexable
        positive = mins > floor
        every = bool(positive.all())
        keys = mapping.key_of(v if every else np.where(v > floor, v, 1.0))
        if direct:
            kmin, kmax = _key_extremes(keys, key, nkeys, seg_keys)
        else:
            kmin = np.minimum.reduceat(keys, starts)
            kmax = np.maximum.reduceat(keys, starts)
        widths = kmax - kmin + 1 if every else np.where(positive, kmax - kmin + 1, 0)
        base = np.zeros(nseg, dtype=np.int64)
        np.cumsum(widths[:-1], out=base[1:])
        if direct:  # per key, at the segments' keys
            off = np.zeros(nkeys, dtype=np.int64)
            off[seg_keys] = base - kmin
            kept_ = np.zeros(nkeys, dtype=np.bool_)
            kept_[seg_keys] = positive
        else:
            off, kept_ = base - kmin, positive
        flat = keys + off[inv]
        if not every:
            flat = flat[kept_[inv]]
            if direct:  # the general path takes each such segment's values in order: sorted now, stably
                v = values[np.argsort(key, kind="stable")]
                # and min / max as reduceat gives them, which may differ from the in-order ones in the sign
                # of a zero (its SIMD loops): only where a segment holds a zero, one of these
                mins = np.minimum.reduceat(v, starts)
                maxs = np.maximum.reduceat(v, starts)
        binned = np.bincount(flat, minlength=int(widths.sum())) if flat.size else np.zeros(0, dtype=np.int64)
        self._merge(series, (seg_keys // span).tolist(), ((seg_keys % span + wmin) * self.width).tolist(), counts,
                    err.astype(np.int64), sums, mins, maxs, positive, base, widths, kmin, starts, extra, binned, v,
                    tmin, tmax, None)

    def _merge(self, series: list[SeriesKey], seg_series: list[int], seg_start: list[int], counts: npt.NDArray[Any],
               err: npt.NDArray[np.int64], sums: npt.NDArray[np.float64], mins: npt.NDArray[np.float64],
               maxs: npt.NDArray[np.float64], positive: npt.NDArray[np.bool_], base: npt.NDArray[np.int64],
               widths: npt.NDArray[np.int64], kmin: npt.NDArray[np.int64], starts: npt.NDArray[Any],
               extra: dict[str, list[float]], binned: npt.NDArray[np.int64], v: npt.NDArray[np.float64],
               tmin: float, tmax: float, blobs: list[bytes | None] | None) -> None:
        """A fold's segments (in key order, with their series, window start, count, errors, sum, extremes,
        sketch buckets ``binned[base: base + width]`` from key ``kmin`` where ``positive``, else their values
        ``v[start: start + count]``, counters) into the aggregates. ``blobs``: each new segment's sketch in
        its quick form, made already (None where it is not: made here, as ``BucketSlices`` makes it)."""
        nseg = counts.size
        names = list(extra)
        rows = zip(*extra.values(), strict=True) if names else repeat((), nseg)
        aggs = self._aggs
        width = self.width
        inf = math.inf
        slices: Any = None
        if blobs is None:
            slices = BucketSlices(binned, base[positive], widths[positive], kmin[positive], mins[positive],
                                  maxs[positive])
        for si, start, count, errs, total, lo, hi, pos, b, w, klo, at, row, blob in zip(
                seg_series, seg_start, counts.tolist(), err.tolist(), sums.tolist(), mins.tolist(),
                maxs.tolist(), positive.tolist(), base.tolist(), widths.tolist(), kmin.tolist(), starts.tolist(),
                rows, repeat(None, nseg) if blobs is None else blobs, strict=True):
            sk_ = series[si]
            k = (sk_.family, sk_.tags, start)
            agg = aggs.get(k)
            if agg is None:  # made whole: the same fields as updating an empty aggregate (sums are never -0.0)
                if blob is not None:
                    sketch = _from_stored(blob)
                elif pos:  # the segments' bucket counts are disjoint slices of one array: each sketch keeps its own
                    sketch = (slices.sketch(klo, b, w, lo, hi) if slices is not None else
                              DDSketch.of_bucket_counts(klo, binned[b: b + w], lo, hi))
                else:
                    sketch = DDSketch()
                    sketch.add_many(v[at: at + count])
                aggs[k] = WindowAggregate(sk_, start, width, count, errs, total, lo if lo < inf else inf,
                                          hi if hi > -inf else -inf, dict(zip(names, row, strict=True)), sketch)
                continue
            kept = agg.sketch
            assert isinstance(kept, DDSketch)
            if pos:
                kept.add_bucket_counts(klo, binned[b: b + w], lo, hi, adopt=True)
            else:
                kept.add_many(v[at: at + count])
            _add_exact(agg, count, errs, total, lo, hi)
            c = agg.counters
            for name, value in zip(names, row, strict=True):
                c[name] = c.get(name, 0.0) + value
        self._extend_times(tmin, tmax)

    def _extend_times(self, tmin: float, tmax: float) -> None:
        self.min_ts = tmin if self.min_ts is None else min(self.min_ts, tmin)
        self.max_ts = tmax if self.max_ts is None else max(self.max_ts, tmax)

    def take(self) -> list[WindowAggregate]:
        """The aggregates so far (everything buffered folded in), handing them over and starting afresh."""
        self.flush()
        out = list(self._aggs.values())
        self._aggs = {}
        return out


_AGG_FIELDS: Final = attrgetter("series", "start", "width", "count", "errors", "total", "min", "max", "counters", "sketch")


class AggregateColumns:
    """A part's aggregates as columns, the form a worker sends them in (``engine._work``): a list per field, the
    sketches as what they pickle as (``DDSketch.__reduce__``: the quick form's bytes; another sketch type as
    itself, None for none). Pickled as those lists (in C), with no object per aggregate; the parent merges them
    by columns (``WindowState.merge``), making an aggregate only for a window new to it (about half while almost
    every window lay across two parts; nearly all since parts end where windows end, ``engine.window_cuts``).
    32 MB parts of the 5M-event log (198 aggregates each), CPU medians of 25 interleaved rounds: the worker's
    ``of`` + dumps 0.32 -> 0.18 ms a part, the parent's loads + merge (+ the settling of the windows two parts
    hold) 0.65 -> 0.62 ms: the parent's rest is its loop per aggregate and the sketches' merge and seal.
    Iterating gives the aggregates themselves, as the list it replaces did."""

    __slots__ = ("columns",)

    def __init__(self, columns: tuple[list[Any], ...]) -> None:
        self.columns = columns

    @classmethod
    def of(cls, aggs: Iterable[WindowAggregate]) -> AggregateColumns:
        cols = _columns(aggs)
        cols[9][:] = [None if s is None else s.__reduce__()[1][0] if type(s) is DDSketch else s for s in cols[9]]
        return cls(cols)

    def __reduce__(self) -> tuple[Any, tuple[tuple[list[Any], ...]]]:
        return AggregateColumns, (self.columns,)

    def __len__(self) -> int:
        return len(self.columns[0])

    def __iter__(self) -> Iterator[WindowAggregate]:
        for series, start, width, count, errors, total, lo, hi, counters, form in zip(*self.columns, strict=True):
            yield WindowAggregate(series, start, width, count, errors, total, lo, hi, counters, _sketch_of(form))


def _sketch_of(form: Any) -> Any:
    """A sketch from its ``AggregateColumns`` form."""
    return _from_stored(form) if type(form) is bytes else form


def _add_exact(agg: WindowAggregate, count: int, errors: int, total: float, lo: float, hi: float) -> None:
    """``merge_into``'s exact fields (count, errors, sum; the extremes by comparison, ties keep the first)."""
    agg.count += count
    agg.errors += errors
    agg.total += total
    if lo < agg.min:
        agg.min = lo
    if hi > agg.max:
        agg.max = hi


def _columns(aggs: Iterable[WindowAggregate]) -> tuple[list[Any], ...]:
    """Aggregates as ``AggregateColumns``' lists, the sketches as they are (``WindowState.merge`` of objects)."""
    rows = list(map(_AGG_FIELDS, aggs))
    return tuple(map(list, zip(*rows, strict=True))) if rows else tuple([] for _ in range(10))


def pipeline_aggregate(start: int, width: int, *, read: int, parsed: int, skipped: int, invalid: int,
                       late: int, duration_ms: float) -> WindowAggregate:
    """The pipeline's own counts for one run, in the wall-clock window the run committed in."""
    return WindowAggregate(
        SeriesKey("pipeline"), start, width, count=1, total=duration_ms, min=duration_ms, max=duration_ms,
        counters={"read": float(read), "parsed": float(parsed), "skipped": float(skipped),
                  "invalid": float(invalid), "late": float(late), "runs": 1.0},
    )


@dataclass(slots=True)
class ApplyResult:
    """What ``WindowState.apply`` did, for the summary and the outbox."""

    changed_starts: set[int] = field(default_factory=set)
    windows_updated: int = 0
    late_events: int = 0
    late_windows: int = 0
    folded: dict[str, int] = field(default_factory=dict)  # family -> series folded into `other`
    new_series: int = 0
    watermark: float | None = None
    request_windows: list[WindowAggregate] = field(default_factory=list)  # for the summary's slowest routes


class WindowState:
    """The run's merged aggregates, keyed by (family, tags, window start).

    ``merge`` also seals (``DDSketch.seal``: encodes for the store, once) the sketches of the windows that look
    final: those that start before every window of the batch just merged. The parts of a log arrive in input
    order, so the windows behind the newest part are usually done, and the parent encodes them while the
    workers read the next parts, instead of at the commit, when the workers are idle. A window a later batch
    changes after all is encoded again when it is written, with the same bytes (the seal only keeps bytes
    while the sketch is unchanged); when that happens to more than one sealed window in ``SEAL_WASTE`` (inputs
    not in time order, files overlapping in time), the state stops sealing.

    The sketches of a window several parts hold are merged when it is sealed or first read (``aggs``), all at
    once (``sketch.merged``: the bytes of the workers' quick forms summed, none decoded into a sketch), not part
    by part: the same sketch as merging each in turn (``merge_into``), for 0.6x the parent's CPU (5M-event log).
    Inputs that overlap in time stop the sealing, and every part then adds a sketch to each window it shares;
    so when more sketches wait than there are windows, all are merged then: the parent holds at most two
    sketches a window (``len``, which the run's ``SPILL_AGGREGATES`` bounds), as merging part by part held one.
    """

    def __init__(self, max_ts: float | None = None) -> None:
        self._aggs: dict[AggKey, WindowAggregate] = {}
        self._pending: dict[AggKey, list[Any]] = {}  # the sketches still to merge into a window's, in order
        self._waiting = 0  # how many sketches ``_pending`` holds
        self.max_ts: float | None = max_ts
        self._unsealed: dict[int, dict[AggKey, WindowAggregate]] = {}  # per start: the windows merged, not sealed
        self._sealed = 0
        self._resealed = 0  # sealed sketches changed again by a later batch

    def __len__(self) -> int:
        return len(self._aggs)

    @property
    def aggs(self) -> dict[AggKey, WindowAggregate]:
        """The run's merged aggregates (the pending sketches merged now)."""
        self._settle_all()
        return self._aggs

    def _settle_all(self) -> None:
        pending = self._pending
        if pending:
            aggs = self._aggs
            for k in list(pending):
                self._settle(aggs[k], pending.pop(k))
            self._waiting = 0

    @staticmethod
    def _settle(cur: WindowAggregate, theirs: list[Any]) -> None:
        """``merge_into``'s sketch step for each of ``theirs`` in turn, in one pass: its target is the window's
        sketch, or a new one."""
        first = cur.sketch
        if first is not None:
            both = [first, *theirs]
            cur.sketch = merged_quick(both) or merged(both)
        else:
            cur.sketch = merged([DDSketch(theirs[0].relative_accuracy), *theirs])

    def merge(self, partials: Iterable[WindowAggregate] | AggregateColumns, max_ts: float | None = None) -> None:
        aggs = self._aggs
        pending_sketches = self._pending
        unsealed = self._unsealed
        columns = partials.columns if type(partials) is AggregateColumns else _columns(partials)
        first, resealed, waiting_now = self._merge_columns(columns)
        if max_ts is not None and (self.max_ts is None or max_ts > self.max_ts):
            self.max_ts = max_ts
        self._resealed += resealed
        self._waiting = waiting_now
        if waiting_now > len(aggs):
            self._settle_all()
        if first is None or self._resealed * SEAL_WASTE > self._sealed + SEAL_SLACK:
            return
        sealed = 0
        for start in [s for s in unsealed if s < first]:
            for k, agg in unsealed.pop(start).items():
                held = pending_sketches.pop(k, None)
                if held is not None:
                    self._waiting -= len(held)
                    self._settle(agg, held)
                sketch = agg.sketch
                if type(sketch) is DDSketch:
                    sketch.seal()
                    sealed += 1
        self._sealed += sealed

    def _merge_columns(self, columns: tuple[list[Any], ...]) -> tuple[int | None, int, int]:
        """``merge``'s loop over aggregates as columns (``AggregateColumns``, or ``_columns``): ``merge_into``'s
        fields added in its order, an aggregate made only for a window new here. -> the first start, the sealed
        sketches changed again, the sketches waiting."""
        aggs = self._aggs
        pending_sketches = self._pending
        unsealed = self._unsealed
        first: int | None = None
        resealed = 0
        waiting_now = self._waiting
        for series, start, width, count, errors, total, lo, hi, counters, form in zip(*columns, strict=True):
            k = (series.family, series.tags, start)
            theirs = _from_stored(form) if type(form) is bytes else form  # (``_sketch_of``, without the call)
            cur = aggs.get(k)
            if cur is None:
                aggs[k] = cur = WindowAggregate(series, start, width, count, errors, total, lo, hi, counters, theirs)
            else:
                _add_exact(cur, count, errors, total, lo, hi)
                if counters:
                    mine = cur.counters
                    for name, v in counters.items():
                        mine[name] = mine.get(name, 0.0) + v
                if theirs is not None:
                    waiting = pending_sketches.get(k)
                    if waiting is None:
                        kept = cur.sketch  # a sealed sketch changes (counted once, as its first merge unseals it)
                        if type(kept) is DDSketch and kept._stored is not None:
                            resealed += 1
                        pending_sketches[k] = [theirs]
                    else:
                        waiting.append(theirs)
                    waiting_now += 1
            pending = unsealed.get(start)
            if pending is None:
                unsealed[start] = {k: cur}
            else:
                pending[k] = cur
            if first is None or start < first:
                first = start
        return first, resealed, waiting_now

    def apply(self, ws: WindowsStore, *, lateness_seconds: int, max_series: int, now: float,
              warn: Any = None) -> ApplyResult:
        """Merge the run's aggregates into the stored windows (call inside the run's transaction).

        Late: the watermark is the newest event time ever committed (this run's included); a window that
        ended more than ``lateness_seconds`` before it is not updated, and its events count as late.
        Cap: a family admits new series (in sorted order, so that a rerun folds the same way; its `other`
        series last) until it has ``max_series``; the rest merge into the series whose tag values are all
        ``other``.
        """
        res = ApplyResult()
        cutoff = self._cutoff(ws, lateness_seconds, res)
        known = ws.known_series()
        final: dict[AggKey, WindowAggregate] = {}
        new_series: list[tuple[str, Tags, int]] = []
        aggs = self.aggs
        folded_windows = res.folded
        for (family, tags), starts in self._series_in_order():
            fam_known: set[Tags] | None = None  # the family's series, once a window of this one is not late
            fold = False  # past the cap: its windows go to the family's `other` series (``target``)
            target = tags
            pipeline = family == "pipeline"
            for start in starts:
                k = (family, tags, start)
                agg = aggs[k]
                if cutoff is not None and start + agg.width <= cutoff and not pipeline:
                    if is_event_family(family):
                        res.late_events += agg.count
                        res.late_windows += 1
                    continue
                # The cap decides once per series, at its first window in time: the family's set only grows,
                # so its later windows would be decided the same way (admitted, or folded into `other`).
                if fam_known is None:
                    fam_known = known.setdefault(family, set())
                    if tags not in fam_known:
                        if len(fam_known) < max_series or pipeline:
                            fam_known.add(tags)
                            new_series.append((family, tags, start))
                        else:
                            fold, target = True, fold_tags(tags)
                if fold:
                    if folded_windows.get(family, 0) == 0 and warn is not None:
                        warn(cap_warning(family, max_series))
                    folded_windows[family] = folded_windows.get(family, 0) + 1
                    if target not in fam_known:
                        fam_known.add(target)
                        new_series.append((family, target, start))
                    # `other` itself (the workers' folds) folds into itself once: it is a known series from then
                    # on, its later windows not counted as folded (as a check per window counts them)
                    fold = target != tags
                    agg = WindowAggregate(SeriesKey(family, target), start, agg.width, agg.count, agg.errors,
                                          agg.total, agg.min, agg.max, dict(agg.counters), agg.sketch)
                    k = (family, target, start)
                cur = final.get(k)
                if cur is None:
                    final[k] = agg
                else:
                    merge_into(cur, agg)
        stored = ws.get_many(final)
        out = list(final.values())
        if stored:
            for i, (k, agg) in enumerate(final.items()):
                kept = stored.get(k)
                if kept is not None:
                    merge_into(kept, agg)
                    out[i] = kept
        res.changed_starts.update(start for _, _, start in final)
        res.request_windows.extend(agg for agg in out if agg.series.family == "request")
        return self._write(ws, res, out, new_series, now)

    def _cutoff(self, ws: WindowsStore, lateness_seconds: int, res: ApplyResult) -> float | None:
        """The end a window must pass not to be late (None: nothing is), from the watermark (``res.watermark``)."""
        wm = max((x for x in (ws.watermark(), self.max_ts) if x is not None), default=None)
        res.watermark = wm
        return (wm - lateness_seconds) if wm is not None else None

    def _series_in_order(self) -> list[tuple[tuple[str, Tags], list[int]]]:
        """Each series with its starts, in ``apply``'s order: by (family, is `other`, tags), then start.

        A family's `other` series (every tag value `other`: what the workers folded) comes after its real
        series, so that it does not take one of the cap's places from them. The same order as sorting the keys
        (they are unique), with the tags compared and folded once per series, not once per window."""
        by_series: dict[tuple[str, Tags], list[int]] = {}
        for family, tags, start in self.aggs:
            starts = by_series.get((family, tags))
            if starts is None:
                by_series[(family, tags)] = [start]
            else:
                starts.append(start)
        return [(series, sorted(by_series[series]))
                for series in sorted(by_series, key=lambda s: (s[0], fold_tags(s[1]) == s[1], s[1]))]

    @staticmethod
    def _write(ws: WindowsStore, res: ApplyResult, out: list[WindowAggregate], new_series: list[tuple[str, Tags, int]],
               now: float) -> ApplyResult:
        """Write the windows, the new series and the watermark; count them in ``res``."""
        ws.put(out, now)
        ws.add_series(new_series)
        if res.watermark is not None:
            ws.set_watermark(res.watermark)
        res.windows_updated = len(out)
        res.new_series = len(new_series)
        return res


def stderr_warning(message: str) -> None:
    print(f"logapm: warning: {message}", file=sys.stderr)
