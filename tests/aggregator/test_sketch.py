"""The quantile sketch against numpy's exact interpolated quantiles (the design's read-out rule)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from aggregator import sketch as sketch_module
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
        exact, est = np.quantile(values, q), s.quantile(q)
        assert est is not None and abs(est - exact) <= 0.01 * exact


def test_every_way_to_fill_a_sketch_gives_the_same_bytes() -> None:
    """Pre-binned counts into a new sketch (the accumulators' path), values one by one, merges into an empty
    sketch, a pickle, the stored form, and stores with empty edge buckets all serialise to the same bytes
    as one ``add_many`` of the values; the quick form (``compress=False``) decodes to them too."""
    rng = np.random.default_rng(13)
    for n, values in [(1, np.array([3.5])), (50, rng.lognormal(2, 1, 50)), (400, -rng.pareto(0.7, 400)),
                      (300, np.concatenate([rng.normal(0, 5, 290), np.zeros(10)])),
                      (2000, rng.lognormal(0, 60, 2000))]:  # past MAX_BUCKETS: the lowest ones collapse
        whole = sketch_of(values).to_bytes()
        binned = DDSketch()
        pos = values[values > binned.min_indexable]
        if pos.size == values.size:
            keys = binned.key_of(pos)
            lo = int(keys.min())
            counts = np.bincount(keys - lo)
            binned.add_bucket_counts(lo, counts, float(pos.min()), float(pos.max()))
            made = DDSketch.of_bucket_counts(lo, counts.copy(), float(pos.min()), float(pos.max()))
            assert binned.to_bytes() == made.to_bytes() == whole, n
            made.add_bucket_counts(lo, counts, float(pos.min()), float(pos.max()), adopt=True)  # adds, no adopting
            binned.add_bucket_counts(lo, counts, float(pos.min()), float(pos.max()))
            assert made.to_bytes() == binned.to_bytes() and made.count == 2 * n
        one_by_one = DDSketch()
        for v in values:
            one_by_one.add(float(v))
        merged = DDSketch()
        merged.merge(DDSketch())
        merged.merge(sketch_of(values))
        merged.merge(DDSketch())
        restored = [pickle.loads(pickle.dumps(merged)), DDSketch.from_bytes(merged.to_bytes()),
                    DDSketch.from_bytes(merged.to_bytes(compress=False))]
        assert {s.to_bytes() for s in (one_by_one, merged, *restored)} == {whole}, n
        assert restored[0].quantiles(QS) == sketch_of(values).quantiles(QS)
    edges = sketch_of([1.0, 2.0, 1000.0])
    edges.pos._extend(edges.pos.offset - 5, edges.pos.offset + edges.pos.counts.size + 5)  # empty edges
    assert edges.to_bytes() == sketch_of([1.0, 2.0, 1000.0]).to_bytes()
    assert DDSketch.of_bucket_counts(0, np.zeros(0, dtype=np.int64), 1.0, 1.0).to_bytes() == DDSketch().to_bytes()
    empty = DDSketch()
    assert empty.pos.counts is empty.neg.counts and not empty.pos.counts.flags.writeable
    empty.add(-1.0)
    assert empty.count == 1 and DDSketch().count == 0  # the shared empty counts were replaced, not written


def test_an_unpickled_sketch_keeps_its_stored_form_until_it_changes() -> None:
    """A sketch pickles in the quick form (one read from the store, as its stored bytes) and is decoded only when
    read: written, it gives the stored bytes of the original (a stored one undecoded); read, merged, added to or
    copied, it is the sketch it was, the same bytes as the same steps on the original."""
    rng = np.random.default_rng(29)
    a, b = sketch_of(rng.lognormal(2, 1, 500)), sketch_of(np.concatenate([rng.normal(0, 5, 90), np.zeros(10)]))
    for original in (a, b, DDSketch()):
        stored = original.to_bytes()
        assert pickle.dumps(original).count(original.to_bytes(compress=False))  # the quick form crosses
        # a sketch still holding stored bytes (read lazily) passes them on as they are, undecoded
        assert pickle.loads(pickle.dumps(sketch_module._from_stored(stored)))._blob == stored
        sent = pickle.loads(pickle.dumps(original))
        assert sent.to_bytes() == stored and sent.to_bytes(compress=False) == original.to_bytes(compress=False)
        copied = pickle.loads(pickle.dumps(original)).copy()
        assert copied.to_bytes() == stored and copied.quantiles(QS) == original.quantiles(QS)
        assert pickle.loads(pickle.dumps(original)).count == original.count
    merged = pickle.loads(pickle.dumps(a))
    merged.merge(pickle.loads(pickle.dumps(b)))
    want = a.copy()
    want.merge(b)
    assert merged.to_bytes() == want.to_bytes() != a.to_bytes()
    added = pickle.loads(pickle.dumps(a))
    added.add_many([1.0, 2.0, -3.0])
    want = a.copy()
    want.add_many([1.0, 2.0, -3.0])
    assert added.to_bytes() == want.to_bytes() != a.to_bytes()
    binned = pickle.loads(pickle.dumps(a))
    binned.add_bucket_counts(10, np.array([2, 0, 1]), 1.2, 1.3)
    want = a.copy()
    want.add_bucket_counts(10, np.array([2, 0, 1]), 1.2, 1.3)
    assert binned.to_bytes() == want.to_bytes() != a.to_bytes()


def _decoded(sketch: DDSketch) -> bool:
    try:
        object.__getattribute__(sketch, "pos")
    except AttributeError:
        return False
    return True


def test_quick_and_sealed_forms_write_the_bytes_of_a_fresh_encoding() -> None:
    """A sketch still in the quick form (as a worker sent it) is written by encoding that form's bytes, without
    decoding it; ``seal`` keeps the stored bytes until the sketch changes, and survives a copy. Every case writes
    the bytes that encoding the decoded sketch afresh writes, changed or not."""
    rng = np.random.default_rng(31)
    a = sketch_of(rng.lognormal(2, 1, 700))
    b = sketch_of(np.concatenate([rng.normal(0, 5, 90), np.zeros(10)]))
    big = sketch_of(np.repeat(rng.lognormal(2, 1, 50), 70_000))  # counts past uint16
    for original in (a, b, big, DDSketch()):
        want = original.to_bytes()
        assert want == sketch_module._encoded(original.relative_accuracy, original.min, original.max,
                                              original.zero_count, original.pos, original.neg)
        sent = pickle.loads(pickle.dumps(original))
        assert sent.to_bytes() == want and not _decoded(sent)
        assert sent.to_bytes(compress=False) == original.to_bytes(compress=False) and not _decoded(sent)
        sealed = pickle.loads(pickle.dumps(original))
        assert sealed.seal() == want and sealed.to_bytes() is sealed.seal() and not _decoded(sealed)
        copied = sealed.copy()
        assert copied.to_bytes() == want and copied.quantiles(QS) == original.quantiles(QS)
        decoded = original.copy()
        assert decoded.seal() == want and decoded.copy().to_bytes() == want
        for target in (sealed, decoded, copied):  # sealed, then changed: encoded again
            target.merge(a)
            target.add_many([3.0, -1.0])
            target.add_bucket_counts(100, np.array([1, 0, 4]), 2.0, 2.2)
            again = original.copy()
            again.merge(a)
            again.add_many([3.0, -1.0])
            again.add_bucket_counts(100, np.array([1, 0, 4]), 2.0, 2.2)
            assert target.to_bytes() == again.to_bytes() != want
            assert target.seal() == again.to_bytes()


def _state(s: DDSketch) -> tuple[object, ...]:
    """Everything a sketch holds, bit for bit (stores with their offsets and array lengths, extremes' reprs)."""
    return (s.relative_accuracy, s.pos.offset, s.pos.counts.dtype, s.pos.counts.tolist(), s.neg.offset,
            s.neg.counts.dtype, s.neg.counts.tolist(), s.zero_count, repr(s.min), repr(s.max))


def _one_by_one(sketches: list[DDSketch]) -> DDSketch:
    out = sketches[0].copy()
    for s in sketches[1:]:
        out.merge(s)
    return out


def test_merged_is_merging_one_by_one() -> None:
    """``sketch.merged`` (all the counts added into one array per sign) gives the sketch merging each into a
    copy of the first gives:
    same stores (offsets, lengths, counts), zero count and extremes (ties of -0.0 and 0.0 in order), for mixes
    of empty sketches, zeros, negatives, lone sketches, sketches in their quick or stored form (undecoded), buckets
    collapsed past MAX_BUCKETS (one by one and at once); the inputs unchanged."""
    rng = np.random.default_rng(11)

    def pick() -> DDSketch:
        kind = int(rng.integers(0, 8))
        if kind == 0:
            return DDSketch()
        if kind == 1:
            return sketch_of(np.concatenate([np.zeros(int(rng.integers(1, 4))), rng.lognormal(2, 1, 5)]))
        if kind == 2:
            return sketch_of(rng.normal(0, 50, int(rng.integers(1, 40))))  # both signs
        if kind == 3:
            return sketch_of([-0.0, 0.0] if rng.integers(0, 2) else [0.0, -0.0])
        if kind == 4:  # far apart: the merge collapses the lowest buckets
            return sketch_of(rng.lognormal(0, 1, 20) * 10.0 ** float(rng.choice([-200, 0, 150])))
        if kind == 5:  # as a worker sends it (the quick form), or as stored, not decoded yet
            s = sketch_of(rng.normal(20, 15, int(rng.integers(1, 300))))
            return pickle.loads(pickle.dumps(s)) if rng.integers(0, 2) else sketch_module._from_stored(s.to_bytes())
        return sketch_of(rng.lognormal(3, 1.5, int(rng.integers(1, 300))))

    cases = [[pick() for _ in range(int(rng.integers(1, 30)))] for _ in range(300)]
    cases += [[DDSketch()], [DDSketch(), DDSketch()], [DDSketch(), sketch_of([5.0])], [sketch_of([5.0]), DDSketch()]]
    wide = sketch_of([1.0, 2.0])  # more buckets than a merge keeps (a store read from bytes is not collapsed)
    wide.pos.counts = np.ones(MAX_BUCKETS + 50, dtype=np.int64)
    for first in (wide, sketch_module._from_stored(wide.to_bytes())):
        cases += [[first, DDSketch()], [first, DDSketch(), sketch_of([3.0])]]
    collapsed = 0
    before = [[s.to_bytes() for s in sketches] for sketches in cases]
    wants = [_one_by_one([pickle.loads(pickle.dumps(s)) for s in sketches]) for sketches in cases]
    for sketches, want, was in zip(cases, wants, before, strict=True):
        got = sketch_module.merged(sketches)
        assert _state(got) == _state(want)
        assert got.to_bytes() == want.to_bytes() and got.quantiles(QS) == want.quantiles(QS)
        assert [s.to_bytes() for s in sketches] == was
        collapsed += got.pos.counts.size == MAX_BUCKETS
    assert collapsed > 10


def test_merged_refuses_what_merge_refuses() -> None:
    """Different accuracies, or something that is not a DDSketch, raise the merge's SketchError."""
    with pytest.raises(SketchError, match="different accuracy"):
        sketch_module.merged([sketch_of([1.0]), DDSketch(0.02)])
    with pytest.raises(SketchError, match="cannot merge a"):
        sketch_module.merged([sketch_of([1.0]), object()])  # type: ignore[list-item]
    with pytest.raises(SketchError, match="corrupt sketch"):
        sketch_module.merged([sketch_of([1.0]), sketch_module._from_stored(b"not a sketch")])
