"""``merged_quick`` in C (``aggregator._sketchcodec.merge_quick``) against its Python path: the same bytes, the
same refusals, for sketches the accumulator makes and for hand-made quick forms at the edges."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from aggregator import sketch as sk
from aggregator.sketch import DDSketch, merged, merged_quick

pytestmark = pytest.mark.skipif(sk._merge_quick is None, reason="the C codec is not built")

_H = struct.Struct("<BBdddQ")
_S = struct.Struct("<iIB")
_CODES = (np.uint8, np.uint16, np.uint32, np.uint64)


def _quick(counts: list[int], offset: int, code: int, *, mn: float = 1.0, mx: float = 2.0, zeros: int = 0,
           accuracy: float = sk.RELATIVE_ACCURACY, version: int = 1, neg: bytes | None = None,
           tail: bytes = b"") -> bytes:
    body = np.array(counts, dtype=np.uint64).astype(_CODES[code]).tobytes()
    return b"".join((b"\0", _H.pack(version, 0, accuracy, mn, mx, zeros), _S.pack(offset, len(counts), code), body,
                     _S.pack(0, 0, 0) if neg is None else neg, tail))


def _both(blobs: list[bytes]) -> tuple[object, object]:
    c = sk._merge_quick(blobs)
    if c is NotImplemented:
        return "NotImplemented", None
    if c is not None:
        assert isinstance(c, bytes)
    return c, _python(blobs)


def _python(blobs: list[bytes]) -> bytes | None:
    """``merged_quick``'s bytes without the C routine (its fallback)."""
    kept, sk._merge_quick = sk._merge_quick, None
    try:
        py = merged_quick([sk._from_stored(b) for b in blobs])
    finally:
        sk._merge_quick = kept
    return None if py is None else py.to_bytes(compress=False)


def _sketch(values: np.ndarray) -> bytes:
    s = DDSketch()
    s.add_many(values)
    return s.to_bytes(compress=False)


def test_generated_durations_merge_alike() -> None:
    rng = np.random.default_rng(7)
    for trial in range(200):
        k = int(rng.integers(1, 6))
        blobs = [_sketch(rng.lognormal(rng.uniform(0, 6), rng.uniform(0.1, 2.5), int(rng.integers(1, 3000))))
                 for _ in range(k)]
        c, py = _both(blobs)
        assert c == py, trial
        # and as merged_quick is used: the same sketch as merging them one by one
        got = merged_quick([sk._from_stored(b) for b in blobs])
        assert got is not None
        want = merged([DDSketch.from_bytes(b) for b in blobs])
        assert got.to_bytes() == want.to_bytes()


def test_edges_match_python() -> None:
    cases: list[list[bytes]] = [
        [_quick([1], 0, 0)],  # one sketch, one bucket
        [_quick([5, 0, 7], -3, 0), _quick([1], 100, 0)],  # disjoint ranges, negative offset
        [_quick([255], 0, 0), _quick([1], 0, 0)],  # the sum widens the count type
        [_quick([65535, 1], 0, 1), _quick([1, 1], 0, 1)],
        [_quick([2**32 - 1], 5, 2), _quick([1], 5, 2)],
        [_quick([2**63 - 1], 5, 3), _quick([1], 5, 3)],  # int64 wraps to a negative peak, as numpy's sum does
        [_quick([2**63], 5, 3), _quick([2**63], 5, 3)],  # wraps to zero: trimmed to an empty store
        [_quick([1], 0, 0, mn=float("nan"), mx=float("nan")), _quick([1], 0, 0, mn=0.5, mx=9.0)],
        [_quick([1], 0, 0, mn=0.5, mx=9.0), _quick([1], 0, 0, mn=float("nan"), mx=float("nan"))],
        [_quick([1], 0, 0, mn=0.0, mx=-0.0), _quick([1], 0, 0, mn=-0.0, mx=0.0)],  # ties keep the first
        [_quick([1], 0, 0, zeros=2**64 - 1), _quick([1], 0, 0, zeros=1)],  # Python's struct refuses: deferred
        [_quick([1], 0, 0, zeros=3), _quick([1], 0, 0, zeros=4)],
        [_quick([1], 2**31 - 1, 0), _quick([1], 2**31 - 1, 0)],
        [_quick([1], 0, 0), _quick([1], 4095, 0)],  # 4,096 buckets: taken
        [_quick([1], 0, 0), _quick([1], 4096, 0)],  # 4,097: declined
        [_quick([1], 0, 0), _quick([1], 0, 0, accuracy=0.02)],  # accuracies differ
        [_quick([1], 0, 0, accuracy=float("nan"))],
        [_quick([1], 0, 0, accuracy=1.0)],
        [_quick([1], 0, 0, version=2)],
        [_quick([], 0, 0)],  # an empty positive store
        [_quick([1], 0, 0), _quick([1], 0, 0, neg=_S.pack(1, 1, 0) + b"\1")],  # negative buckets
        [_quick([1], 0, 0, tail=b"x")],  # bytes after the form
        [_quick([1, 2, 3], 0, 0)[:-10]],  # truncated
        [b"\0"], [b"\1" + _quick([1], 0, 0)[1:]],
    ]
    declined = []
    for i, blobs in enumerate(cases):
        c, py = _both(blobs)
        if c == "NotImplemented":
            declined.append(i)  # merged_quick then takes the Python path, whatever it gives
            continue
        assert c == py, blobs
    # C takes every other case itself: a routine that declined them all would otherwise pass
    assert declined == [10], declined


def test_deferred_cases_take_the_python_path() -> None:
    big = [_quick([1], 0, 0, zeros=2**64 - 1), _quick([1], 0, 0, zeros=1)]
    assert sk._merge_quick(big) is NotImplemented
    with pytest.raises(struct.error):
        merged_quick([sk._from_stored(b) for b in big])
    past = [_quick([0, 1], 2**31 - 1, 0), _quick([0, 1], 2**31 - 1, 0)]  # the sum's first bucket past int32
    assert sk._merge_quick(past) is NotImplemented
    with pytest.raises(struct.error):
        merged_quick([sk._from_stored(b) for b in past])
    edge = [_quick([1], 2**31 - 1, 0), _quick([0, 1], 2**31 - 2, 0)]
    assert sk._merge_quick(edge) == _python(edge)
