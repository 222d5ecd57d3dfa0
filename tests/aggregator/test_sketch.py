"""The quantile sketch against numpy's exact interpolated quantiles (the design's read-out rule)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from aggregator.sketch import MAX_BUCKETS, DDSketch, SketchError, sketch_of

QS = (0.0, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999, 1.0)
TOL = 0.01 + 1e-12


def _rel_err(sketch: DDSketch, values: np.ndarray) -> float:
    est = np.array(sketch.quantiles(QS))
    exact = np.quantile(values, QS)  # numpy's default: linear interpolation (type 7)
    return float(np.max(np.abs(est - exact) / np.maximum(np.abs(exact), 1e-300)))


def _distributions(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    return {
        "lognormal": rng.lognormal(3.0, 1.5, n),
        "pareto": (rng.pareto(1.1, n) + 1.0) * 5.0,
        "pareto_extreme": (rng.pareto(0.5, n) + 1.0) * 0.3,
        "exponential": rng.exponential(40.0, n),
        "uniform": rng.uniform(0.5, 2000.0, n),
        "constant": np.full(n, 7.25),
        "bimodal": np.concatenate([rng.normal(10, 1, n - n // 3).clip(0.01), rng.normal(2500, 80, n // 3)]),
        "tiny": rng.uniform(1e-6, 1e-3, n),
    }


@pytest.mark.parametrize("n", [*range(1, 21), 37, 100, 999, 10_000, 200_000])
def test_quantiles_within_one_percent_of_numpy(n: int) -> None:
    """Every quantile of every distribution, small n included, is within 1% of numpy's interpolated one."""
    rng = np.random.default_rng(n)
    for name, values in _distributions(rng, n).items():
        err = _rel_err(sketch_of(values), values)
        assert err <= TOL, f"{name} n={n}: {err:.5f}"


def test_many_small_heavy_tailed_series() -> None:
    """Thousands of random small heavy-tailed series (where a one-rank read-out fails) stay within 1%."""
    rng = np.random.default_rng(7)
    worst = 0.0
    for _ in range(3000):
        n = int(rng.integers(1, 40))
        values = (rng.pareto(rng.uniform(0.3, 2.0), n) + 1.0) * rng.uniform(0.1, 100)
        worst = max(worst, _rel_err(sketch_of(values), values))
    assert worst <= TOL


def test_merge_equals_one_sketch_of_everything() -> None:
    """Merged sketches (any split, any order) give the same buckets and the same 1% guarantee."""
    rng = np.random.default_rng(3)
    values = rng.lognormal(2.0, 2.0, 50_000)
    parts = np.array_split(values, 17)
    merged = DDSketch()
    for p in reversed(parts):
        merged.merge(sketch_of(p))
    whole = sketch_of(values)
    assert merged.quantiles(QS) == whole.quantiles(QS)
    assert merged.count == whole.count == values.size
    assert _rel_err(merged, values) <= TOL


def test_merge_after_serialisation_round_trip() -> None:
    """Sketches restored from bytes (the store's form) and from pickles (the workers' form) merge exactly."""
    rng = np.random.default_rng(11)
    a, b = rng.exponential(10, 3000), (rng.pareto(1.2, 500) + 1) * 30
    sa = DDSketch.from_bytes(sketch_of(a).to_bytes())
    sb = pickle.loads(pickle.dumps(sketch_of(b)))
    sa.merge(sb)
    both = np.concatenate([a, b])
    assert sa.count == both.size
    assert sa.min == both.min() and sa.max == both.max()
    assert _rel_err(sa, both) <= TOL


def test_zero_and_negative_values() -> None:
    """Gauges may be zero or negative: counts stay exact and same-signed quantiles within 1%."""
    rng = np.random.default_rng(5)
    neg = -rng.lognormal(1.0, 1.0, 4000)
    s = sketch_of(neg)
    assert _rel_err(s, neg) <= TOL
    mixed = np.concatenate([neg, np.zeros(500), rng.lognormal(1.0, 1.0, 4000)])
    s = sketch_of(mixed)
    assert s.count == mixed.size and s.zero_count == 500
    assert s.quantile(0.5) == pytest.approx(np.quantile(mixed, 0.5), abs=1e-9)  # median is a zero
    for q in (0.05, 0.25, 0.75, 0.95):
        exact = np.quantile(mixed, q)
        assert abs(s.quantile(q) - exact) <= 0.01 * abs(exact) + 1e-12
    assert s.quantile(0) == mixed.min() and s.quantile(1) == mixed.max()


def test_compact_serialisation() -> None:
    """A million lognormal durations serialise in under 4 kB; a typical window in under 1 kB."""
    rng = np.random.default_rng(2)
    assert len(sketch_of(rng.lognormal(4, 1.2, 1_000_000)).to_bytes()) < 4096
    assert len(sketch_of(rng.lognormal(4, 0.8, 2000)).to_bytes()) < 1024
    assert DDSketch.from_bytes(DDSketch().to_bytes()).count == 0


def test_empty_and_invalid() -> None:
    """An empty sketch has no quantile; NaN, infinities and corrupt bytes are refused with clear errors."""
    s = DDSketch()
    assert s.quantile(0.5) is None
    with pytest.raises(ValueError):
        s.add(float("nan"))
    with pytest.raises(ValueError):
        s.add_many([1.0, float("inf")])
    with pytest.raises(SketchError):
        DDSketch.from_bytes(b"not a sketch")
    with pytest.raises(SketchError):
        s.merge(DDSketch(0.02))


def test_bucket_count_is_bounded() -> None:
    """An absurd dynamic range collapses the lowest buckets; the high quantiles keep their accuracy."""
    values = np.geomspace(1e-250, 1e250, 10_000)
    s = sketch_of(values)
    assert s.pos.counts.size <= MAX_BUCKETS
    assert s.count == values.size
    for q in (0.95, 0.99, 1.0):  # the top 1e35 of the range keeps its buckets
        exact = np.quantile(values, q)
        assert abs(s.quantile(q) - exact) <= 0.01 * exact
