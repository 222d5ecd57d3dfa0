"""The trace family's queries sketches made together (``metrics.queries_sketches``) are the sketches
``queries_sketch`` makes of each window's multiset: the same buckets, zeros, min and max, the same bytes."""

from __future__ import annotations

import random

import numpy as np
import pytest

from aggregator.insights.metrics import queries_sketch, queries_sketches
from aggregator.sketch import DDSketch


def _shown(s: DDSketch) -> tuple[object, ...]:
    return (s.to_bytes(compress=False), repr(s.min), repr(s.max), s.zero_count, s.pos.offset, s.pos.counts.dtype,
            s.pos.counts.tobytes(), s.neg.counts.size, s.relative_accuracy)


@pytest.mark.parametrize("seed", range(6))
def test_sketches_made_together_are_each_windows_own(seed: int) -> None:
    """Histograms of queries per request as windows hold them (insertion order, not sorted): small counts,
    zeros (only zeros too), counts that share a bucket, lone large counts."""
    rng = random.Random(seed)
    hists: list[dict[int, int]] = [{0: 3}, {1: 1}, {0: 2, 5: 1}, {10**6: 1, 2: 4}, {10**15: 1, 1: 1}, {2**62: 2}]
    for _ in range(200):
        top = rng.choice([1, 3, 30, 400, 5000])
        hists.append({rng.randint(0, top): rng.randint(1, 50) for _ in range(rng.randint(1, 25))})
    rng.shuffle(hists)
    got = queries_sketches(hists)
    assert len(got) == len(hists)
    for hist, sketch in zip(hists, got, strict=True):
        # (as TraceAnalyzer._aggregate made each window's)
        want = queries_sketch(np.repeat(np.fromiter(hist, np.int64, len(hist)),
                                        np.fromiter(hist.values(), np.int64, len(hist))))
        assert _shown(sketch) == _shown(want), hist
