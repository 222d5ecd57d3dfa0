"""The sketch's stored form (form 2, ``aggregator/_sketchcodec.c``): the C codec and its numpy twin write the same
bytes and read them back to the same sketch (same counts, so the same quantiles), for any sketch; form 1 (zlib,
what stores hold from before) reads as it always did; truncated, corrupt or not-the-one-way-to-write-it bytes are
refused with ``SketchError`` by both, never misread."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import zlib
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aggregator import sketch as sk
from aggregator.sketch import MAX_BUCKETS, DDSketch, SketchError, sketch_of

QS = (0.0, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999, 1.0)


@contextmanager
def _numpy_twin() -> Iterator[None]:
    """``aggregator.sketch`` without its C codec, as when it is not built (without it, the tests below read and
    write with the twin alone)."""
    codec = sk._codec
    sk._codec = None
    try:
        yield
    finally:
        sk._codec = codec


def _state(s: DDSketch) -> tuple[object, ...]:
    """What a sketch holds, its stores trimmed as every form writes them (bit for bit: reprs of the floats)."""
    def trimmed(store: sk._Store) -> tuple[int, list[int]]:
        nz = np.flatnonzero(store.counts)
        if not nz.size:
            return 0, []
        return store.offset + int(nz[0]), store.counts[nz[0]: nz[-1] + 1].tolist()

    return (repr(s.relative_accuracy), repr(s.min), repr(s.max), s.zero_count, trimmed(s.pos), trimmed(s.neg))


def _both_ways(s: DDSketch) -> bytes:
    """``s``'s stored form, checked to be what C and numpy write from the sketch and from its quick form, and to
    read back, by either, to the same sketch: the same state and quantiles, and as many counts per
    ``stored_columns``. (A negative int64 count, which no run makes, is one the quick form cannot hold: form 1
    narrows by the largest count. The stored form holds it.)"""
    want = s.to_bytes()
    quick = s.to_bytes(compress=False)
    faithful = all((st.counts >= 0).all() for st in (s.pos, s.neg))
    assert want[:1] == b"\x02"
    assert sk._from_stored(quick).to_bytes() == want or not faithful
    with _numpy_twin():
        assert s.to_bytes() == want
        assert sk._from_stored(quick).to_bytes() == sk._from_stored(quick).copy().to_bytes()
        assert sk._from_stored(quick).to_bytes() == want or not faithful
        py = DDSketch.from_bytes(want)
        py_columns = sk.stored_columns([want, quick])
    native = DDSketch.from_bytes(want)
    assert _state(native) == _state(py) == _state(s)
    for store in (native.pos, native.neg, py.pos, py.neg):
        assert store.counts.dtype == np.int64 and (not store.counts.size or store.counts.flags.writeable)
    pos, neg = _state(s)[4:]
    same_counts = _sketch(s.relative_accuracy, s.min, s.max, s.zero_count, pos, neg)  # (stores trimmed)
    assert _quantiles(native) == _quantiles(py) == _quantiles(same_counts)
    if faithful:  # the quantiles form 1 gave
        assert _quantiles(native) == _quantiles(DDSketch.from_bytes(quick))
    assert native.to_bytes(compress=False) == py.to_bytes(compress=False)
    columns = sk.stored_columns([want, quick])
    assert columns[0].tobytes() == py_columns[0].tobytes() and columns[1].tolist() == py_columns[1].tolist()
    meta = columns[0][0]
    assert (meta["length"], meta["negative"], meta["zeros"]) == (len(pos[1]), len(neg[1]), s.zero_count)
    assert columns[1][: meta["length"]].tolist() == pos[1]
    return want


def _quantiles(s: DDSketch) -> str:
    """The sketch's quantiles (as text: NaN extremes read NaN), or the error reading them raises (counts past
    2**63 wrap negative)."""
    try:
        with np.errstate(all="ignore"):
            return repr(s.quantiles(QS))
    except Exception as exc:  # the same error both ways
        return repr(exc)


def _sketch(accuracy: float, mn: float, mx: float, zeros: int, pos: tuple[int, list[int]],
            neg: tuple[int, list[int]]) -> DDSketch:
    s = DDSketch(accuracy)
    s.min, s.max, s.zero_count = mn, mx, zeros
    for store, (offset, counts) in ((s.pos, pos), (s.neg, neg)):
        if counts:
            store.offset, store.counts = offset, np.array([c % 2**64 for c in counts], dtype=np.uint64).view(np.int64)
    return s


_COUNT = st.one_of(st.just(0), st.integers(1, 5), st.integers(0, 2**16), st.integers(0, 2**64 - 1))
_STORE = st.tuples(st.integers(-(2**31) + MAX_BUCKETS, 2**31 - MAX_BUCKETS),
                   st.lists(_COUNT, max_size=70) | st.lists(st.sampled_from([0, 0, 0, 1, 2, 3]), max_size=600))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(accuracy=st.sampled_from([0.01, 0.02, 0.005, 0.25]), mn=st.floats(), mx=st.floats(),
       zeros=st.integers(0, 2**64 - 1) | st.integers(0, 3), pos=_STORE, neg=_STORE)
def test_any_sketch_round_trips_the_same_both_ways(accuracy: float, mn: float, mx: float, zeros: int,
                                                   pos: tuple[int, list[int]], neg: tuple[int, list[int]]) -> None:
    """Any extremes (NaN, infinities, -0.0), zero count and counts (0, small, up to 2**64 - 1: a count past 2**63
    is the negative int64 form 1's reader makes of it), both signs, any accuracy."""
    _both_ways(_sketch(accuracy, mn, mx, zeros, pos, neg))


@settings(max_examples=200, deadline=None)
@given(stores=st.lists(st.tuples(st.integers(-(2**31), 2**31 - MAX_BUCKETS), st.integers(0, 3),
                                 st.lists(st.integers(0, 2**64 - 1), max_size=40)), min_size=2, max_size=2),
       zeros=st.integers(0, 2**64 - 1), accuracy=st.sampled_from([0.01, 0.03]))
def test_quick_forms_of_any_count_width_encode_alike(stores: list[tuple[int, int, list[int]]], zeros: int,
                                                     accuracy: float) -> None:
    """A quick form as form 1 can write it (each store's counts in any of its widths, uint64 ones past 2**63 that
    its reader wraps negative; edges not trimmed), encoded from its bytes by C and by numpy: the bytes of the
    sketch it decodes to, which reads back to that sketch."""
    parts = [b"\0", sk._HEADER.pack(sk._FORMAT_VERSION, 0, accuracy, 1.0, 9.0, zeros)]
    for offset, code, counts in stores:
        width = sk._DTYPE_OBJECTS[code]
        narrowed = [c % (1 << (8 * width.itemsize)) for c in counts]
        parts += [sk._STORE_HEADER.pack(offset, len(narrowed), code), np.array(narrowed, width).tobytes()]
    quick = b"".join(parts)
    decoded = DDSketch.from_bytes(quick)
    want = sk._from_stored(quick).to_bytes()
    with _numpy_twin():
        assert sk._from_stored(quick).to_bytes() == want == decoded.to_bytes()
    assert want == decoded.to_bytes()
    assert _state(DDSketch.from_bytes(want)) == _state(decoded)
    assert _keyed(*sk.stored_columns([quick])) == _keyed(*sk.stored_columns([want]))


def _keyed(meta: Any, counts: Any) -> list[dict[int, int]]:
    """Per sketch ``stored_columns`` read: its positive store's non-zero counts by bucket key."""
    return [{int(m["offset"]) + i: c for i, c in enumerate(counts[m["start"]: m["start"] + m["length"]].tolist())
             if c} for m in meta]


def test_real_sketches_round_trip_the_same_both_ways() -> None:
    """Sketches as runs make them: empty, one value, windows of lognormal durations, negative values and zeros,
    counts of every width, a sketch whose lowest buckets collapsed (``MAX_BUCKETS``), pre-binned counts."""
    rng = np.random.default_rng(41)
    cases = [DDSketch(), sketch_of([3.5]), sketch_of([0.0, 0.0]), sketch_of([-2.0]), sketch_of([1e-320, 5.0])]
    cases += [sketch_of(rng.lognormal(4, 1.2, n)) for n in (2, 50, 300, 2000, 100_000)]
    cases += [sketch_of(np.concatenate([rng.normal(0, 5, 290), np.zeros(10)])),
              sketch_of(np.repeat(rng.lognormal(2, 1, 50), 70_000)),  # past uint16
              sketch_of(rng.lognormal(0, 60, 2000)),  # collapsed
              DDSketch.of_bucket_counts(-40, np.array([5, 0, 0, 2**40, 0, 1]), 0.5, 0.7)]
    collapsed = cases[-2]
    assert collapsed.pos.counts.size == MAX_BUCKETS
    for s in cases:
        _both_ways(s)


def test_sizes_of_window_sketches() -> None:
    """Form 2 is no larger than form 1 (zlib of the quick form's body) on sketches of lognormal durations, and
    within the sizes the module docstring gives."""
    rng = np.random.default_rng(3)
    for n, most in ((50, 80), (300, 150), (2000, 280), (1_000_000, 1000)):
        sketches = [sketch_of(rng.lognormal(4, 1.2, n)) for _ in range(5 if n > 10_000 else 41)]
        size = np.median([len(s.to_bytes()) for s in sketches])
        form_1 = np.median([len(zlib.compress(s.to_bytes(compress=False)[1:], 1)) for s in sketches])
        assert size <= most and size <= form_1, (n, size, form_1)


# --- form 1: what stores hold from before form 2, read forever --------------------------------------------------

# Written by the code before form 2 (93d8d48): sketch_of([1.5, 2.5, 2.5, 1000.0, -3.0, 0.0, 0.0]).to_bytes() and a
# 2% sketch of 70,000 x 3.0, 5 x 7.0 and 65,539 x 7.5 (uint32 counts), and DDSketch().to_bytes().
_FORM1 = [
    ("78016364a81659e7feb0aac59e010c380e8029877e0726880083289076630412208c15c05462951c15440901467320171c928c00664006"
     "16", ("0.01", "-3.0", "1000.0", 2, (21, {0: 1, 25: 2, 325: 1}, 326), (55, {0: 1}, 1)),
     [-3.0, 0.0, 1.5067624181792343, 401.49056284790055, 1000.0]),
    ("78016364a81659e7feb06a8a3d0318703840683928cdc0200314900062a6024146881c154956a859cc0c48660300af0c051b",
     ("0.02", "3.0", "7.5", 0, (28, {0: 70000, 21: 5, 23: 65539}, 24), (0, {}, 0)),
     [3.0, 3.004002487085184, 3.004002487085184, 7.5, 7.5]),
    ("78016364a81659e7feb0aac59e010c3ed443e9ff101a1b090011610702", ("0.01", "inf", "-inf", 0, (0, {}, 0), (0, {}, 0)),
     None),
]


def _dense(offset: int, nonzero: dict[int, int], n: int) -> tuple[int, list[int]]:
    counts = [0] * n
    for i, c in nonzero.items():
        counts[i] = c
    return offset, counts


@pytest.mark.parametrize("native", [True, False])
def test_form_1_bytes_read_as_they_always_did(native: bool) -> None:
    """Stored sketches of form 1 (zlib) decode to the sketches they held, give their quantiles, read in bulk
    (``stored_columns``), are written back unchanged while unchanged, and in form 2 once changed."""
    with _numpy_twin() if not native else nullcontext():
        for hexed, (acc, mn, mx, zeros, pos, neg), quantiles in _FORM1:
            blob = bytes.fromhex(hexed)
            s = DDSketch.from_bytes(blob)
            want = (acc, mn, mx, zeros, _dense(pos[0], pos[1], pos[2]) if pos[2] else (0, []),
                    _dense(neg[0], neg[1], neg[2]) if neg[2] else (0, []))
            assert _state(s) == want
            assert s.quantiles([0, 0.25, 0.5, 0.9, 1]) == (quantiles or [None] * 5)
            assert sk._from_stored(blob).to_bytes() == blob  # the stored form it came with, undecoded
            assert _state(DDSketch.from_bytes(DDSketch.from_bytes(blob).to_bytes())) == want  # decoded: form 2
            meta, counts = sk.stored_columns([blob])
            assert (meta["offset"][0], counts.tolist()) == want[4] and meta["negative"][0] == len(want[5][1])
            s.add(2.0)
            again = s.to_bytes()
            assert again[:1] == b"\x02" and _state(DDSketch.from_bytes(again)) == _state(s)


# --- refused bytes --------------------------------------------------------------------------------------------


def _sample_blobs() -> list[bytes]:
    rng = np.random.default_rng(5)
    sketches = [DDSketch(), sketch_of([3.5]), sketch_of(rng.lognormal(4, 1.2, 300)),
                sketch_of(np.concatenate([rng.normal(0, 5, 40), np.zeros(3)])),
                _sketch(0.02, 1.0, 2.0, 2**64 - 1, (5, [2**64 - 2, 0, 1]), (-7, [0, 3, 0, 0, 9]))]
    return [s.to_bytes() for s in sketches]


def _refused(data: bytes) -> None:
    """Both codecs refuse ``data``, alone and among valid blobs in bulk."""
    good = _sample_blobs()[2]
    for twin in (False, True):
        with _numpy_twin() if twin else nullcontext():
            with pytest.raises(SketchError):
                DDSketch.from_bytes(data).pos  # noqa: B018
            with pytest.raises(SketchError):
                sk.stored_columns([good, data, good])


def test_every_truncation_and_every_flipped_bit_is_refused() -> None:
    """Every prefix of a stored sketch, and the sketch with any one bit flipped (its CRC-32 catches every
    single-bit error) or a byte added at either end."""
    for blob in _sample_blobs():
        for cut in range(1, len(blob)):
            _refused(blob[:cut])
        for bit in range(8, 8 * len(blob)):  # (the first byte: a flip there reads as another form)
            flipped = bytearray(blob)
            flipped[bit // 8] ^= 1 << (bit % 8)
            _refused(bytes(flipped))
        _refused(blob + b"\0")
        _refused(b"\x02" + blob)
    _refused(b"")
    _refused(b"\x02")
    _refused(b"\x03" + _sample_blobs()[1][1:])


def _sealed(body: bytes) -> bytes:
    """``body`` with its checksum: bytes that only the structure's checks can refuse."""
    return body + zlib.crc32(body).to_bytes(4, "little")


def _store(n: int, offset: int, width: int, bitmap: bytes, values: bytes) -> bytes:
    return sk._varint(n) + sk._varint(offset << 1 if offset >= 0 else (-offset << 1) - 1) + bytes((width,)) + \
        bitmap + values


HEAD = b"\x02\x00" + struct.pack("<dd", 1.0, 2.0)


@pytest.mark.parametrize("body", [
    pytest.param(HEAD + b"\x00\x00\x00\x00", id="bytes after the stores"),
    pytest.param(b"\x02\x02" + HEAD[2:] + b"\x00\x00\x00", id="unknown flag"),
    pytest.param(b"\x02\x01" + struct.pack("<d", 0.01) + HEAD[2:] + b"\x00\x00\x00", id="default accuracy written"),
    pytest.param(HEAD + b"\x80\x00\x00\x00", id="redundant varint byte"),
    pytest.param(HEAD + b"\xff" * 9 + b"\x02\x00\x00", id="varint past 64 bits"),
    pytest.param(HEAD + b"\x00" + _store(3, 5, 1, b"\x06", b"\x01") + b"\x00", id="first bucket empty"),
    pytest.param(HEAD + b"\x00" + _store(3, 5, 1, b"\x03", b"\x01") + b"\x00", id="last bucket empty"),
    pytest.param(HEAD + b"\x00" + _store(3, 5, 1, b"\x0d", b"\x01") + b"\x00", id="bitmap padding"),
    pytest.param(HEAD + b"\x00" + _store(2, 5, 1, b"\x03", b"\x05") + b"\x00", id="count padding"),
    pytest.param(HEAD + b"\x00" + _store(2, 5, 2, b"\x03", b"\x01") + b"\x00", id="counts wider than needed"),
    pytest.param(HEAD + b"\x00" + _store(1, 5, 65, b"\x01", b"\x01" * 9) + b"\x00", id="count wider than 64"),
    pytest.param(HEAD + b"\x00" + _store(1, 5, 64, b"\x01", b"\xff" * 8) + b"\x00", id="count of 2**64"),
    pytest.param(HEAD + b"\x00" + _store(1, 2**31, 0, b"\x01", b"") + b"\x00", id="key past int32"),
    pytest.param(HEAD + b"\x00" + _store(9, 5, 0, b"\x01", b""), id="bitmap truncated"),
])
def test_bytes_not_written_the_one_way_are_refused(body: bytes) -> None:
    """With a valid checksum, every way a form 2 body can differ from what the encoder writes is refused by both
    codecs (so decoding then encoding gives the bytes back)."""
    _refused(_sealed(body))


def test_the_hand_written_bodies_are_otherwise_valid() -> None:
    """The bodies above are each one change away from these, which both codecs read (the tests are not
    refusing something else)."""
    for body, pos in [(HEAD + b"\x00\x00\x00", (0, [])),
                      (HEAD + b"\x00" + _store(3, 5, 1, b"\x05", b"\x01") + b"\x00", (5, [2, 0, 1])),
                      (HEAD + b"\x00" + _store(1, 5, 64, b"\x01", b"\xfe" + b"\xff" * 7) + b"\x00", (5, [-1])),
                      (HEAD + b"\x00" + _store(1, 2**31 - 1, 0, b"\x01", b"") + b"\x00", (2**31 - 1, [1]))]:
        blob = _sealed(body)
        for twin in (False, True):
            with _numpy_twin() if twin else nullcontext():
                s = DDSketch.from_bytes(blob)
                assert _state(s)[4] == pos and s.to_bytes() == blob
                assert _sketch(0.01, 1.0, 2.0, 0, pos, (0, [])).to_bytes() == blob


@settings(max_examples=400, deadline=None)
@given(data=st.data())
def test_mutated_bytes_are_refused_or_read_alike(data: Any) -> None:
    """Random edits of a stored sketch with the checksum made valid again: both codecs refuse it, or both read the
    same sketch, which writes those very bytes back."""
    blob = bytearray(data.draw(st.sampled_from(_sample_blobs()))[:-4])
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(1, len(blob)))
        action = data.draw(st.sampled_from(["set", "insert", "delete"]))
        if action == "set" and at < len(blob):
            blob[at] = data.draw(st.integers(0, 255))
        elif action == "insert":
            blob[at:at] = bytes([data.draw(st.integers(0, 255))])
        elif at < len(blob):
            del blob[at]
    mutated = _sealed(bytes(blob))
    outcomes = []
    for twin in (False, True):
        with _numpy_twin() if twin else nullcontext():
            try:
                s = DDSketch.from_bytes(mutated)
                outcomes.append(_state(s))
                assert s.to_bytes() == mutated
                assert DDSketch.from_bytes(mutated).copy().to_bytes() == mutated
            except SketchError:
                outcomes.append(None)
    assert outcomes[0] == outcomes[1]


def test_encoding_refuses_what_form_1_could_not_hold() -> None:
    """A first bucket key past int32 and a zero count past 64 bits raise, as form 1's packing did."""
    for twin in (False, True):
        with _numpy_twin() if twin else nullcontext():
            with pytest.raises(OverflowError):
                _sketch(0.01, 1.0, 1.0, 0, (2**31, [1]), (0, [])).to_bytes()
            with pytest.raises(OverflowError):
                _sketch(0.01, 1.0, 1.0, 2**64, (0, []), (0, [])).to_bytes()
            with pytest.raises(OverflowError):
                _sketch(0.01, 1.0, 1.0, -1, (0, []), (0, [])).to_bytes()
            # an offset past int32 whose first non-zero bucket is within it is written (form 1 wrote it)
            s = _sketch(0.01, 1.0, 1.0, 0, (-(2**31) - 2, [0, 0, 7]), (0, []))
            assert _state(DDSketch.from_bytes(s.to_bytes()))[4] == (-(2**31), [7])


def test_without_the_extension_the_same_bytes() -> None:
    """``LOGAPM_NATIVE=0``: no C codec, and the numpy twin writes the bytes C writes."""
    code = ("import numpy as np; from aggregator import sketch as s; rng = np.random.default_rng(2); "
            "print(s._codec, s.sketch_of(rng.lognormal(4, 1.2, 500)).to_bytes().hex())")
    env = {**os.environ, "LOGAPM_NATIVE": "0"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    rng = np.random.default_rng(2)
    assert out.stdout.split() == ["None", sketch_of(rng.lognormal(4, 1.2, 500)).to_bytes().hex()]
