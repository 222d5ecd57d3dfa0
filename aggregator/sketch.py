"""A mergeable quantile sketch with DDSketch semantics, vectorised with numpy.

Mapping (DDSketch, Masson et al. 2019): a positive value ``v`` falls in bucket ``k = ceil(log_gamma(v))``
with ``gamma = (1 + a) / (1 - a)``; the bucket's representative ``2 gamma^k / (1 + gamma)`` is within the
relative accuracy ``a`` of every value in the bucket. Negative values use a mirrored store, values whose
magnitude is below the smallest indexable one count as zero. Buckets are dense numpy arrays with an
offset, so adding an array of values is one ``np.log``, one ``np.ceil`` and one ``np.bincount``.

Read-out (the design's rule): a reported quantile is the *linearly interpolated* quantile of the exact
values (numpy's default, Hyndman-Fan type 7). We estimate the values at the two neighbouring ranks
``floor(q (n - 1))`` and ``ceil(q (n - 1))``, interpolate between them, and clamp with the exact min and max
kept beside the buckets (the extreme ranks are read exactly from them). Each rank estimate is within ``a``
of the exact order statistic, so for same-signed data the interpolation is within ``a`` of numpy's figure.

Trade-offs, measured on this machine (2 cores; ``tests/aggregator/test_sketch.py`` checks the accuracy):

- Accuracy: 1% relative on every quantile, heavy tails included (tests: n = 1..20, 37, 100, 999, 10^4,
  2x10^5; 3,000 random small Pareto series; merges in any split; worst seen 0.9991%).
  A plain DDSketch read-out (one rank, no interpolation) was up to 100% off the interpolated p99 of small
  heavy-tailed series; interpolation + exact min/max fixes that. Values of both signs near a quantile
  (a gauge crossing zero) keep the 1% guarantee per rank, but the interpolated figure between a negative
  and a positive rank is only within 1% of the larger magnitude.
- Size: durations from 1 us to 1 hour span ~1,000 buckets at a = 1%; a real latency series uses 100-300,
  most of them empty in a window (70% in the benchmark's). Stored (form 2, ``aggregator/_sketchcodec.c``: a
  bitmap of the non-empty buckets, then each count less 1 in as many bits as the largest needs, CRC-32) a
  window of 50 / 300 / 2,000 lognormal(4, 1.2) durations takes about 70 / 134 / 266 bytes, a sketch of 10^6
  values about 950 (form 1, zlib level 1 of the counts in the narrowest integer type: 117 / 187 / 280 and
  971). The 6,771 windows of the 1M-event benchmark: median 93 bytes, 656 kB in all (form 1: 155, 985 kB).
  Other codings, estimated on those windows (median bytes of the counts + a 22-byte header; form 2 by the same
  estimate: 87): LEB128 counts with zero runs as (0, run) 220 (and 137 / 300 / 381 / 911 on the cases above:
  a zero run costs two bytes), one LEB128 token per count or zero run 168, bitmap + LEB128 counts 155, bitmap
  + 4-bit counts with an escape 109 (but 1,110 for 10^6 values).
- Bounded: at most ``MAX_BUCKETS`` (4,096) per sign; beyond that the lowest buckets collapse into one, so
  only quantiles in the collapsed lowest range lose accuracy (needs a 1e35 dynamic range at 1%).
- Speed (CPU time on this busy 2-core machine): ``add_many`` about 50 ns per value plus ~10 us per call;
  merging two sketches about 10 us. The window accumulators skip even that: they compute the bucket keys of
  a whole batch at once and make each window's sketch from its slice of the counts (``of_bucket_counts``,
  ~0.9 us; ``DDSketch()`` ~0.4 us). A window's sketch (~300 buckets, the benchmark's windows, medians)
  encodes to the stored form in ~1.5 us from a worker's quick form (form 1's zlib: ~10 us, mostly deflate's
  set-up per call) and ~1.9 us from a decoded sketch (12.9), to the quick form (``compress=False``) in ~3 us;
  decoding the stored form takes ~2.0 us (zlib: 5.3), the quick one ~2.8. Without the C codec (not built, or
  ``LOGAPM_NATIVE=0``) the numpy twin writes the same bytes in ~18-21 us and reads them in ~21. A sketch
  pickles in the quick form (or as the stored bytes it was read from) and is decoded when first read
  (``__reduce__``): a worker does not encode what the parent merges anyway.
"""

from __future__ import annotations

import math
import struct
import sys
import zlib
from collections.abc import Callable, Iterable, Sequence
from types import ModuleType
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from logging_apm._native import load as load_native

RELATIVE_ACCURACY: Final = 0.01
MAX_BUCKETS: Final = 4096
_FORMAT_VERSION: Final = 1  # form 1's body (the quick form's; zlib's stream of it was the stored form before form 2)
_FORM2: Final = b"\x02"  # the stored form's first byte: never a zlib stream's (0x78 here), nor the quick form's
_FORM2_CUSTOM_ACCURACY: Final = 1  # its flags: the accuracy is not RELATIVE_ACCURACY and follows
# The mapping uses a hair less than the stated accuracy, so that floating-point rounding at bucket edges
# can never push an estimate past the 1% the sketch promises.
_SAFETY: Final = 1.0 - 1e-6
_HEADER = struct.Struct("<BBdddQ")  # version, flags, accuracy, min, max, zero count
_STORE_HEADER = struct.Struct("<iIB")  # offset, length, dtype code
_DTYPES: Final = (np.uint8, np.uint16, np.uint32, np.uint64)
_DTYPE_OBJECTS: Final = tuple(np.dtype(t) for t in _DTYPES)
_EMPTY_STORE: Final = _STORE_HEADER.pack(0, 0, 0)
# The counts of every empty store: read-only, and replaced (never written into) when buckets are added.
_NO_COUNTS: Final = np.zeros(0, dtype=np.int64)
_NO_COUNTS.flags.writeable = False
_INT64: Final = np.dtype(np.int64)
_MAPPINGS: dict[float, tuple[float, float, float]] = {}  # accuracy -> (gamma, multiplier, min indexable)

# The stored form's C codec (aggregator/_sketchcodec.c), or None: not built (it is optional) or turned off with
# LOGAPM_NATIVE=0; then the numpy twin below writes and reads the same bytes.
_codec: ModuleType | None = load_native("aggregator._sketchcodec")
# merged_quick in C (an extension built before it had it lacks it: the Python path then)
_merge_quick: Callable[[list[bytes]], Any] | None = getattr(_codec, "merge_quick", None)


def _mapping(relative_accuracy: float) -> tuple[float, float, float]:
    """The bucket mapping of an accuracy, computed once (a sketch is made per series and window)."""
    found = _MAPPINGS.get(relative_accuracy)
    if found is not None:
        return found
    if not 0.0 < relative_accuracy < 1.0:
        raise ValueError("relative_accuracy must be in (0, 1)")
    a = relative_accuracy * _SAFETY
    gamma = (1.0 + a) / (1.0 - a)
    # Below the min indexable magnitude a value is counted as zero (DDSketch's min indexable value).
    log_gamma = math.log(gamma)
    if not log_gamma > 0.0:  # (a stored sketch names its accuracy: a corrupt one may be this small)
        raise ValueError("relative_accuracy too small to map")
    mapping = (gamma, 1.0 / log_gamma, max(sys.float_info.min * gamma, 1e-300))
    if len(_MAPPINGS) < 64:  # stored sketches name their accuracy: keep a corrupt store from growing this
        _MAPPINGS[relative_accuracy] = mapping
    return mapping


class SketchError(ValueError):
    """A serialised sketch cannot be decoded, or two sketches cannot be merged."""


class _Store:
    """Dense bucket counts for one sign: ``counts[i]`` is bucket ``offset + i``."""

    __slots__ = ("counts", "offset")

    def __init__(self) -> None:
        self.offset = 0
        self.counts: npt.NDArray[np.int64] = _NO_COUNTS

    @property
    def total(self) -> int:
        return int(self.counts.sum()) if self.counts.size else 0

    def _extend(self, lo: int, hi: int) -> None:
        """Make buckets lo..hi (inclusive) addressable, collapsing the lowest beyond ``MAX_BUCKETS``."""
        if self.counts.size == 0:
            self.offset = lo
            self.counts = np.zeros(hi - lo + 1, dtype=np.int64)
            return
        cur_lo, cur_hi = self.offset, self.offset + self.counts.size - 1
        new_lo, new_hi = min(lo, cur_lo), max(hi, cur_hi)
        if new_lo == cur_lo and new_hi == cur_hi:
            return
        grown = np.zeros(new_hi - new_lo + 1, dtype=np.int64)
        grown[cur_lo - new_lo: cur_lo - new_lo + self.counts.size] = self.counts
        self.counts, self.offset = grown, new_lo

    def _collapse(self) -> None:
        excess = self.counts.size - MAX_BUCKETS
        if excess > 0:
            head = self.counts[: excess + 1].sum()
            self.counts = self.counts[excess:].copy()
            self.counts[0] = head
            self.offset += excess

    def add_keys(self, keys: npt.NDArray[np.int64]) -> None:
        if keys.size == 0:
            return
        lo, hi = int(keys.min()), int(keys.max())
        if hi - lo >= MAX_BUCKETS:
            keys = np.maximum(keys, hi - MAX_BUCKETS + 1)
            lo = int(keys.min())
        self._extend(lo, hi)
        binned = np.bincount(keys - lo, minlength=hi - lo + 1)
        start = lo - self.offset
        self.counts[start: start + binned.size] += binned
        self._collapse()

    def merge(self, other: _Store) -> None:
        if other.counts.size == 0:
            return
        if self.counts.size == 0:  # what _extend + add would make, without the zeros
            self.offset, self.counts = other.offset, other.counts.copy()
            self._collapse()
            return
        lo, hi = other.offset, other.offset + other.counts.size - 1
        self._extend(lo, hi)
        start = lo - self.offset
        self.counts[start: start + other.counts.size] += other.counts
        self._collapse()

    def copy(self) -> _Store:
        out = _Store()
        out.offset, out.counts = self.offset, self.counts.copy()
        return out

    def to_bytes(self) -> bytes:
        counts = self.counts
        if counts.size == 0:
            return _EMPTY_STORE
        offset = self.offset
        if not (counts[0] and counts[-1]):  # trim empty edge buckets
            nz = counts.nonzero()[0]
            if nz.size == 0:
                return _EMPTY_STORE
            counts = counts[nz[0]: nz[-1] + 1]
            offset += int(nz[0])
        peak = int(counts.max())
        code = 0 if peak < 1 << 8 else 1 if peak < 1 << 16 else 2 if peak < 1 << 32 else 3
        return _STORE_HEADER.pack(offset, counts.size, code) + counts.astype(_DTYPES[code]).tobytes()

    @classmethod
    def from_buffer(cls, buf: memoryview | bytes, pos: int) -> tuple[_Store, int]:
        if len(buf) < pos + _STORE_HEADER.size:
            raise SketchError("truncated sketch store header")
        offset, length, code = _STORE_HEADER.unpack_from(buf, pos)
        pos += _STORE_HEADER.size
        store = cls.__new__(cls)
        store.offset, store.counts = 0, _NO_COUNTS
        if length:
            if code >= len(_DTYPES):
                raise SketchError(f"unknown count type {code}")
            dtype = _DTYPE_OBJECTS[code]
            end = pos + length * dtype.itemsize
            if len(buf) < end:
                raise SketchError("truncated sketch store")
            store.counts = np.frombuffer(buf, dtype, length, pos).astype(np.int64)
            store.offset = offset
            pos = end
        return store, pos


class DDSketch:
    """Mergeable quantile sketch, relative accuracy ``relative_accuracy`` (1% by default).

    Keeps exact ``count``, ``min`` and ``max`` beside the buckets (the read-out clamps with them).
    """

    __slots__ = ("_blob", "_gamma", "_min_indexable", "_multiplier", "_stored", "max", "min", "neg", "pos",
                 "relative_accuracy", "zero_count")

    def __init__(self, relative_accuracy: float = RELATIVE_ACCURACY) -> None:
        self._blob: bytes | None = None  # the stored form, while it is known to be this sketch's (see __reduce__)
        self._stored: bytes | None = None  # ``to_bytes()``, once made and while unchanged (see ``seal``)
        self._gamma, self._multiplier, self._min_indexable = _mapping(relative_accuracy)
        self.relative_accuracy = relative_accuracy
        self.pos = _Store()
        self.neg = _Store()
        self.zero_count = 0
        self.min = math.inf
        self.max = -math.inf

    # --- adding ----------------------------------------------------------------------------------

    @property
    def count(self) -> float:
        return float(self.pos.total + self.neg.total + self.zero_count)

    def _keys(self, magnitudes: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
        return np.ceil(np.log(magnitudes) * self._multiplier).astype(np.int64)

    def _changing(self) -> None:
        """About to change: a sketch still in its stored form is decoded first, then forgets that form (and the
        stored bytes ``seal`` made)."""
        if self._blob is not None:
            self.pos  # noqa: B018 - decoded now if it was not yet (``__getattr__``)
            self._blob = None
        self._stored = None

    def add(self, value: float) -> None:
        self.add_many(np.asarray([value], dtype=np.float64))

    def add_many(self, values: npt.ArrayLike) -> None:
        """Add every value of ``values`` (NaN and infinities are refused: the parsers never produce them)."""
        arr = np.asarray(values, dtype=np.float64).ravel()
        if arr.size == 0:
            return
        self._changing()
        lo, hi = float(arr.min()), float(arr.max())
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise ValueError("a sketch only takes finite values")
        self.min = min(self.min, lo)
        self.max = max(self.max, hi)
        mi = self._min_indexable
        if lo > mi:  # the common case: all positive durations
            self.pos.add_keys(self._keys(arr))
            return
        positive = arr[arr > mi]
        negative = arr[arr < -mi]
        self.zero_count += int(arr.size - positive.size - negative.size)
        if positive.size:
            self.pos.add_keys(self._keys(positive))
        if negative.size:
            self.neg.add_keys(self._keys(-negative))

    def add_bucket_counts(self, key_lo: int, counts: npt.NDArray[np.int64], vmin: float, vmax: float, *,
                          adopt: bool = False) -> None:
        """Add positive values already mapped to buckets (``counts[i]`` values in bucket ``key_lo + i``,
        smallest ``vmin``, largest ``vmax``): the accumulators compute the keys of a whole batch at once
        with this sketch's mapping (``key_of``). ``adopt``: the caller hands ``counts`` over (it never writes
        it again), and a sketch without positive buckets keeps it as its own, uncopied."""
        if counts.size == 0:
            return
        self._changing()
        store = self.pos
        hi = key_lo + counts.size - 1
        excess = counts.size - MAX_BUCKETS
        if excess > 0:  # collapse the lowest buckets, as _Store does
            head = counts[: excess + 1].sum()
            counts = counts[excess:].copy()
            counts[0] = head
            key_lo += excess
        if store.counts.size == 0:  # a new window's sketch: the counts are its buckets
            store.offset = key_lo
            store.counts = counts if adopt and counts.dtype == np.int64 else counts.astype(np.int64)
        else:
            store._extend(key_lo, hi)
            start = key_lo - store.offset
            store.counts[start: start + counts.size] += counts
            store._collapse()
        self.min = min(self.min, vmin)
        self.max = max(self.max, vmax)

    @classmethod
    def of_bucket_counts(cls, key_lo: int, counts: npt.NDArray[np.int64], vmin: float, vmax: float,
                         relative_accuracy: float = RELATIVE_ACCURACY) -> DDSketch:
        """``DDSketch(relative_accuracy)`` then ``add_bucket_counts(key_lo, counts, vmin, vmax, adopt=True)``,
        in one step: the accumulators make one such sketch per series and window."""
        sketch = cls.__new__(cls)
        sketch._blob = sketch._stored = None
        sketch._gamma, sketch._multiplier, sketch._min_indexable = (
            _MAPPINGS.get(relative_accuracy) or _mapping(relative_accuracy))
        sketch.relative_accuracy = relative_accuracy
        sketch.neg = _Store()
        sketch.zero_count = 0
        pos = sketch.pos = _Store()
        if counts.dtype is _INT64 and 0 < counts.size <= MAX_BUCKETS:  # bincount's: the buckets as they are
            pos.offset, pos.counts = key_lo, counts
            # min(inf, vmin) and max(-inf, vmax), as add_bucket_counts takes them
            sketch.min = vmin if vmin < math.inf else math.inf
            sketch.max = vmax if vmax > -math.inf else -math.inf
        else:
            sketch.min, sketch.max = math.inf, -math.inf
            sketch.add_bucket_counts(key_lo, counts, vmin, vmax, adopt=True)
        return sketch

    @property
    def min_indexable(self) -> float:
        return self._min_indexable

    def key_of(self, values: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
        """Bucket keys of positive values (above the min indexable value)."""
        return self._keys(values)

    def merge(self, other: Any) -> None:
        if not isinstance(other, DDSketch):
            raise SketchError(f"cannot merge a {type(other).__name__} into a DDSketch")
        if other.relative_accuracy != self.relative_accuracy:
            raise SketchError("cannot merge sketches of different accuracy")
        self._changing()
        self.pos.merge(other.pos)
        self.neg.merge(other.neg)
        self.zero_count += other.zero_count
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)

    def copy(self) -> DDSketch:
        if self._blob is not None:  # a sketch as it came from a worker: another, decoded when read
            out = _from_stored(self._blob)
        else:
            out = DDSketch(self.relative_accuracy)
            out.pos, out.neg = self.pos.copy(), self.neg.copy()
            out.zero_count, out.min, out.max = self.zero_count, self.min, self.max
        out._stored = self._stored
        return out

    # --- reading ----------------------------------------------------------------------------------

    def _value(self, key: int) -> float:
        return 2.0 * self._gamma ** key / (1.0 + self._gamma)

    def _at_ranks(self, ranks: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
        """Estimates of the order statistics at 0-based ``ranks`` (ascending values)."""
        n_neg = self.neg.total
        out = np.empty(ranks.size, dtype=np.float64)
        # Negative store: ascending values are descending keys.
        if n_neg:
            rev = self.neg.counts[::-1]
            cum = np.cumsum(rev)
            sel = ranks < n_neg
            idx = np.searchsorted(cum, ranks[sel], side="right")
            keys = self.neg.offset + (self.neg.counts.size - 1 - idx)
            out[sel] = -representatives(self._gamma, keys)
        zsel = (ranks >= n_neg) & (ranks < n_neg + self.zero_count)
        out[zsel] = 0.0
        psel = ranks >= n_neg + self.zero_count
        if psel.any():
            cum = np.cumsum(self.pos.counts)
            idx = np.searchsorted(cum, ranks[psel] - n_neg - self.zero_count, side="right")
            idx = np.minimum(idx, self.pos.counts.size - 1)
            out[psel] = representatives(self._gamma, self.pos.offset + idx)
        return out

    def _at_rank_pair(self, lo: npt.NDArray[np.int64],
                      hi: npt.NDArray[np.int64]) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        est = self._at_ranks(np.concatenate([lo, hi]))  # one pass over the buckets for both ranks
        return est[: lo.size], est[lo.size:]

    def quantiles(self, qs: Iterable[float]) -> list[float | None]:
        """Type-7 interpolated quantiles (see the module docstring); None for an empty sketch."""
        qa = np.asarray(list(qs), dtype=np.float64)
        n = int(self.count)
        if n == 0:
            return [None] * qa.size
        if ((qa < 0) | (qa > 1)).any():
            raise ValueError("quantiles must be in [0, 1]")
        return [float(x) for x in interpolated(qa, n, self._at_rank_pair, self.min, self.max)]

    def quantile(self, q: float) -> float | None:
        return self.quantiles([q])[0]

    # --- serialisation ----------------------------------------------------------------------------

    def to_bytes(self, *, compress: bool = True) -> bytes:
        """The stored form (form 2, ``_encoded``); ``compress=False`` for the quick form, a hop between processes.

        Encoded once: the stored form a sketch came with (form 2, or form 1 from an older store), or ``seal``
        made, is given back while it is unchanged; a sketch still in the quick form (as a worker sent it) is
        encoded from that form's bytes (``_encoded_quick``: what ``_load`` then these steps give), undecoded."""
        if compress and self._stored is not None:
            return self._stored
        blob = self._blob
        if blob is not None:
            if blob[:1] != b"\0":
                if compress:  # the stored form it came with, unchanged
                    return blob
            elif compress:
                return _encoded_quick(blob)
            else:
                return blob
        if compress:
            return _encoded(self.relative_accuracy, self.min, self.max, self.zero_count, self.pos, self.neg)
        return b"".join((b"\0", _HEADER.pack(_FORMAT_VERSION, 0, self.relative_accuracy, self.min, self.max,
                                             self.zero_count), self.pos.to_bytes(), self.neg.to_bytes()))

    def seal(self) -> bytes:
        """``to_bytes()``, kept for the next calls until the sketch changes: the run encodes a window's sketch
        as soon as it looks final (``aggregator.windows.WindowState.merge``), while the workers still read, so
        that the commit only writes it. A sketch sealed then changed is encoded again: the same bytes as
        without the seal."""
        stored = self._stored
        if stored is None:
            stored = self._stored = self.to_bytes()
        return stored

    @classmethod
    def from_bytes(cls, data: bytes) -> DDSketch:
        sketch = cls.__new__(cls)
        sketch._blob = sketch._stored = None
        sketch._load(data)
        return sketch

    def _load(self, data: bytes) -> None:
        """Become the sketch ``data`` holds (the stored form or the quick one)."""
        accuracy, mn, mx, zeros, pos, neg = _body(data)
        try:
            self._gamma, self._multiplier, self._min_indexable = _mapping(accuracy)
        except ValueError as exc:
            raise SketchError(f"corrupt sketch: {exc}") from None
        self.relative_accuracy = accuracy
        self.min, self.max, self.zero_count = mn, mx, zeros
        self.pos, self.neg = pos, neg

    def __reduce__(self) -> tuple[Any, tuple[bytes]]:
        """Pickled as the bytes it came with, if any, else in the quick form, and decoded only when read.

        Not in the stored form for the hop from a worker to the parent: on the 5M-event benchmark log almost
        every window lies across two parts (6,573 of 6,771 are merged in the parent), so a worker's encoding
        (zlib's, then: ~17 us a sketch, ~37,000 sketches) was thrown away by the merge, and the parent merges
        quick forms without decoding them (``merged_quick``). A window is encoded once, in the parent: when it
        looks final (``seal``, from ``WindowState.merge``) or when it is written; the quick form of a window one
        part holds is encoded from its bytes, undecoded. A sketch read from the store goes on as its stored
        bytes."""
        blob = self._blob
        return _from_stored, (blob if blob is not None else self.to_bytes(compress=False),)

    def __getattr__(self, name: str) -> Any:
        """Called only for a slot not set: a sketch unpickled by ``_from_stored`` decodes on first use."""
        try:
            blob = object.__getattribute__(self, "_blob")
        except AttributeError:
            blob = None
        if blob is None:
            raise AttributeError(name)
        self._load(blob)
        return object.__getattribute__(self, name)

    def __repr__(self) -> str:
        return (f"DDSketch(n={int(self.count)}, min={self.min}, max={self.max}, "
                f"buckets={self.pos.counts.size}+{self.neg.counts.size})")


# A quick form's bytes before its counts (``to_bytes(compress=False)`` of a sketch with positive values only):
# the mark, _HEADER, then the positive store's _STORE_HEADER; the empty negative store follows the counts.
_QUICK_HEAD: Final = np.dtype([("mark", "u1"), ("version", "u1"), ("flags", "u1"), ("accuracy", "<f8"),
                               ("min", "<f8"), ("max", "<f8"), ("zeros", "<u8"), ("offset", "<i4"),
                               ("length", "<u4"), ("code", "u1")])
assert _QUICK_HEAD.itemsize == 1 + _HEADER.size + _STORE_HEADER.size


class BucketSlices:
    """Sketches of positive values (``DDSketch.of_bucket_counts``) from back-to-back slices of one array of
    bucket counts, ``counts[start: start + width]``: an accumulator's fold, one slice per series and window.

    Each is made in its quick form (what ``__reduce__`` sends a worker's sketch as, ``to_bytes(compress=False)``:
    the same bytes), decoded only if read (as in the parent, which gets it so), with the slices' headers,
    peaks and narrowed counts made for all of them at once: a worker made each sketch, then encoded it when
    sending it, about 8 us per series and window between them, a sixth of its windows stage. A slice whose
    first or last count is 0 (which ``to_bytes`` trims) or that is collapsed (``MAX_BUCKETS``) is made as
    before, by ``of_bucket_counts``."""

    __slots__ = ("_blobs", "_counts")

    def __init__(self, counts: npt.NDArray[np.int64], starts: npt.NDArray[np.intp], widths: npt.NDArray[np.intp],
                 key_los: npt.NDArray[np.int64], mins: npt.NDArray[np.float64],
                 maxs: npt.NDArray[np.float64]) -> None:
        """The slices, in order (each starting where the one before ends, the last ending at the end of
        ``counts``; every width positive), with what ``sketch`` will be given for each: the first bucket's
        key, the smallest and the largest value."""
        self._counts = counts
        self._blobs: dict[int, bytes] = {}
        if not starts.size or counts.dtype is not _INT64:
            return
        peaks = np.maximum.reduceat(counts, starts)
        codes = np.select([peaks < 1 << 8, peaks < 1 << 16, peaks < 1 << 32], [0, 1, 2], 3)
        quick = (counts[starts] != 0) & (counts[starts + widths - 1] != 0) & (widths <= MAX_BUCKETS)
        quick &= (key_los >= -(1 << 31)) & (key_los < 1 << 31)  # (what _STORE_HEADER packs)
        head = np.zeros(starts.size, _QUICK_HEAD)
        head["version"] = _FORMAT_VERSION
        head["accuracy"] = RELATIVE_ACCURACY
        head["min"] = np.where(mins < np.inf, mins, np.inf)  # of_bucket_counts' min(inf, vmin) ...
        head["max"] = np.where(maxs > -np.inf, maxs, -np.inf)  # ... and max(-inf, vmax)
        head["offset"] = np.where(quick, key_los, 0)
        head["length"] = widths
        head["code"] = codes
        heads = head.tobytes()
        size = _QUICK_HEAD.itemsize
        narrow: dict[int, tuple[bytes, int]] = {}
        blobs = self._blobs
        for i, start, width, code in zip(np.flatnonzero(quick).tolist(), starts[quick].tolist(),
                                         widths[quick].tolist(), codes[quick].tolist(), strict=True):
            got = narrow.get(code)
            if got is None:
                got = narrow[code] = (counts.astype(_DTYPES[code]).tobytes(), _DTYPE_OBJECTS[code].itemsize)
            body, item = got
            blobs[start] = b"".join((heads[i * size: (i + 1) * size], body[start * item: (start + width) * item],
                                     _EMPTY_STORE))

    def sketch(self, key_lo: int, start: int, width: int, vmin: float, vmax: float) -> DDSketch:
        """``DDSketch.of_bucket_counts(key_lo, counts[start: start + width], vmin, vmax)`` (the slice at ``start``
        and what was given for it)."""
        blob = self._blobs.get(start)
        if blob is None:
            return DDSketch.of_bucket_counts(key_lo, self._counts[start: start + width], vmin, vmax)
        return _from_stored(blob)


def merged(sketches: Sequence[Any]) -> DDSketch:
    """What merging each of ``sketches[1:]``, in order, into a copy of the first gives (``DDSketch.merge``):
    the same stores, zero count and extremes, for less (~10 us a merge, ~25 us with a sketch still in a
    worker's form, decoded first; the run's slowest routes merge thousands of windows). Each store's
    range is known first, then every sketch's counts are added into one array per sign, read straight from
    the bytes of a sketch still in its stored or quick form (``_body``), which is not decoded. The inputs
    are not changed.

    Integer counts add exactly in any order, and collapsing after each merge or once at the end leaves the
    same buckets (everything at or below the final top bucket - ``MAX_BUCKETS`` in the lowest), so only
    the extremes are folded in order, by the builtin ``min`` and ``max`` as ``merge`` folds them (ties).
    What the merge would refuse (another type, different accuracies) or the decoder would (bytes it cannot
    read) is merged one by one, which raises as it always did."""
    if not all(type(s) is DDSketch for s in sketches):
        return _one_by_one(sketches)
    try:
        bodies = [_body(s._blob) if s._blob is not None else (s.relative_accuracy, s.min, s.max, s.zero_count,
                                                              s.pos, s.neg) for s in sketches]
    except SketchError:
        return _one_by_one(sketches)
    accuracy = bodies[0][0]
    if not 0.0 < accuracy < 1.0 or any(b[0] != accuracy for b in bodies):
        return _one_by_one(sketches)
    out = DDSketch(accuracy)
    _, mn, mx, zeros, first_pos, first_neg = bodies[0]
    for _, lo, hi, z, _, _ in bodies[1:]:
        zeros += z
        mn = min(mn, lo)
        mx = max(mx, hi)
    out.zero_count, out.min, out.max = zeros, mn, mx
    out.pos = _summed(first_pos, [b[4] for b in bodies[1:]])
    out.neg = _summed(first_neg, [b[5] for b in bodies[1:]])
    if len(sketches) == 1:
        out._stored = sketches[0]._stored  # as copy() keeps it: nothing was merged
    return out


def merged_quick(sketches: Sequence[Any]) -> DDSketch | None:
    """``merged(sketches)`` as a sketch in the quick form (its ``to_bytes(compress=False)``), made from the bytes
    without decoding any store, when each of ``sketches`` is in the quick form a worker sends (``__reduce__``,
    ``BucketSlices``) of the same accuracy, with positive buckets only and no collapsing; else None. The parent
    merges the windows several parts hold so, then encodes them from those bytes (``seal``).

    The same bytes as ``merged`` then ``to_bytes``: the extremes folded in order by the builtin ``min`` and
    ``max``, the zero counts summed, the counts summed exactly over the union of the ranges; each input's edge
    buckets are non-zero (``to_bytes`` trims them), so the sum's are, and it needs no trimming."""
    heads = []
    for s in sketches:
        blob = s._blob if type(s) is DDSketch else None
        if blob is None or blob[:1] != b"\0" or len(blob) < 1 + _HEADER.size + 2 * _STORE_HEADER.size:
            return None
        heads.append(blob)
    if _merge_quick is not None and heads:
        # in C: ~40 us -> ~2 us a window (two parts' sketches), most of the parent's share of the windows
        got = _merge_quick(heads)
        if got is not NotImplemented:
            return None if got is None else _from_stored(got)
    return _merged_quick_py(heads)


def _merged_quick_py(heads: list[bytes]) -> DDSketch | None:
    """``merged_quick`` of the quick forms ``heads`` in Python (without the C codec, and for what it leaves to
    Python: a zero count or an offset its struct refuses)."""
    unpack, unpack_store = _HEADER.unpack_from, _STORE_HEADER.unpack_from
    first_head = unpack(heads[0], 1)
    _, _, accuracy, mn, mx, zeros = first_head
    stores: list[tuple[int, int, int, int, bytes]] = []
    for blob in heads:
        version, _, acc, lo, hi, z = unpack(blob, 1) if stores else first_head
        offset, length, code = unpack_store(blob, 1 + _HEADER.size)
        if version != _FORMAT_VERSION or acc != accuracy or not length or code >= len(_DTYPES):
            return None
        at = 1 + _HEADER.size + _STORE_HEADER.size
        end = at + length * _DTYPE_OBJECTS[code].itemsize
        if blob[end: end + _STORE_HEADER.size] != _EMPTY_STORE or len(blob) != end + _STORE_HEADER.size:
            return None  # negative buckets, or bytes this form does not have
        if stores:
            zeros += z
            mn = min(mn, lo)
            mx = max(mx, hi)
        stores.append((offset, length, code, at, blob))
    key_lo = min(st[0] for st in stores)
    width = max(st[0] + st[1] for st in stores) - key_lo
    if width > MAX_BUCKETS or not 0.0 < accuracy < 1.0:
        return None
    counts = np.zeros(width, dtype=np.int64)
    for offset, length, code, at, blob in stores:
        values = np.frombuffer(blob, _DTYPE_OBJECTS[code], length, at)
        if code == 3:  # int64 + uint64 is float64: the counts came from int64 ones, below 2**63
            values = values.view(np.int64)
        counts[offset - key_lo: offset - key_lo + length] += values
    summed = _Store()
    summed.offset, summed.counts = key_lo, counts  # its edge buckets are non-zero: to_bytes trims nothing
    return _from_stored(b"".join((b"\0", _HEADER.pack(_FORMAT_VERSION, 0, accuracy, mn, mx, zeros), summed.to_bytes(),
                                  _EMPTY_STORE)))


def _one_by_one(sketches: Sequence[DDSketch]) -> DDSketch:
    out = sketches[0].copy()
    for s in sketches[1:]:
        out.merge(s)
    return out


def _summed(first: _Store, rest: list[_Store]) -> _Store:
    """``first.copy()`` then ``merge`` of each of ``rest`` (see ``merged``): an empty store merges nothing, and a
    merge that adds buckets collapses, so the sum collapses exactly when one of ``rest`` has buckets."""
    parts = [s for s in rest if s.counts.size]
    if not parts:
        return first.copy()
    if first.counts.size:
        parts.append(first)
    lo = min(s.offset for s in parts)
    counts = np.zeros(max(s.offset + s.counts.size for s in parts) - lo, dtype=np.int64)
    for s in parts:
        at = s.offset - lo
        counts[at:at + s.counts.size] += s.counts
    out = _Store()
    out.offset, out.counts = lo, counts
    out._collapse()
    return out


_Body = tuple[float, float, float, int, _Store, _Store]


def _body(data: bytes) -> _Body:
    """The accuracy, min, max, zero count and stores of a sketch's stored form (form 2, or form 1: zlib) or quick
    form (``to_bytes``); raises ``SketchError`` for what cannot be one."""
    first = data[:1]
    if first == _FORM2:
        return _decoded(data)
    buf: memoryview | bytes = memoryview(data)[1:] if first == b"\0" else _inflated(data)
    if len(buf) < _HEADER.size:
        raise SketchError("truncated sketch header")
    version, _flags, accuracy, mn, mx, zeros = _HEADER.unpack_from(buf, 0)
    if version != _FORMAT_VERSION:
        raise SketchError(f"unknown sketch format version {version}")
    pos, at = _Store.from_buffer(buf, _HEADER.size)
    neg, _ = _Store.from_buffer(buf, at)
    return accuracy, mn, mx, zeros, pos, neg


def _inflated(data: bytes) -> bytes:
    """Form 1's body from its zlib stream (sketches stored before form 2)."""
    try:
        return zlib.decompress(data)
    except zlib.error as exc:
        raise SketchError(f"corrupt sketch: {exc}") from None


# --- the stored form, form 2 (aggregator/_sketchcodec.c describes the bytes; the C codec and this numpy twin
# write and read the same bytes, and refuse the same ones) ---------------------------------------------------

def _encoded(accuracy: float, mn: float, mx: float, zeros: int, pos: _Store, neg: _Store) -> bytes:
    """The stored form of a sketch's fields and stores."""
    if _codec is not None:
        out: bytes = _codec.encode(accuracy, mn, mx, zeros, pos.offset, _int64(pos.counts), neg.offset,
                                   _int64(neg.counts))
        return out
    return _encoded_py(accuracy, mn, mx, zeros, pos, neg)


def _encoded_py(accuracy: float, mn: float, mx: float, zeros: int, pos: _Store, neg: _Store) -> bytes:
    """``_encoded`` in numpy."""
    custom = accuracy != RELATIVE_ACCURACY
    parts = [_FORM2, bytes((_FORM2_CUSTOM_ACCURACY if custom else 0,))]
    if custom:
        parts.append(struct.pack("<d", accuracy))
    if zeros < 0 or zeros >= 1 << 64:
        raise OverflowError("a sketch's zero count must fit 64 bits")
    parts += [struct.pack("<dd", mn, mx), _varint(int(zeros)), _store2(pos), _store2(neg)]
    body = b"".join(parts)
    return body + zlib.crc32(body).to_bytes(4, "little")


def _encoded_quick(blob: bytes) -> bytes:
    """``_encoded`` of what the quick form ``blob`` holds, from its bytes."""
    if _codec is not None:
        try:
            out: bytes = _codec.encode_quick(blob)
            return out
        except ValueError as exc:
            raise SketchError(str(exc)) from None
    return _encoded(*_body(blob))


def _decoded(data: bytes) -> _Body:
    """What a sketch's form 2 holds."""
    if _codec is None:
        return _decoded_py(data)
    try:
        accuracy, mn, mx, zeros, pos_offset, pos_counts, neg_offset, neg_counts = _codec.decode(data)
    except ValueError as exc:
        raise SketchError(str(exc)) from None
    return accuracy, mn, mx, zeros, _store_of(pos_offset, pos_counts), _store_of(neg_offset, neg_counts)


def _int64(counts: npt.NDArray[Any]) -> npt.NDArray[np.int64]:
    return counts if counts.dtype is _INT64 and counts.flags.c_contiguous else np.ascontiguousarray(counts, np.int64)


def _store_of(offset: int, counts: bytearray) -> _Store:
    store = _Store.__new__(_Store)
    if counts:
        store.offset, store.counts = offset, np.frombuffer(counts, np.int64)  # (a bytearray's: writeable)
    else:
        store.offset, store.counts = 0, _NO_COUNTS
    return store


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _read_varint(buf: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if at >= len(buf):
            raise SketchError("truncated sketch")
        byte = buf[at]
        at += 1
        if shift == 63 and byte > 1:
            raise SketchError("corrupt sketch: a number past 64 bits")
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            if byte == 0 and shift:
                raise SketchError("corrupt sketch: a number with a redundant byte")
            return value, at
        shift += 7


_U1: Final = np.uint64(1)


def _store2(store: _Store) -> bytes:
    """A store in form 2: its buckets from the first to the last non-zero one, which are marked in a bitmap,
    and each non-zero count less 1 in as many bits as the largest needs."""
    nz = np.flatnonzero(store.counts)
    if not nz.size:
        return b"\0"
    first = store.offset + int(nz[0])
    if not -(1 << 31) <= first < 1 << 31:
        raise OverflowError("a sketch's first bucket key must be within int32")
    counts = _int64(store.counts[nz[0]: nz[-1] + 1]).view(np.uint64)
    present = counts != 0
    values = counts[present] - _U1
    width = int(np.bitwise_or.reduce(values)).bit_length()
    parts = [_varint(counts.size), _varint(first << 1 if first >= 0 else (-first << 1) - 1), bytes((width,)),
             np.packbits(present, bitorder="little").tobytes()]
    if width:
        bits = (values[:, None] >> np.arange(width, dtype=np.uint64)) & _U1
        parts.append(np.packbits(bits.astype(np.uint8).ravel(), bitorder="little").tobytes())
    return b"".join(parts)


def _decoded_py(data: bytes) -> _Body:
    """``_decoded`` in numpy."""
    if len(data) < 2 or data[:1] != _FORM2:
        raise SketchError("not a sketch of form 2")
    if len(data) < 6 or zlib.crc32(data[:-4]) != int.from_bytes(data[-4:], "little"):
        raise SketchError("corrupt sketch: its checksum differs")
    data = data[:-4]
    flags, at = data[1], 2
    if flags & ~_FORM2_CUSTOM_ACCURACY:
        raise SketchError("corrupt sketch: unknown flags")
    if len(data) - at < (24 if flags else 16):
        raise SketchError("truncated sketch header")
    accuracy = RELATIVE_ACCURACY
    if flags:
        (accuracy,) = struct.unpack_from("<d", data, at)
        at += 8
        if accuracy == RELATIVE_ACCURACY:
            raise SketchError("corrupt sketch: the default accuracy written out")
    mn, mx = struct.unpack_from("<dd", data, at)
    zeros, at = _read_varint(data, at + 16)
    pos, at = _read_store2(data, at)
    neg, at = _read_store2(data, at)
    if at != len(data):
        raise SketchError("corrupt sketch: bytes after its stores")
    return accuracy, mn, mx, zeros, pos, neg


def _read_store2(data: bytes, at: int) -> tuple[_Store, int]:
    store = _Store()
    n, at = _read_varint(data, at)
    if not n:
        return store, at
    zigzag, at = _read_varint(data, at)
    offset = zigzag >> 1 if not zigzag & 1 else -(zigzag >> 1) - 1
    if not -(1 << 31) <= offset < 1 << 31:
        raise SketchError("corrupt sketch: a bucket key past int32")
    if at >= len(data):
        raise SketchError("truncated sketch")
    width = data[at]
    at += 1
    if width > 64:
        raise SketchError("corrupt sketch: a count wider than 64 bits")
    map_bytes = (n + 7) // 8
    if map_bytes > len(data) - at:
        raise SketchError("truncated sketch")
    marks = np.unpackbits(np.frombuffer(data, np.uint8, map_bytes, at), bitorder="little")
    if not (marks[0] and marks[n - 1]) or marks[n:].any():
        raise SketchError("corrupt sketch: a store's edges or padding")
    present = marks[:n].view(bool)
    k = int(np.count_nonzero(present))
    at += map_bytes
    value_bytes = (k * width + 7) // 8
    if value_bytes > len(data) - at:
        raise SketchError("truncated sketch")
    counts = np.zeros(n, dtype=np.uint64)
    if width:
        bits = np.unpackbits(np.frombuffer(data, np.uint8, value_bytes, at), bitorder="little")
        if bits[k * width:].any():
            raise SketchError("corrupt sketch: a store's padding")
        values = np.bitwise_or.reduce(bits[:k * width].reshape(k, width).astype(np.uint64)
                                      << np.arange(width, dtype=np.uint64), axis=1)
        if (values == np.uint64(2**64 - 1)).any():
            raise SketchError("corrupt sketch: a count past 64 bits")
        if not int(np.bitwise_or.reduce(values)) >> (width - 1):
            raise SketchError("corrupt sketch: counts wider than they need")
        counts[present] = values + _U1
    else:
        counts[present] = 1
    store.offset, store.counts = offset, counts.view(np.int64)
    return store, at + value_bytes


# Per stored sketch, what ``stored_columns`` reads of it.
STORED_COLUMNS: Final = np.dtype([("accuracy", "=f8"), ("min", "=f8"), ("max", "=f8"), ("zeros", "=u8"),
                                  ("offset", "=i8"), ("length", "=i8"), ("negative", "=i8"), ("start", "=i8")])


def stored_columns(blobs: Sequence[bytes]) -> tuple[npt.NDArray[Any], npt.NDArray[np.int64]]:
    """Many stored sketches (either stored form, or the quick one) read at once (``alerting.columns``): per blob a
    ``STORED_COLUMNS`` record (the accuracy, extremes and zero count, the positive store's offset and length, the
    negative store's length, and where the positive counts start in the second array), and every positive
    store's counts, one after another, as ``DDSketch.from_bytes`` decodes them (empty stores: offset 0). Raises
    ``SketchError`` for a blob ``from_bytes`` would refuse."""
    if _codec is not None:
        try:
            meta, counts = _codec.decode_many(blobs, _inflated)
        except ValueError as exc:
            raise SketchError(str(exc)) from None
        return np.frombuffer(meta, STORED_COLUMNS), np.frombuffer(counts, np.int64)
    return _stored_columns_py(blobs)


def _stored_columns_py(blobs: Sequence[bytes]) -> tuple[npt.NDArray[Any], npt.NDArray[np.int64]]:
    """``stored_columns`` in numpy, a sketch at a time."""
    meta = np.zeros(len(blobs), STORED_COLUMNS)
    runs = []
    start = 0
    for i, blob in enumerate(blobs):
        accuracy, mn, mx, zeros, pos, neg = _body(blob)
        meta[i] = (accuracy, mn, mx, zeros, pos.offset, pos.counts.size, neg.counts.size, start)
        runs.append(pos.counts)
        start += pos.counts.size
    return meta, np.concatenate(runs) if runs else np.zeros(0, np.int64)


def _from_stored(blob: bytes) -> DDSketch:
    """The sketch ``blob`` (the stored or the quick form) holds, decoded when first read
    (``DDSketch.__getattr__``); ``to_bytes`` gives a stored form back as it came."""
    sketch = DDSketch.__new__(DDSketch)
    sketch._blob = blob
    sketch._stored = None
    return sketch


def representatives(gamma: float, keys: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
    """The buckets' representative values ``2 gamma^k / (1 + gamma)`` (positive store; the negative
    store's are these negated, which is exact)."""
    return 2.0 * np.power(gamma, keys) / (1.0 + gamma)


def interpolated(q: Any, n: Any, at_ranks: Callable[[Any, Any], tuple[Any, Any]], mn: Any, mx: Any) -> Any:
    """The read-out rule (see the module docstring) in float64 numpy steps, for one sketch and several
    quantiles (``DDSketch.quantiles``) or for one quantile and many sketches given by their counts ``n``,
    extremes ``mn``/``mx`` and rank estimates, which broadcast (``alerting.spans``: the same figures as
    merging each span's sketches). ``at_ranks(lo, hi)``: the estimates at those 0-based ranks."""
    h = q * (n - 1)
    lo = np.floor(h).astype(np.int64)
    hi = np.minimum(lo + 1, n - 1)
    v_lo, v_hi = at_ranks(lo, hi)
    # The extreme ranks are known exactly.
    v_lo = np.where(lo == 0, mn, np.where(lo == n - 1, mx, v_lo))
    v_hi = np.where(hi == 0, mn, np.where(hi == n - 1, mx, v_hi))
    res = v_lo + (h - lo) * (v_hi - v_lo)
    return np.clip(res, mn, mx)


def sketch_of(values: npt.ArrayLike, relative_accuracy: float = RELATIVE_ACCURACY) -> DDSketch:
    s = DDSketch(relative_accuracy)
    s.add_many(values)
    return s
