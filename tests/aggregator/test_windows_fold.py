"""``WindowAccumulator._fold`` without a sort (few (series, window) keys: ``bincount`` and ``ufunc.at`` per key)
gives exactly what the sorted segments give (the previous implementation, still taken past ``_DIRECT_KEYS``):
every field of every aggregate bit for bit (sums in the same order, the sign of a zero min / max), the
sketch bins, the counters in order, the aggregates' order, over several folds into the same aggregates, with
gauges' zeros and negatives (the sketch's general path), values below the sketch's smallest bucket (NaN: the parsers never produce one, the sketches refuse it)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from aggregator import windows
from aggregator.model import SeriesKey, make_tags
from aggregator.windows import WindowAccumulator
from tests.aggregator.test_windows_columns import agg_state, bits

T0 = 1_764_410_400.0  # a minute boundary
SERIES = 3_000  # more (series, window) keys than values: the sorted path, unless _DIRECT_KEYS allows
FLAGS = {"request": (), "db": (), "cache": ("hits", "misses"), "task": ("failures", "retries"),
         "metric:x": ("count_samples",)}


def batch(rng: np.random.Generator, family: str, n: int, mix: str) -> tuple[Any, ...]:
    series = int(rng.integers(1, 6)) if mix != "many" else SERIES
    sid = rng.integers(0, series, n).astype(np.int64)
    sid[0] = SERIES - 1  # the key range is the same in both ways
    ts = T0 + rng.uniform(-30.0, 400.0, n)
    if mix == "zeros":  # zeros of both signs in the same segments, negatives, tiny values
        values = rng.choice(np.array([0.0, -0.0, 3.0, 3.0, -1.5, 1e-300, 750.0]), n)
    elif mix == "ties":  # few distinct durations, over the Apdex and slow-query thresholds
        values = rng.choice(np.array([0.25, 99.5, 100.0, 100.5, 500.0, 2000.0, 2000.5]), n)
    else:
        values = rng.lognormal(3.0, 2.0, n)
    errors = rng.random(n) < 0.2
    flags = {name: rng.random(n) < 0.5 for name in FLAGS[family]}
    return sid, ts, values, errors, flags


def fold_all(family: str, batches: list[tuple[Any, ...]], direct: bool,
             monkeypatch: pytest.MonkeyPatch) -> tuple[list[Any], int]:
    monkeypatch.setattr(windows, "_DIRECT_KEYS", 1 << 40 if direct else -1)
    calls = [0]
    extremes = windows._key_extremes

    def spy(*args: Any) -> Any:
        calls[0] += 1
        return extremes(*args)

    monkeypatch.setattr(windows, "_key_extremes", spy)
    acc = fold_into(WindowAccumulator(60, 100.0, 50.0), family, batches)
    out = [agg_state(a) for a in acc.take()]
    return [*out, bits(acc.min_ts or 0.0), bits(acc.max_ts or 0.0)], calls[0]


def fold_into(acc: WindowAccumulator, family: str, batches: list[tuple[Any, ...]]) -> WindowAccumulator:
    """``acc`` with the batches folded in, one after the other (copies: a fold may write into its arrays)."""
    series = [SeriesKey(family, make_tags(route=f"r{i}")) for i in range(SERIES)]
    for sid, ts, values, errors, flags in batches:
        acc._fold(family, series, sid.copy(), ts.copy(), values.copy(), errors.copy(),
                  {k: f.copy() for k, f in flags.items()})
    return acc


@pytest.mark.parametrize("family", list(FLAGS))
@pytest.mark.parametrize("mix", ["plain", "zeros", "ties", "many"])
def test_direct_fold_is_the_sorted_fold(family: str, mix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(hash((family, mix)) & 0xFFFF)
    for _ in range(4):
        batches = [batch(rng, family, int(rng.integers(1, 2_000)), mix) for _ in range(3)]
        with np.errstate(invalid="ignore"):
            sorted_, took_sorted = fold_all(family, batches, False, monkeypatch)
            direct, took_direct = fold_all(family, batches, True, monkeypatch)
        assert took_sorted == 0 and took_direct > 0  # each way taken
        assert direct == sorted_


def test_direct_fold_zero_signs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Long segments of zeros of both signs (where numpy's SIMD reduceat and a running min may disagree)."""
    rng = np.random.default_rng(7)
    for i in range(200):
        n = int(rng.integers(50, 600))
        sid = np.zeros(n, dtype=np.int64)
        sid[0] = SERIES - 1
        values = rng.choice(np.array([0.0, -0.0, 2.0 if i % 2 else -2.0]), n)  # the min's sign, the max's
        b: list[tuple[Any, ...]] = [(sid, np.full(n, T0 + 1.0), values, np.zeros(n, dtype=np.bool_), {})]
        assert fold_all("db", b, True, monkeypatch)[0] == fold_all("db", b, False, monkeypatch)[0]


def test_key_extremes_integers() -> None:
    key = np.array([3, 0, 3, 3, 0], dtype=np.int64)
    x = np.array([5, -2, 7, 1, 4], dtype=np.int64)
    lo, hi = windows._key_extremes(x, key, 5, np.array([0, 3]))
    assert lo.tolist() == [-2, 1] and hi.tolist() == [4, 7] and lo.dtype == np.int64


@pytest.mark.parametrize("width", [1, 7, 60, 3600, 86_400])
def test_window_index_is_the_floor(width: int) -> None:
    """Both ways of ``_window_index`` (integers for times from 0 on, else the float quotient checked) give
    ``floor_divide``'s window: at, just below and just above each boundary, fractions, near 0 and far."""
    rng = np.random.default_rng(width)
    edges = (rng.integers(0, 40_000_000_000 // width, 2_000) * width).astype(np.float64)
    ts = np.concatenate([edges, np.nextafter(edges, -np.inf), np.nextafter(edges, np.inf), edges + 0.5,
                         rng.uniform(0.0, 4e9, 2_000), rng.uniform(0.0, 3.0 * width, 500), [0.0, 2.0 ** 51]])
    ts = ts[ts >= 0.0]
    ref = np.floor_divide(ts, width).astype(np.int64)
    lo, hi = float(ts.min()), float(ts.max())
    got = windows._window_index(ts, width, lo, hi)  # the integer way
    assert got.dtype == np.int64 and np.array_equal(got, ref)
    shifted = np.concatenate([ts, [-1.5]])  # a time before 0: the float quotient
    got = windows._window_index(shifted, width, -1.5, hi)
    assert np.array_equal(got, np.concatenate([ref, np.floor_divide([-1.5], width).astype(np.int64)]))
