"""A decoder chunk's trace summary as columns: what the run's workers send to the parent.

``summarize_batch(events)`` computes what ``partials.summarize`` computes (the same pieces, the same sums,
the same ordering rules, see that module) with numpy over the whole chunk, and returns one ``TraceBatch``
of numpy arrays plus a few small tables of shared strings, instead of one tuple with its own fingerprint
dict per trace piece. Pickling the arrays is a copy of their bytes, so sending a part's trace summary to the
parent costs little more than its size; and the parent (``traces.TraceAnalyzer``) adds the requests of a
part to its per-route windows as ``RequestSums``, summed per window and route in the worker.

How the pieces are found without a loop per event: each trace's events are grouped (a stable sort by the
trace's code keeps them in event order), and an operation belongs to the next *closer* of its trace (its
request, or a root task that drops it); an operation with no closer after it in the chunk is in its trace's
*rest* (what stays open at the chunk's end). Sums per piece are ``np.bincount`` with weights, which adds the
rows of a group one after the other in row (event) order, starting from 0.0, exactly as the per-event loop
does: the sums are the same doubles, not merely close. (A fingerprint's time in the loop starts from its
first duration rather than from 0.0; the two differ only when every duration of the group is -0.0, which is
put back.)

Columns (R requests, S rests, G fingerprint groups; owners 0..R-1 are the requests' pieces, R..R+S-1 the
rests):

- ``traces``: the chunk's trace ids; every ``*_trace`` column holds an index into it;
- per request, in event order: trace, end, duration, failed (failure outcome or a 5xx answer), route and
  method (indexes into ``routes``/``methods``, None read as ""), and the summed operations of its piece:
  queries, db_ms, cache_ms, external_ms (the three times as their nonzero entries, ``req_*_at``/``req_*``);
- per root task (a task without a parent span; it drops what is open of its trace): trace, and its place
  among the requests (``root_at``: the requests before it);
- per rest: trace, newest, events, queries, db_ms, cache_ms, external_ms;
- per (piece, fingerprint) group, by owner and then by first appearance: owner, fingerprint (index into
  ``fp_keys``, see ``key_list``), executions, time_ms, and the query text and table of the group's first query (indexes into
  ``fp_texts``/``fp_tables``, which keep None and "" as they came);
- ``tasks``: task events with a trace id (each closes a task trace, counted); ``newest``: the newest event
  end the parent's clock must see (tasks, requests and the operations of kept pieces).

What it costs (``python bench/insights_bench.py --log`` on a 40 MB part of loggen output, 97,632 events in the
engine's 2 MB chunks, CPU us per event, medians of 5; per-part tuples -> these columns): pickle 0.91 -> 0.08,
unpickle 0.35 -> 0.12, the parent's feed 0.70 -> 0.17 (the per-part feed as the run had it, with a shortcut
for whole traces since dropped: without it 0.8 -> 1.8 us on 100,000 loggen events, feed alone, 7 interleaved
rounds; 1.4 in the bench's rounds), finish unchanged (0.27, writing the open traces). In all 3.0 -> 1.7 us per
event, and 1.8 MB less to send per part. A 1M-event ``logapm run`` (2 workers, medians of 5 alternating runs):
8.6 -> 7.0 CPU seconds (5.0 without trace insights), the parent's share 2.8 -> 1.8 s (1.2), peak RSS 190 ->
150 MB.

The summary itself is dearer than ``partials.summarize``'s single loop: 0.94 against 1.07 us per event (1.04
against 1.18 in a second run; medians of 7 rounds on a busy machine, each path on its own fresh parse of
every chunk, as in a worker), where it was 1.15 (1.34) before the reads below were trimmed (``--against
a98253e`` in the same runs; the same batches). Most of it is the first touch of what the events
point to, which the loop pays too: every string read (trace ids, operations' parent spans when the chunk has
tasks, routes, methods, fingerprints, query texts, tables; status codes above 256 are int objects of their
own) is a cache miss, and most are hashed once (a new str has no cached hash). So each attribute is one list
comprehension over the events (or over a subset, read by index): on Python 3.11 its attribute read is a
specialised slot load, where one ``attrgetter`` of several fields is a generic lookup per field plus a tuple
to take apart again (measured: 3 fields of events in cache, 4x the time of 3 comprehensions; one
comprehension of (trace_id, kind) tuples on fresh events, 1.9x two comprehensions); and coding (route, method,
outcome, status) tuples with one dict lookup per request saves nothing (the strings are hashed either way).
Columns of small integers and booleans are made with ``bytes()`` of a list (a C loop, about 3x cheaper per
item than ``np.fromiter``).

``summarize_columns(cols)`` is the same summary from the chunk's ``parsers.columns.EventColumns`` (what the
native scanner writes): the same batch, field by field (``TraceBatch.differences``). Both paths share
``_summarize``, which is given the kinds, trace codes, ends and durations and asks a source (``_FromEvents``:
attributes of the few events that need them; ``_FromColumns``: numpy over their codes) for the rest: which
tasks are roots and which operations sit below a task's span (span ids and parent span ids are codes into one
table), the requests' failures, routes and methods, the queries' fingerprints, and the first query's text and
table per group. What the columns' codes do not give as ``summarize_batch`` has it is put right: its trace
table has None where the first event without a trace id comes (the columns' table leaves None out), routes and
methods read None as "", and a fingerprint that is absent or "" is the text's (per row in Python: rare); the
other tables are re-coded by first appearance over the rows concerned (``_first_codes``, a scatter of first
rows, no sort). Cost (``python bench/insights_bench.py --columns``, 100,000 loggen events in 2 MB chunks, CPU
us per event, medians of 7 interleaved rounds, two runs each): 0.30 and 0.29 from ``from_events``' columns
against 0.89 and 0.82 from events; 0.30 and 0.31 from the native scanner's columns against 0.96 and 1.04 on a
busier machine (the rounds' median ratio 0.30). On 262,500 events of the bench's own N+1 log (``make_log``),
where fingerprints repeat, 0.18 against 0.65: loggen's fingerprints are nearly all distinct, and each distinct
one costs a few passes of Python over its string (the batch keeps them as one string). The object path is
unchanged by the sharing (0.878 against 0.884 as at a6c3665, ``--against``, the same batches).

``summarize_columns`` runs in C where the optional extension is built (``aggregator/insights/_summary.c``,
``_summarize_native``): three passes over the chunk's columns instead of some sixty numpy calls, a sort and
the Python between them, and the output arrays made in their narrow dtypes at once. The same batch, field by
field (``tests/aggregator/test_insights_summary_native.py``); a chunk with a kept query without a fingerprint
(or with an empty one, whose text's fingerprint Python computes) goes to the numpy path. Cost (``python
bench/trace_summary_bench.py``: the first 120 MB of the 1M-event benchmark log, the scanner's columns of its
4 MB chunks parsed once, ``extract_columns`` per chunk and ``request_sums`` per 32 MB part, CPU us per event,
medians of 11 interleaved rounds, ``--against 6f886cc --old-native none``): 0.152 -> 0.037 (the rounds' median
ratio 4.0); 0.138 -> 0.030 with each chunk parsed just before its summary, as in a worker (``--fresh``, 9
rounds). ``request_sums`` is in C too (0.008 -> 0.004 of it). Most of what is left is the C passes
themselves (~300 instructions an event, callgrind, with the ~35 arrays made per chunk); the rest, reading the
columns and the ~3,600 distinct fingerprint strings of a chunk where they are no longer in the cache.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from itertools import islice, repeat
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from aggregator.insights.records import query_fingerprint
from logging_apm._native import load as load_native
from parsers.columns import KIND_CODES, OUTCOMES

# aggregator/insights/_opentable.c (optional; None: not built, or LOGAPM_NATIVE=0): hashes of the unpickled ids
_opentable = load_native("aggregator.insights._opentable")

if TYPE_CHECKING:
    from parsers.columns import EventColumns

_REQUEST, _DB, _CACHE, _EXTERNAL, _TASK, _METRIC = map(
    KIND_CODES.__getitem__, ("request", "db", "cache", "external", "task", "metric"))
assert _CACHE == _DB + 1 and _EXTERNAL == _DB + 2  # operations are the codes _DB.._EXTERNAL (one range test)

I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]


Codes = npt.NDArray[Any]  # indexes into a table, in the narrowest dtype that holds them (``_index_array``)
Counts = npt.NDArray[Any]  # counts, in the narrowest unsigned dtype that holds them (``_count_array``)
KEY_SEPARATOR = "\x00"  # between the fingerprints in ``fp_keys`` (unless one holds it)
# aggregator/insights/_summary.c numbers the kinds as these (None: not built, or LOGAPM_NATIVE=0)
assert (_REQUEST, _DB, _TASK, _METRIC) == (0, 1, 4, 5) and OUTCOMES["failure"] == 1 and KEY_SEPARATOR == "\x00"
_native = load_native("aggregator.insights._summary")


class TraceBatch:
    """One chunk's trace summary as columns (see the module docstring); pickled as its arrays' bytes.

    Narrow on the way to the parent (the pickled bytes per event, 49 -> 30 on the benchmark log): codes and
    counts in the narrowest dtype that holds them (``_index_array``, ``_count_array``); the requests' db, cache
    and external times as their nonzero entries (``*_at`` the requests that have one; ``*_ms()`` give the full
    columns); the fingerprints as one string."""

    # (in the order of the pickled state, the trace ids last as before they were read lazily: "_traces")
    __slots__ = (  # noqa: RUF023
        "fp_key", "fp_keys", "fp_ms", "fp_n", "fp_owner", "fp_table", "fp_tables", "fp_text", "fp_texts",
        "methods", "newest", "req_cache", "req_cache_at", "req_db", "req_db_at", "req_dur", "req_end",
        "req_external", "req_external_at", "req_failed", "req_method", "req_queries", "req_route", "req_trace",
        "rest_cache", "rest_db", "rest_events", "rest_external", "rest_newest", "rest_queries", "rest_trace",
        "root_at", "root_trace", "routes", "tasks", "_traces",
    )

    _traces: Any  # the trace ids (``traces``), or as unpickled (``trace_ids``)
    newest: float
    tasks: int
    req_trace: Codes
    req_end: F64
    req_dur: F64
    req_failed: npt.NDArray[np.bool_]
    req_route: Codes
    req_method: Codes
    req_queries: Counts
    # a request's summed times, kept where they are not 0.0 (-0.0 is kept): request req_db_at[i] has req_db[i]
    req_db_at: Codes
    req_db: F64
    req_cache_at: Codes
    req_cache: F64
    req_external_at: Codes
    req_external: F64
    routes: list[str]
    methods: list[str]
    root_trace: Codes
    root_at: Codes  # per root task: the requests before it in the chunk (its place among them)
    rest_trace: Codes
    rest_newest: F64
    rest_events: Counts
    rest_queries: Counts
    rest_db: F64
    rest_cache: F64
    rest_external: F64
    fp_owner: Codes
    fp_key: Codes
    fp_n: Counts
    fp_ms: F64
    fp_text: Codes
    fp_table: Codes
    # the fingerprints as one string, KEY_SEPARATOR between them (one string pickles far faster than thousands),
    # or as a list when one of them holds the separator (see ``key_list``)
    fp_keys: str | list[str]
    fp_texts: list[Any]
    fp_tables: list[Any]

    def __getstate__(self) -> tuple[Any, ...]:
        state = [getattr(self, name) for name in self.__slots__]
        ids = self._traces
        state[_TRACES] = ids.packed if type(ids) is PackedIds else ids.pack() if type(ids) is ScannedIds \
            else _packed_ids(ids)
        return tuple(state)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        for name, value in zip(self.__slots__, state, strict=True):
            setattr(self, name, value)
        if type(self._traces) is tuple:
            self._traces = _unpacked_ids(self._traces)

    @property
    def traces(self) -> list[Any]:
        """The chunk's trace ids (split here the first time when they came as ``PackedIds``)."""
        ids = self._traces
        if type(ids) is PackedIds:
            ids = self._traces = ids.split()
        elif type(ids) is ScannedIds:
            ids = self._traces = ids.ids()
        return ids  # type: ignore[no-any-return]

    @traces.setter
    def traces(self, ids: list[Any]) -> None:
        self._traces = ids

    def trace_ids(self) -> Any:
        """The trace ids as the parent reads them: ``traces``, or as unpickled, a ``PackedIds`` (ids one at a time
        and their hashes, never a str for each)."""
        return self.traces if type(self._traces) is ScannedIds else self._traces

    @property
    def requests(self) -> int:
        return int(self.req_trace.size)

    @property
    def empty(self) -> bool:
        """Nothing for the parent: no request, no task, nothing left open (then ``newest`` is -inf too)."""
        return not (self.req_trace.size or self.tasks or self.rest_trace.size)

    def req_db_ms(self) -> F64:
        """Each request's summed db time (0.0 where it has none)."""
        return _spread(self.req_db_at, self.req_db, self.requests)

    def req_cache_ms(self) -> F64:
        return _spread(self.req_cache_at, self.req_cache, self.requests)

    def req_external_ms(self) -> F64:
        return _spread(self.req_external_at, self.req_external, self.requests)

    def differences(self, other: TraceBatch) -> list[str]:
        """The fields that differ from ``other``'s: arrays by dtype, shape and bytes (-0.0 is not 0.0),
        other values by type and value (lists item by item)."""
        out = []
        for name in self.__slots__:
            name = "traces" if name == "_traces" else name
            a, b = getattr(self, name), getattr(other, name)
            if isinstance(a, np.ndarray):
                same = isinstance(b, np.ndarray) and (a.dtype, a.shape) == (b.dtype, b.shape) \
                    and a.tobytes() == b.tobytes()
            elif isinstance(a, list):
                same = isinstance(b, list) and [(type(x), x) for x in a] == [(type(x), x) for x in b]
            else:
                same = type(a) is type(b) and repr(a) == repr(b)
            if not same:
                out.append(name)
        return out

    def key_list(self) -> list[str]:
        """The fingerprints (``fp_key`` codes index it)."""
        return split_keys(self.fp_keys)

    def keys(self, codes: Codes) -> list[str]:
        """The fingerprints of these ``fp_key`` codes."""
        return list(map(self.key_list().__getitem__, codes.tolist()))


class RequestSums:
    """The requests of a part's batches summed per (window, route), each with only its own piece's operations
    (what a worker can know): what the parent adds to its windows in place of every request's columns.

    ``groups``: per (window start, route), in no particular order, a tuple (start, route, requests, failed,
    request_ms, db_ms, cache_ms, external_ms, {queries per request: requests}) with the times capped per request
    at its duration, as ``TraceAnalyzer._complete`` adds them. A request whose trace was open before its chunk
    (rare: ``TraceAnalyzer`` finds it by its trace id) is corrected in the parent by the difference its merged
    operations make. Each sum adds its requests in input order from 0.0 (``np.bincount``), so a run's windows are
    the same doubles for the same parts; the parent adding a part's sums, not its requests one by one, may
    round them differently from a request-by-request sum (within a few ulps of the whole)."""

    __slots__ = ("groups",)

    def __init__(self, groups: list[tuple[Any, ...]]) -> None:
        self.groups = groups

    def __getstate__(self) -> list[tuple[Any, ...]]:
        return self.groups

    def __setstate__(self, state: list[tuple[Any, ...]]) -> None:
        self.groups = state


def request_sums(batches: Sequence[TraceBatch], width: int) -> RequestSums:
    """The ``RequestSums`` of these batches' requests for windows of ``width`` seconds: in C where the extension
    is built (``_summary.request_sums``: the same tuples in the same order, each sum added in the same order;
    0.0079 -> 0.0037 CPU us per event on the benchmark log's 32 MB parts of ~33,000 requests, medians of 20
    rounds), else (or where C leaves it: a range of windows and routes too wide to count over) with numpy."""
    batches = [b for b in batches if b.requests]
    if not batches:
        return RequestSums([])
    if _native is not None:  # (the same groups, summed in the same order, in C)
        groups = _native.request_sums(batches, width)
        if groups is not None:
            return RequestSums(groups)
    codes: dict[str, int] = {}  # the batches' routes in one table
    route = np.concatenate([np.asarray([codes.setdefault(r, len(codes)) for r in b.routes], np.int64)[b.req_route]
                            for b in batches])
    routes = list(codes)
    nroutes = len(routes)
    dur = np.concatenate([b.req_dur for b in batches])
    key = window_numbers(np.concatenate([b.req_end for b in batches]), width)
    key *= nroutes
    key += route
    keys, group = _dense(key)  # (window number * routes + route) of each group, and each request's group
    ngroups = keys.size
    offsets = np.cumsum([0] + [b.requests for b in batches])
    whole = bool((dur < 0.0).any())  # (the parser admits no negative duration)

    def capped(at: str, values: str) -> list[float]:
        """The group sums of a time column capped at each request's duration: min(x, duration) as Python's
        min takes it (x unless duration is smaller). Its zeros (most requests) add 0.0 unless the duration is
        negative: only the columns' entries are summed when none is."""
        x = np.concatenate([getattr(b, values) for b in batches])
        rows = np.concatenate([getattr(b, at).astype(np.int64) + o for b, o in zip(batches, offsets.tolist(),
                                                                                  strict=False)])
        d, g = (dur, group) if whole else (dur[rows], group[rows])
        if whole:
            x = _spread(rows, x, dur.size)
        return np.bincount(g, weights=np.where(d < x, d, x),  # type: ignore[no-any-return]
                           minlength=ngroups).astype(np.float64, copy=False).tolist()

    queries = np.concatenate([b.req_queries for b in batches]).astype(np.int64)
    hists: list[dict[int, int]] = [{} for _ in range(ngroups)]
    span = int(queries.max()) + 1
    pairs, counts = _counts(group * span + queries)
    for pair, n in zip(pairs.tolist(), counts.tolist(), strict=True):
        hists[pair // span][pair % span] = n
    failed = np.concatenate([b.req_failed for b in batches])
    return RequestSums(list(zip(
        ((keys // nroutes) * width).tolist(), list(map(routes.__getitem__, (keys % nroutes).tolist())),
        np.bincount(group, minlength=ngroups).tolist(), np.bincount(group[failed], minlength=ngroups).tolist(),
        np.bincount(group, weights=dur, minlength=ngroups).tolist(), capped("req_db_at", "req_db"),
        capped("req_cache_at", "req_cache"), capped("req_external_at", "req_external"), hists, strict=True)))


def window_numbers(ends: F64, width: int) -> I64:
    """``int(end // width)`` of each end, as Python computes it, at half ``np.floor_divide``'s cost (its float
    path takes an fmod per value): the floor of the rounded quotient. For ends below 2**53 both are the exact
    quotient's floor: Python's ``//`` subtracts the exact fmod and divides a multiple of ``width``; and a
    quotient below an integer k is more than half a spacing of the doubles below k away from it (an integer
    ``width`` puts k * width in a binade at least log2(width) above k's), so it is never rounded up to k."""
    q = ends / width
    np.floor(q, out=q)
    return q.astype(np.int64)


def _dense(keys: Any) -> tuple[Any, Any]:
    """``np.unique(keys, return_inverse=True)``, by counting when the keys span a small range (a part's
    windows and routes): sorting the keys costs more than the rest of the sums."""
    lo = int(keys.min())
    span = int(keys.max()) - lo + 1
    if span > 4 * keys.size + 4096:
        return np.unique(keys, return_inverse=True)
    present = np.bincount(keys - lo, minlength=span) > 0
    return np.flatnonzero(present) + lo, (np.cumsum(present) - 1)[keys - lo]


def _counts(keys: Any) -> tuple[Any, Any]:
    """``np.unique(keys, return_counts=True)`` of non-negative keys, by counting when their range is small."""
    if int(keys.max()) > 4 * keys.size + 4096:
        return np.unique(keys, return_counts=True)
    counts = np.bincount(keys)
    present = np.flatnonzero(counts)
    return present, counts[present]


_TRACES = TraceBatch.__slots__.index("_traces")


def _packed_ids(ids: list[Any]) -> Any:
    """A batch's trace ids as pickled: (one string of them, ``KEY_SEPARATOR`` between them; where None stands
    among them, or -1), which pickles at a third of the cost of a list of ~1,300 strings (the workers: ~50 M
    instructions less for the 1M-event benchmark log's parts); the list itself when it is empty, when an id
    holds the separator or is neither a str nor None, or None stands more than once."""
    none = -1
    strs = ids
    try:
        joined = KEY_SEPARATOR.join(strs)
    except TypeError:  # None among them (the events without a trace id stand there), or an id of another type
        flags = list(map(operator.is_, ids, repeat(None)))
        if flags.count(True) != 1:
            return ids
        none = flags.index(True)
        strs = ids[:none] + ids[none + 1:]
        try:
            joined = KEY_SEPARATOR.join(strs)
        except TypeError:
            return ids
    if not strs or joined.count(KEY_SEPARATOR) != len(strs) - 1:
        return ids
    return joined, none


class ScannedIds:
    """A batch's trace ids as the native summary leaves them in a worker: the native scanner's table (a
    ``parsers._scan.Strings``, which makes a str per id only when read) and where None stands among them (-1:
    nowhere). The worker only pickles them, and ``pack`` gives ``_packed_ids``' form of the list joined from
    the table's bytes (``Strings.join``), not from a str per distinct id (~1,200 a 4 MB chunk of the 5M
    benchmark log) made only to be joined: ~200 instructions less an id, 0.6% of a worker's (callgrind over
    the log's first six parts, process_part and the pickle); ``ids()`` gives the list (``TraceBatch.traces``,
    and ``trace_ids()`` when the batch is read where it was made)."""

    __slots__ = ("none", "table")

    def __init__(self, table: Any, none: int) -> None:
        self.table, self.none = table, none

    def ids(self) -> list[Any]:
        ids: list[Any] = list(self.table)
        if self.none >= 0:
            ids.insert(self.none, None)
        return ids

    def pack(self) -> Any:
        """``_packed_ids(self.ids())``, the same value (the list's own rules where an id holds the separator)."""
        n = len(self.table)
        joined = self.table.join(KEY_SEPARATOR) if n else ""
        if not n or joined.count(KEY_SEPARATOR) != n - 1:
            return _packed_ids(self.ids())
        return joined, self.none


class TraceIds(list[Any]):
    """A batch's trace ids, with ``hashes``: each id's ``hash()`` (an int64 array) when they came as ``PackedIds``,
    else None."""

    __slots__ = ("hashes",)

    hashes: npt.NDArray[np.int64] | None


class PackedIds:
    """A batch's trace ids as the parent unpickles them (ASCII, with ``_opentable`` built): the joined string as it
    came (``packed``), each id's ``hash()`` and where each starts in it (both made in one pass of C over the
    string, ``_opentable.hash_pieces``). The parent's trace join reads the hashes (its hit test against the open
    traces) and makes a str only for the few ids it needs (a hit, an open trace written at the end); splitting
    the ~1,200 ids of every chunk was ~40% of unpickling the trace records, and each fresh str was out of the
    cache when the join read it (~80 ns an id). ``split()`` gives the list (``TraceBatch.traces``)."""

    __slots__ = ("hashes", "none", "packed", "starts")

    def __init__(self, packed: tuple[str, int], hashes: npt.NDArray[np.int64], starts: I64) -> None:
        self.packed, self.none, self.hashes, self.starts = packed, packed[1], hashes, starts

    def __len__(self) -> int:
        return int(self.hashes.size)

    def __getitem__(self, i: int) -> Any:
        i = int(i)
        none = self.none
        if i == none:
            return None
        if none >= 0 and i > none:
            i -= 1
        starts = self.starts
        return self.packed[0][int(starts[i]):int(starts[i + 1]) - 1]

    def take(self, codes: Any) -> list[Any]:
        """The ids of these codes (an int array), in order: cut one at a time, or from all of them split at once
        when they are more than an eighth (``split`` is C, ~10x cheaper an id than a cut from Python)."""
        if codes.size * 8 > len(self):
            return list(map(_split_ids(self.packed).__getitem__, codes.tolist()))
        return list(map(self.__getitem__, codes.tolist()))

    def split(self) -> TraceIds:
        ids = TraceIds(_split_ids(self.packed))
        ids.hashes = self.hashes
        return ids


def _split_ids(packed: tuple[str, int]) -> list[Any]:
    joined, none = packed
    ids: list[Any] = joined.split(KEY_SEPARATOR)
    if none >= 0:
        ids.insert(none, None)
    return ids


def _unpacked_ids(packed: tuple[str, int]) -> Any:
    """The trace ids of a batch as ``_packed_ids`` gave them: a ``PackedIds`` (ASCII, with ``_opentable``), else
    the list."""
    if _opentable is not None:
        joined, none = packed
        n = joined.count(KEY_SEPARATOR) + 1
        hashes, starts = np.empty(n + (none >= 0), np.int64), np.empty(n + 1, np.int64)
        if _opentable.hash_pieces(joined, hashes, starts) >= 0:
            if none >= 0:
                hashes[none + 1:] = hashes[none:-1]
                hashes[none] = hash(None)
            return PackedIds(packed, hashes, starts)
    return _split_ids(packed)


def take_ids(ids: Any, codes: Any) -> list[Any]:
    """The ids of these codes (an int array) of a batch's ``trace_ids()``."""
    return ids.take(codes) if type(ids) is PackedIds else list(map(ids.__getitem__, codes.tolist()))


def split_keys(keys: str | list[str]) -> list[str]:
    """A batch's ``fp_keys`` as the list of its fingerprints."""
    return keys.split(KEY_SEPARATOR) if isinstance(keys, str) else keys


def _index_array(codes: npt.NDArray[np.integer[Any]], size: int) -> Codes:
    """Codes into a table of ``size`` entries (0 <= code < size) in the narrowest dtype that holds them."""
    return codes.astype(np.uint8 if size <= 1 << 8 else np.uint16 if size <= 1 << 16 else np.int32, copy=False)


def _count_array(counts: npt.NDArray[np.integer[Any]]) -> Counts:
    """Non-negative counts in the narrowest unsigned dtype that holds them (int64 past 32 bits)."""
    top = int(counts.max()) if counts.size else 0
    return counts.astype(np.uint8 if top < 1 << 8 else np.uint16 if top < 1 << 16 else np.uint32 if top < 1 << 32
                         else np.int64, copy=False)


def _nonzero(values: F64) -> tuple[Codes, F64]:
    """The entries of ``values`` that are not 0.0 (by their bits: -0.0 is kept), and where they are."""
    at = np.flatnonzero(values.view(np.int64))
    return _index_array(at, values.size), values[at]


def _spread(at: Codes, values: F64, n: int) -> F64:
    """The column of ``n`` that ``_nonzero`` gave ``at`` and ``values`` of: 0.0 elsewhere."""
    out = np.zeros(n)
    out[at] = values
    return out


def _codes(values: list[Any]) -> tuple[I32, list[Any], int]:
    """Each value's index in the list of distinct values (in first-appearance order), that list, and the
    index of None in it (-1 when absent: a dict lookup, where ``None in`` the list compares every value)."""
    n = len(values)
    first: dict[Any, int] = {}
    # setdefault keeps each value's first row, in C; a lookup table turns those rows into dense codes
    # (no sort: sorting costs more than the rest of this on a chunk)
    at_first = np.fromiter(map(first.setdefault, values, range(n)), np.intp, n)
    dense = np.empty(n, np.int32)
    dense[np.fromiter(first.values(), np.intp, len(first))] = np.arange(len(first), dtype=np.int32)
    none = first.get(None)
    return dense[at_first], list(first), -1 if none is None else int(dense[none])


def _trace_codes(tids: list[Any]) -> tuple[I32, list[Any], int]:
    """``_codes`` of the trace ids, hashing only the first id of each run of equal ids (a trace's events
    mostly come together, and comparing two ids is cheaper than hashing one)."""
    n = len(tids)
    if n < 2:
        return _codes(tids)
    # (bytes() of an iterator of bools is a C loop, several times cheaper than np.fromiter's per item)
    starts = np.flatnonzero(np.frombuffer(b"\x01" + bytes(map(operator.ne, islice(tids, 1, None), tids)), np.bool_))
    run_codes, table, none = _codes(list(map(tids.__getitem__, starts.tolist())))
    return np.repeat(run_codes, np.diff(np.append(starts, n))), table, none


def _pick(events: list[Any], rows: Any) -> list[Any]:
    return list(map(events.__getitem__, rows.tolist()))


def summarize_batch(events: Any) -> TraceBatch:
    """The trace summary of one chunk's parsed events (``parsers`` Event), as columns."""
    events = events if isinstance(events, list) else list(events)
    n = len(events)
    trace_ids = [e.trace_id for e in events]
    if n and trace_ids[0] is None and trace_ids.count(None) == n:  # logs without trace context
        return summarize_batch([])
    kind = np.frombuffer(bytes([KIND_CODES[e.kind] for e in events]), np.int8)
    code, traces, untraced = _trace_codes(trace_ids)
    ts = np.fromiter([e.ts for e in events], np.float64, n)
    dur = np.array([e.duration_ms for e in events], np.float64)  # (None, of metrics, becomes nan: unused)
    return _summarize(_FromEvents(events), kind, code, traces, untraced, ts, dur)


def summarize_columns(cols: EventColumns) -> TraceBatch:
    """``summarize_batch`` of the chunk's events, from their columns (``parsers.columns``): the same batch,
    field by field, with numpy over the codes where the object path reads attributes."""
    if _native is not None:
        got = _summarize_native(cols)
        if got is not None:
            return got
    tid = cols.codes["trace_id"]
    absent = tid < 0
    if not cols.n or absent.all():  # (an empty chunk, or logs without trace context)
        return summarize_batch([])
    traces: list[Any] = list(cols.tables["trace_id"])
    code, untraced = tid, -1
    if absent.any():
        # summarize_batch's table has None where the first event without a trace id comes: after the ids
        # first seen before it (codes are in order of first appearance: the largest code so far, plus one)
        first_absent = int(absent.argmax())
        untraced = int(tid[:first_absent].max()) + 1 if first_absent else 0
        traces.insert(untraced, None)
        code = tid + (tid >= untraced)
        code[absent] = untraced
    return _summarize(_FromColumns(cols), cols.kind, code, traces, untraced, cols.ts, cols.duration_ms)


def _summarize_native(cols: EventColumns) -> TraceBatch | None:
    """``summarize_columns`` in C (``aggregator/insights/_summary.c``), or None where it leaves the chunk to
    the numpy path (a kept query without a fingerprint or with an empty one: its text's, in Python)."""
    codes, tables = cols.codes, cols.tables
    trace_table = tables["trace_id"]
    got = _native.summarize(  # type: ignore[union-attr]
        cols.kind, codes["trace_id"], len(trace_table), cols.ts, cols.duration_ms, codes["span_id"],
        codes["parent_span_id"], len(tables["span_id"]), cols.outcome, cols.status,
        codes["http_route"], tables["http_route"], codes["http_request_method"], tables["http_request_method"],
        codes["db_query_fingerprint"], tables["db_query_fingerprint"], codes["db_query_text"],
        tables["db_query_text"], codes["db_collection_name"], tables["db_collection_name"])
    if got is None:
        return None
    if got is False:  # (an empty chunk, or logs without trace context)
        return summarize_batch([])
    b = TraceBatch()
    (untraced, b.tasks, b.newest, b.req_trace, b.req_end, b.req_dur, b.req_failed, b.req_route, b.routes,
     b.req_method, b.methods, b.req_queries, b.req_db_at, b.req_db, b.req_cache_at, b.req_cache,
     b.req_external_at, b.req_external, b.root_trace, b.root_at, b.rest_trace, b.rest_newest, b.rest_events,
     b.rest_queries, b.rest_db, b.rest_cache, b.rest_external, b.fp_owner, b.fp_key, b.fp_n, b.fp_ms, b.fp_text,
     b.fp_texts, b.fp_table, b.fp_tables, b.fp_keys) = got
    if type(trace_table) is list:
        traces: list[Any] = list(trace_table)
        if untraced >= 0:
            traces.insert(untraced, None)
        b.traces = traces
    else:  # the native scanner's table (a parsers._scan.Strings): no str per id, see ScannedIds
        b._traces = ScannedIds(trace_table, untraced)
    return b


def extract_columns(cols: EventColumns) -> list[TraceBatch]:
    """``traces.extract`` from a chunk's columns: a list holding its ``TraceBatch``, or an empty list when the
    chunk has nothing traced."""
    batch = summarize_columns(cols)
    return [] if batch.empty else [batch]


class _FromEvents:
    """What ``_summarize`` reads from a few of the events (by row), from ``parsers`` Event objects."""

    __slots__ = ("events",)

    def __init__(self, events: list[Any]) -> None:
        self.events = events

    def tasks(self, task_rows: npt.NDArray[np.intp], is_op: npt.NDArray[np.bool_]) -> tuple[Any, Any]:
        """Which tasks have no parent span (per task row), and the operation rows whose parent span is one of
        the tasks' spans (None when the tasks have no span)."""
        events = self.events
        task_events = _pick(events, task_rows)
        # Spans of every task of the chunk (with or without a trace id): operations below them are the task's.
        task_spans = {e.span_id for e in task_events}
        task_spans.discard(None)
        roots = np.frombuffer(bytes([e.parent_span_id is None for e in task_events]), np.bool_)
        if not task_spans:
            return roots, None
        op_rows = np.flatnonzero(is_op)
        below = np.frombuffer(bytes([events[i].parent_span_id in task_spans for i in op_rows.tolist()]), np.bool_)
        return roots, op_rows[below]

    def requests(self, req_rows: npt.NDArray[np.intp]) -> tuple[Any, ...]:
        """Per request: failed, route code, routes, method code, methods (None read as "")."""
        req_events = _pick(self.events, req_rows)
        failed = np.frombuffer(bytearray(
            [e.outcome == "failure" or (e.http_response_status_code or 0) >= 500 for e in req_events]), np.bool_)
        route, routes, _ = _codes([e.http_route or "" for e in req_events])
        method, methods, _ = _codes([e.http_request_method or "" for e in req_events])
        return failed, route, routes, method, methods

    def fingerprints(self, db_rows: npt.NDArray[np.intp]) -> tuple[I32, list[Any], int]:
        """``_codes`` of the queries' fingerprints (or their text's; None when they have neither)."""
        events = self.events
        at = db_rows.tolist()
        keys: list[str | None] = [events[i].db_query_fingerprint for i in at]
        if not all(keys):
            for j, key in enumerate(keys):
                if not key:
                    keys[j] = _text_fingerprint(events[at[j]].db_query_text)
        return _codes(keys)

    def firsts(self, rows: npt.NDArray[np.intp]) -> tuple[Any, ...]:
        """Codes and tables of these queries' texts and of their tables (None and "" as they came)."""
        events = _pick(self.events, rows)
        text, texts, _ = _codes([e.db_query_text for e in events])
        table, tables, _ = _codes([e.db_collection_name for e in events])
        return text, texts, table, tables


class _FromColumns:
    """What ``_summarize`` reads from a few of the events (by row), from ``EventColumns``."""

    __slots__ = ("cols",)

    def __init__(self, cols: EventColumns) -> None:
        self.cols = cols

    def tasks(self, task_rows: npt.NDArray[np.intp], is_op: npt.NDArray[np.bool_]) -> tuple[Any, Any]:
        """As ``_FromEvents.tasks``: span ids and parent span ids are codes into one table."""
        parent = self.cols.codes["parent_span_id"]
        spans = self.cols.codes["span_id"][task_rows]
        spans = spans[spans >= 0]
        roots = parent[task_rows] < 0
        if not spans.size:
            return roots, None
        op_rows = np.flatnonzero(is_op)
        task_span = np.zeros(len(self.cols.tables["span_id"]) + 1, np.bool_)  # (the last: code -1, no parent)
        task_span[spans] = True
        return roots, op_rows[task_span[parent[op_rows]]]

    def requests(self, req_rows: npt.NDArray[np.intp]) -> tuple[Any, ...]:
        cols = self.cols
        failed = cols.outcome[req_rows] == _FAILURE
        failed |= cols.status[req_rows] >= 500
        route, routes = _subset_codes(cols.codes["http_route"][req_rows], cols.tables["http_route"], "")
        method, methods = _subset_codes(cols.codes["http_request_method"][req_rows],
                                        cols.tables["http_request_method"], "")
        return failed, route, routes, method, methods

    def fingerprints(self, db_rows: npt.NDArray[np.intp]) -> tuple[I32, list[Any], int]:
        cols = self.cols
        fp = cols.codes["db_query_fingerprint"][db_rows]
        table: list[Any] = cols.tables["db_query_fingerprint"]
        missing = fp < 0
        if "" in table:
            missing |= fp == table.index("")
        ungrouped = -1
        if missing.any():  # (rare) the text's fingerprint, as a code after the chunk's fingerprints
            table = list(table)
            index = {key: i for i, key in enumerate(table)}
            text_codes, text_table = cols.codes["db_query_text"], cols.tables["db_query_text"]
            at = np.flatnonzero(missing)
            for j, t in zip(at.tolist(), text_codes[db_rows[at]].tolist(), strict=True):
                key = _text_fingerprint(text_table[t] if t >= 0 else None)
                code = index.get(key)
                if code is None:  # (None too: the queries that cannot be grouped)
                    code = index[key] = len(table)
                    table.append(key)
                fp[j] = code
            ungrouped = index.get(None, -1)
        key_code, distinct = _first_codes(fp)
        keys = table[:len(distinct)] if isinstance(distinct, range) else list(map(table.__getitem__, distinct))
        return key_code, keys, distinct.index(ungrouped) if ungrouped >= 0 else -1

    def firsts(self, rows: npt.NDArray[np.intp]) -> tuple[Any, ...]:
        cols = self.cols
        text, texts = _subset_codes(cols.codes["db_query_text"][rows], cols.tables["db_query_text"])
        table, tables = _subset_codes(cols.codes["db_collection_name"][rows], cols.tables["db_collection_name"])
        return text, texts, table, tables


_FAILURE = OUTCOMES["failure"]


def _text_fingerprint(text: str | None) -> str | None:
    """A query's fingerprint from its text when it came without one (None without a text: counted, but
    cannot be grouped)."""
    return query_fingerprint(text) if text else None


def _first_codes(ids: npt.NDArray[Any]) -> tuple[I32, Sequence[int]]:
    """Each of these non-negative integers' index among the distinct ones in order of first appearance, and
    those integers (``range(k)`` when they are 0..k-1 in order): a scatter of first rows over the integers'
    range, no sort of the rows."""
    n = ids.size
    first = np.full(int(ids.max()) + 1 if n else 0, n, np.intp)
    np.minimum.at(first, ids, np.arange(n))
    distinct = np.flatnonzero(first < n)
    at = first[distinct]
    if (at[1:] > at[:-1]).all():  # (mostly: the codes are in order of first appearance in the chunk)
        if distinct.size == first.size:  # each its own code
            return ids.astype(np.int32), range(distinct.size)
    else:
        distinct = distinct[at.argsort(kind="stable")]
    rank = np.empty(first.size, np.int32)
    rank[distinct] = np.arange(distinct.size, dtype=np.int32)
    return rank[ids], distinct.tolist()


def _subset_codes(codes: I32, table: list[Any], absent: Any = None) -> tuple[I32, list[Any]]:
    """``_codes`` of the values of these codes into ``table`` (-1 read as ``absent``), without the values."""
    ids = codes + 1  # 0: absent
    if absent is not None and absent in table:  # absent and its entry in the table are one value
        ids[codes < 0] = table.index(absent) + 1
    dense, distinct = _first_codes(ids)
    return dense, [table[i - 1] if i else absent for i in distinct]


def _summarize(src: _FromEvents | _FromColumns, kind: npt.NDArray[np.int8], code: I32, traces: list[Any],
               untraced: int, ts: F64, dur: F64) -> TraceBatch:
    """The batch of a chunk given its events' kinds, trace codes (``traces``, None's code ``untraced`` or -1),
    ends and durations; ``src`` reads the rest from the events that need it."""
    traced = kind != _METRIC
    if untraced >= 0:
        traced &= code != untraced

    task_rows = np.flatnonzero(kind == _TASK)
    traced_task = traced[task_rows]
    is_op = traced & (kind >= _DB) & (kind <= _EXTERNAL)
    is_req = traced & (kind == _REQUEST)
    member = is_op | is_req
    if task_rows.size:
        roots, below = src.tasks(task_rows, is_op)
        root_rows = task_rows[roots & traced_task]
        member[root_rows] = True
        if below is not None:
            member[below] = False
    else:
        root_rows = task_rows
    req_rows = np.flatnonzero(is_req)

    # Every row that takes part in a piece, in event order; closers are requests and root tasks.
    rows = np.flatnonzero(member)
    m = rows.size
    c = code[rows]
    k = kind[rows]
    is_req = k == _REQUEST
    op = k != _TASK  # (rows are requests, root tasks and operations)
    op &= ~is_req
    closer = ~op
    order = np.argsort(c, kind="stable")
    cs = c[order]
    pos = np.where(closer[order], np.arange(m), m)
    nxt = np.minimum.accumulate(pos[::-1])[::-1]
    has = nxt < m
    nxt = np.where(has, nxt, 0)
    has &= cs[nxt] == cs
    owner = np.empty(m, np.int64)
    owner[order] = np.where(has, order[nxt], -1)  # index in `rows` of the closer, or -1: the rest

    # each closer's piece: a request's index among the requests, -1 for a root task (it drops its operations)
    closer_piece = np.where(is_req, np.cumsum(is_req) - 1, -1)
    nreq = req_rows.size
    op_owner = owner[op]
    op_code = c[op]
    in_rest = op_owner < 0
    with_rest = np.zeros(len(traces), bool)
    with_rest[op_code[in_rest]] = True
    rest_trace = np.flatnonzero(with_rest).astype(np.int32)
    piece = closer_piece[op_owner]  # (an owner of -1, a rest, reads the last row: set just below)
    piece[in_rest] = nreq + np.searchsorted(rest_trace, op_code[in_rest])
    kept = piece >= 0  # the others were dropped by a root task
    npieces = nreq + rest_trace.size

    op_kind = k[op]
    op_rows = rows[op]
    op_dur = dur[op_rows]
    op_ts = ts[op_rows]

    def per_piece(mask: npt.NDArray[np.bool_], weights: F64 | None = None) -> Any:
        if weights is None:
            return np.bincount(piece[mask], minlength=npieces)
        # (of nothing, bincount returns integers even with weights)
        return np.bincount(piece[mask], weights=weights[mask], minlength=npieces).astype(np.float64, copy=False)

    is_db = kept & (op_kind == _DB)
    queries = per_piece(is_db)
    db_ms = per_piece(is_db, op_dur)
    cache_ms = per_piece(kept & (op_kind == _CACHE), op_dur)
    external_ms = per_piece(kept & (op_kind == _EXTERNAL), op_dur)

    b = TraceBatch()
    b.traces = traces
    b.tasks = int(traced_task.sum())
    newest = -np.inf
    for part in (ts[req_rows], ts[task_rows[traced_task]], op_ts[kept]):
        if part.size:
            newest = max(newest, float(part.max()))
    b.newest = float(newest)

    ntraces = len(traces)
    b.req_trace = _index_array(code[req_rows], ntraces)
    b.req_end = ts[req_rows]
    b.req_dur = dur[req_rows]
    b.req_failed, route, b.routes, method, b.methods = src.requests(req_rows)
    b.req_route, b.req_method = _index_array(route, len(b.routes)), _index_array(method, len(b.methods))
    b.req_queries = _count_array(queries[:nreq])
    b.req_db_at, b.req_db = _nonzero(db_ms[:nreq])
    b.req_cache_at, b.req_cache = _nonzero(cache_ms[:nreq])
    b.req_external_at, b.req_external = _nonzero(external_ms[:nreq])
    b.root_trace = _index_array(code[root_rows], ntraces)
    b.root_at = _index_array(np.searchsorted(req_rows, root_rows), nreq + 1)

    b.rest_trace = _index_array(rest_trace, ntraces)
    rest_piece = piece[in_rest]
    b.rest_events = _count_array(np.bincount(rest_piece - nreq, minlength=rest_trace.size))
    rest_newest = np.full(rest_trace.size, -np.inf)
    np.maximum.at(rest_newest, rest_piece - nreq, op_ts[in_rest])
    b.rest_newest = rest_newest
    b.rest_queries = _count_array(queries[nreq:])
    b.rest_db, b.rest_cache, b.rest_external = db_ms[nreq:], cache_ms[nreq:], external_ms[nreq:]

    _fingerprints(b, src, op_rows[is_db], piece[is_db], op_dur[is_db])
    return b


def _fingerprints(b: TraceBatch, src: _FromEvents | _FromColumns, db_rows: npt.NDArray[np.intp], piece: I64,
                  dur: F64) -> None:
    """The (piece, fingerprint) groups of the kept queries (rows ``db_rows``, in event order)."""
    key_code, fp_keys, ungrouped = src.fingerprints(db_rows)
    if ungrouped >= 0:
        grouped = key_code != ungrouped
        db_rows, piece, dur, key_code = db_rows[grouped], piece[grouped], dur[grouped], key_code[grouped]
        fp_keys[ungrouped] = ""  # (its rows are left out: never looked up)
    width = max(len(fp_keys), 1)
    groups, first, inverse, counts = np.unique(piece * width + key_code, return_index=True,
                                               return_inverse=True, return_counts=True)
    ms = np.bincount(inverse, weights=dur, minlength=groups.size).astype(np.float64, copy=False)
    negative_zero = (dur == 0.0) & np.signbit(dur)
    if negative_zero.any():  # the loop's sum starts from the first duration: -0.0 when all are -0.0
        all_negative = np.bincount(inverse, weights=negative_zero, minlength=groups.size) == counts
        ms[all_negative] = -0.0
    owner = groups // width
    by_owner = np.lexsort((first, owner))  # each piece's fingerprints in the order they first appear
    b.fp_owner = _index_array(owner[by_owner], b.req_trace.size + b.rest_trace.size)
    b.fp_key = _index_array((groups % width)[by_owner], len(fp_keys))
    b.fp_n = _count_array(counts[by_owner])
    b.fp_ms = ms[by_owner]
    text, b.fp_texts, table, b.fp_tables = src.firsts(db_rows[first[by_owner]])
    b.fp_text, b.fp_table = _index_array(text, len(b.fp_texts)), _index_array(table, len(b.fp_tables))
    keys = KEY_SEPARATOR.join(fp_keys)
    # (the separators are the join's alone when no fingerprint holds one)
    b.fp_keys = keys if keys.count(KEY_SEPARATOR) == max(len(fp_keys) - 1, 0) else fp_keys
