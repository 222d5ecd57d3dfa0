"""The parent's open traces as columns of slots (``OpenTraces``): what ``traces.TraceAnalyzer`` joins a chunk's
traces against, trims to the cap and writes at the end of a run.

An open trace is a slot: its newest event and events (numpy columns, what the trim and the write read), its trace
id (an object column) and where its sums are (a source and an index there: a batch's rests, a stored row of open
traces, or the table's own list of ``PackedTrace``, those a run merged). An index maps a trace id to its slot.

Why columns: nearly every open trace of a log is an orphan that the cap later drops (the benchmark log: 148 of
64,868 rests find their trace open), and a dict of one object per open trace made each of them cost Python work
three times: an object and an entry when opened, a read of every entry per trim (each trim a pass over ~35,000
open traces), and a pop when dropped. Here a chunk's rests are appended with a few numpy copies and one bulk
update of the index, a trim is numpy over the columns (a dropped trace is a cleared ``alive`` flag), and the
dead slots are compacted away, the index rebuilt, once they outnumber the live ones (amortized: a rebuild
costs what the live slots cost, and at least as many slots died since the last).

It reads as a dict of the open traces (trace id -> ``PackedTrace`` or ``InColumns``) in the order a dict would
have them: a trace merged keeps its slot, one opened again is appended, compaction keeps the order.
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Iterator
from typing import Any

import numpy as np

from aggregator.insights.partials import OpenTrace, PackedTrace
from logging_apm._native import load as load_native

__all__ = ["InColumns", "OpenTraces", "OpenView"]

# aggregator/insights/_opentable.c (optional; None: not built, or LOGAPM_NATIVE=0): the index in C, else _DictIndex.
_native = load_native("aggregator.insights._opentable")


class InColumns(tuple[Any, ...]):
    """An open trace as the parent holds it until it is read, a reference to columns: (newest, events, its source,
    its index there). The source is a batch's rests (``traces._Rests``: a trace one of its rests opened) or a
    stored row's ``findings.OpenTraceColumns`` (a trace an earlier run left open); both give ``sums(i)`` and
    ``fingerprints(i)``. Read as a ``PackedTrace`` is (its first two items too): the same values as the
    ``PackedTrace`` of ``OpenTrace().merge(rest)``, or of the ``OpenTrace`` stored.

    Made only when a trace is read one at a time (a merge, a test): the table keeps its open traces as columns."""

    __slots__ = ()

    newest = property(operator.itemgetter(0))
    events = property(operator.itemgetter(1))
    queries = property(lambda self: self[2].sums(self[3])[0])
    db_ms = property(lambda self: self[2].sums(self[3])[1])
    cache_ms = property(lambda self: self[2].sums(self[3])[2])
    external_ms = property(lambda self: self[2].sums(self[3])[3])

    @property
    def fingerprints(self) -> Any:
        return self[2].fingerprints(self[3])

    def unpack(self) -> OpenTrace:
        ops = OpenTrace.__new__(OpenTrace)
        ops.newest, ops.events = self[0], self[1]
        ops.queries, ops.db_ms, ops.cache_ms, ops.external_ms = self[2].sums(self[3])
        ops.fingerprints = self[2].fingerprints(self[3])
        return ops


Open = PackedTrace | InColumns  # an open trace, read one at a time

_PACKED = 0  # the source number of the table's own PackedTrace list


class _DictIndex:
    """``_opentable.Index`` in Python (a dict of the same hashes; the same slots): trace id hash -> slot, the hash
    ``hash(trace_id)``'s low ``bits``. See aggregator/insights/_opentable.c for what each method does."""

    __slots__ = ("_keep", "_slots")

    def __init__(self, bits: int = 64) -> None:
        if not 1 <= bits <= 64:
            raise ValueError("bits must be 1..64")
        self._keep = -1 if bits == 64 else (1 << bits) - 1  # (x & -1 is x: the signed hash as C keeps it)
        self._slots: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self._slots)

    def lookup(self, ids: list[Any], slots: Any, hashes: Any) -> None:
        n = len(ids)
        keep = self._keep
        hashes[:n] = [hash(x) & keep for x in ids]
        self.get(hashes[:n], slots)

    def get(self, hashes: Any, slots: Any) -> None:
        n = hashes.size
        slots[:n] = list(map(self._slots.get, hashes.tolist(), [-1] * n))

    def insert(self, hashes: Any, slots: Any, alive: Any, taken: Any) -> int:
        index = self._slots
        count = 0
        for i, (h, slot) in enumerate(zip(hashes.tolist(), slots.tolist(), strict=True)):
            held = index.get(h, -1)
            taken[i] = held >= 0 and held < alive.size and bool(alive[held])
            if taken[i]:
                count += 1
            else:
                index[h] = slot
        return count

    def clear(self) -> None:
        self._slots.clear()


def _index(bits: int) -> Any:
    return _native.Index(bits) if _native is not None else _DictIndex(bits)


class OpenTraces:
    """The open traces (see the module docstring). Slot columns ``newest``, ``events``, ``src`` (index into
    ``sources``; 0: ``packed``), ``idx`` (the trace's index in its source), ``alive`` and ``ids``, valid up to
    ``n``; ``live`` slots are alive.

    ``index``: the hash of a trace id (``HASH_BITS`` of ``hash(trace_id)``) -> the slot last opened with that hash
    (dead ones too, until the next compaction: a lookup checks ``alive`` and that the slot holds the same id).
    Two live traces with one hash (64-bit: about never, unless a test keeps a few bits): the second is found
    through ``overflow`` (trace id -> slot), which every lookup then also asks. So each live trace is found
    either by its hash or in ``overflow``; the hash alone never decides."""

    HASH_BITS = 64

    __slots__ = ("alive", "events", "hash", "ids", "idx", "index", "keep", "live", "n", "newest", "overflow", "packed",
                 "sources", "src")

    def __init__(self) -> None:
        self.n = self.live = 0
        self.newest = np.empty(0, np.float64)
        self.events = np.empty(0, np.int64)
        self.hash = np.empty(0, np.int64)  # each slot's hash in the index
        self.src = np.empty(0, np.int32)
        self.idx = np.empty(0, np.int64)
        self.alive = np.empty(0, np.bool_)
        self.ids = np.empty(0, object)
        self.packed: list[PackedTrace] = []
        self.sources: list[Any] = [self.packed]
        self.index = _index(self.HASH_BITS)
        self.keep = -1 if self.HASH_BITS == 64 else (1 << self.HASH_BITS) - 1  # (the hash bits kept)
        self.overflow: dict[Any, int] = {}

    # --- read as a dict ------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return self.live

    def __bool__(self) -> bool:
        return self.live > 0

    def slots(self) -> Any:
        """The live slots, in order (an int64 array)."""
        return np.flatnonzero(self.alive[:self.n])

    def __iter__(self) -> Iterator[Any]:
        return iter(self.ids_of(self.slots()))

    def item(self, slot: int) -> Open:
        """The open trace in ``slot``, as a ``PackedTrace`` (merged ones) or an ``InColumns``."""
        src = int(self.src[slot])
        if src == _PACKED:
            return self.packed[int(self.idx[slot])]
        return tuple.__new__(InColumns, (float(self.newest[slot]), int(self.events[slot]), self.sources[src],
                                         int(self.idx[slot])))

    def values(self) -> list[Open]:
        return list(map(self.item, self.slots().tolist()))

    def items(self) -> list[tuple[Any, Open]]:
        slots = self.slots()
        return list(zip(self.ids_of(slots), map(self.item, slots.tolist()), strict=True))

    def ids_of(self, slots: Any) -> list[Any]:
        """The trace ids of these slots: from the ``ids`` column, or where it holds None (traces opened without
        their ids: a batch's rests) from their sources (``trace_ids_at``), a source at a time."""
        out = self.ids[slots]
        lazy = np.flatnonzero(np.equal(out, None))  # type: ignore[call-overload]
        if lazy.size:
            at = slots[lazy]
            by_src = np.argsort(self.src[at], kind="stable")
            src, idx, lazy = self.src[at][by_src], self.idx[at][by_src], lazy[by_src]
            bounds = [0, *(np.flatnonzero(src[1:] != src[:-1]) + 1).tolist(), src.size]
            for lo, hi in itertools.pairwise(bounds):
                out[lazy[lo:hi]] = self.sources[int(src[lo])].trace_ids_at(idx[lo:hi])
        return out.tolist()  # type: ignore[no-any-return]

    def slot_of(self, trace_id: Any) -> int:
        """The live slot of this trace, or -1."""
        return int(self.lookup([trace_id])[0])

    def __contains__(self, trace_id: Any) -> bool:
        return self.slot_of(trace_id) >= 0

    def get(self, trace_id: Any, default: Any = None) -> Any:
        slot = self.slot_of(trace_id)
        return default if slot < 0 else self.item(slot)

    def __getitem__(self, trace_id: Any) -> Open:
        slot = self.slot_of(trace_id)
        if slot < 0:
            raise KeyError(trace_id)
        return self.item(slot)

    def hashes_of(self, trace_ids: list[Any]) -> Any:
        """The index's hashes of these trace ids (an int64 array): those they came with (``columns.TraceIds``: a
        batch's, made as it was unpickled), else made here."""
        hashes = getattr(trace_ids, "hashes", None)
        if hashes is None:
            n = len(trace_ids)
            hashes = np.empty(n, np.int64)
            self.index.lookup(trace_ids, np.empty(n, np.int64), hashes)
            return hashes
        return hashes if self.keep == -1 else hashes & self.keep

    def lookup(self, trace_ids: list[Any], hashes: Any = None) -> Any:
        """Each trace's live slot, or -1 (an int64 array): a chunk's hit test. ``hashes``: theirs (``hashes_of``),
        when the caller has them."""
        n = len(trace_ids)
        slots = np.full(n, -1, np.int64)
        if not self.live:
            return slots
        if hashes is None:
            self.index.lookup(trace_ids, slots, np.empty(n, np.int64))
        else:
            self.index.get(hashes, slots)
        found = np.flatnonzero(slots >= 0)
        if found.size:
            live = self.alive[slots[found]]
            slots[found[~live]] = -1
            found = found[live]
            # (a chunk's hits are a few: the rest of its ids find no slot, or a dead one)
            for i, held in zip(found.tolist(), self.ids_of(slots[found]), strict=True):
                if held != trace_ids[i]:  # another trace of the same hash
                    slots[i] = -1
        if self.overflow:
            get = self.overflow.get
            for i in np.flatnonzero(slots < 0).tolist():
                slots[i] = get(trace_ids[i], -1)
        return slots

    # --- change ---------------------------------------------------------------------------------------------

    def pop(self, trace_id: Any, default: Any = None) -> Any:
        slot = self.slot_of(trace_id)
        if slot < 0:
            return default
        out = self.item(slot)
        self.kill(np.array([slot]))
        return out

    def __setitem__(self, trace_id: Any, packed: PackedTrace) -> None:
        """Open this trace as ``packed`` (a merge: in its slot when it is open, keeping its place)."""
        slot = self.slot_of(trace_id)
        if slot < 0:
            self._reserve(1)  # (first: a compaction renumbers the packed traces)
            self.append([trace_id], np.array([packed[0]], np.float64), np.array([packed[1]], np.int64),
                        self.packed, np.array([len(self.packed)]))
        else:
            self.newest[slot], self.events[slot] = packed[0], packed[1]
            self.src[slot], self.idx[slot] = _PACKED, len(self.packed)
            self.ids[slot] = trace_id  # (the packed traces' ids are their slots' own)
        self.packed.append(packed)

    def append(self, trace_ids: list[Any] | None, newest: Any, events: Any, source: Any, idx: Any,
               hashes: Any = None) -> None:
        """Open these traces (none open now, each once) at the end, their sums at ``idx`` in ``source``;
        ``hashes``: theirs (``hashes_of``), when the caller has them. ``trace_ids`` None: their ids are read from
        the source when needed (``trace_ids_at(idx)``), and ``hashes`` must be given."""
        k = len(idx) if trace_ids is None else len(trace_ids)
        if not k:
            return
        self._reserve(k)
        a, b = self.n, self.n + k
        self.hash[a:b] = self.hashes_of(trace_ids) if hashes is None else hashes  # type: ignore[arg-type]
        self.newest[a:b] = newest
        self.events[a:b] = events
        if source is self.packed:
            self.src[a:b] = _PACKED
        else:
            self.src[a:b] = len(self.sources)
            self.sources.append(source)
        self.idx[a:b] = idx
        self.alive[a:b] = True
        self.ids[a:b] = trace_ids  # (None: read from the source)
        self.n = b
        self.live += k
        self._index_slots(a, b)

    def _index_slots(self, a: int, b: int) -> None:
        """Live slots ``a .. b - 1`` into the index by their hashes; those whose hash a live trace holds already
        into ``overflow``."""
        taken = np.empty(b - a, np.bool_)
        if self.index.insert(self.hash[a:b], np.arange(a, b, dtype=np.int64), self.alive, taken):
            for i in (np.flatnonzero(taken) + a).tolist():
                self.overflow[self.ids_of(np.array([i]))[0]] = i

    def kill(self, slots: Any) -> None:
        """These live slots are no longer open (each given once)."""
        self.alive[slots] = False
        self.live -= len(slots)
        if self.overflow:
            for slot, trace_id in zip(slots.tolist(), self.ids_of(slots), strict=True):
                if self.overflow.get(trace_id) == slot:
                    del self.overflow[trace_id]

    def _reserve(self, k: int) -> None:
        """Room for ``k`` more slots: the dead ones compacted away once they are as many as the live ones (so a
        compaction's cost is paid by the slots that died since the last), else the columns doubled."""
        if self.n + k > self.alive.size:
            if self.n - self.live >= self.live:
                self.compact()
            if self.n + k > self.alive.size:
                self._grow(max(2 * self.alive.size, self.n + k, 1024))

    def _grow(self, size: int) -> None:
        n = self.n
        for name in ("newest", "events", "hash", "src", "idx", "alive", "ids"):
            old = getattr(self, name)
            new = np.zeros(size, old.dtype) if name == "alive" else np.empty(size, old.dtype)
            new[:n] = old[:n]
            setattr(self, name, new)

    def compact(self) -> None:
        """Drop the dead slots (the live ones keep their order), the sources no live slot uses, the packed traces
        no live slot holds; rebuild the index."""
        slots = self.slots()
        k = slots.size
        for name in ("newest", "events", "hash", "src", "idx", "ids"):
            col = getattr(self, name)
            col[:k] = col[slots]
        self.alive[:k] = True
        self.alive[k:self.n] = False
        self.ids[k:self.n] = None  # (their trace ids freed)
        src, idx = self.src[:k], self.idx[:k]
        used = np.flatnonzero(np.bincount(src, minlength=len(self.sources)))
        renumber = np.zeros(len(self.sources), np.int32)
        renumber[used] = np.arange(used.size, dtype=np.int32)
        packed = src == _PACKED
        if used.size and used[0] == _PACKED:
            self.packed[:] = map(self.packed.__getitem__, idx[packed].tolist())
            idx[packed] = np.arange(len(self.packed))
        else:
            self.packed.clear()
            used = np.concatenate(([_PACKED], used))
            renumber[used] = np.arange(used.size, dtype=np.int32)
        self.sources = list(map(self.sources.__getitem__, used.tolist()))
        src[:] = renumber[src]
        self.n = self.live = k
        self.index.clear()
        self.overflow.clear()
        self._index_slots(0, k)


class OpenView:
    """The live open traces of a table at one moment (its ``slots``), read as a list of ``PackedTrace`` and
    ``InColumns``; ``traces._open_sums`` takes their sums from the table's columns."""

    __slots__ = ("slots", "table")

    def __init__(self, table: OpenTraces, slots: Any) -> None:
        self.table, self.slots = table, slots

    def __len__(self) -> int:
        return int(self.slots.size)

    def __getitem__(self, i: int) -> Open:
        return self.table.item(int(self.slots[i]))

    def __iter__(self) -> Iterator[Open]:
        return map(self.table.item, self.slots.tolist())

    def __eq__(self, other: object) -> bool:
        return list(self) == (list(other) if isinstance(other, OpenView) else other)

    __hash__ = None  # type: ignore[assignment]
