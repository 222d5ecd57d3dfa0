"""A fold's sketches made in their quick form (``sketch.BucketSlices``) are the sketches
``DDSketch.of_bucket_counts`` made before (the reference: ``BucketSlices.sketch`` patched back to it), and go to
the parent as the same bytes: the same fields once read, the same ``to_bytes`` (stored and quick forms) and the
same pickled bytes, for slices with peaks in every count width, zero edges, collapsed widths, for folds of
every family (several folds into the same aggregates, gauges' zeros and negatives) and for whole parts of a
generated log."""

from __future__ import annotations

import pickle
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from aggregator import windows
from aggregator.engine import EngineSettings, LocalEngine, process_part
from aggregator.loggen import generate_events, write_log
from aggregator.sketch import MAX_BUCKETS, BucketSlices, DDSketch
from aggregator.sources import FileSource
from aggregator.windows import WindowAccumulator
from tests.aggregator.test_windows_columns import agg_state
from tests.aggregator.test_windows_fold import FLAGS, fold_into
from tests.aggregator.test_windows_fold import batch as fold_batch


def _reference_sketch(self: BucketSlices, key_lo: int, start: int, width: int, vmin: float,
                      vmax: float) -> DDSketch:
    return DDSketch.of_bucket_counts(key_lo, self._counts[start: start + width], vmin, vmax)


def both(run: Callable[[], Any]) -> tuple[Any, Any]:
    """``run()`` with BucketSlices as it is, then as before (each slice through ``of_bucket_counts``)."""
    new = run()
    with pytest.MonkeyPatch.context() as m:
        m.setattr(BucketSlices, "sketch", _reference_sketch)
        old = run()
    return new, old


def fields(sketch: DDSketch) -> Any:
    return (sketch.pos.offset, sketch.pos.counts.tolist(), sketch.neg.offset, sketch.neg.counts.tolist(),
            sketch.zero_count, sketch.min, sketch.max, sketch.relative_accuracy)


@pytest.mark.parametrize("seed", range(6))
def test_slices_are_of_bucket_counts(seed: int) -> None:
    """Random back-to-back slices: peaks below and above 2**8, 2**16 and 2**32, a zero at either edge,
    a width past ``MAX_BUCKETS``, infinite extremes: the same bytes pickled, the same encodings, the same
    fields once read; every slice but the trimmed and collapsed ones made in the quick form."""
    rng = np.random.default_rng(seed)
    widths = rng.integers(1, 60, 40)
    widths[12 + seed] = MAX_BUCKETS + 7
    counts = rng.integers(1, 5, int(widths.sum())).astype(np.int64)
    starts = np.zeros(widths.size, np.int64)
    np.cumsum(widths[:-1], out=starts[1:])
    for i, big in enumerate((1 << 8, 1 << 16, 1 << 32, 1 << 40)):
        counts[starts[i] + widths[i] // 2] = big - int(rng.integers(0, 2))
    counts[starts[10]] = 0
    counts[starts[11] + widths[11] - 1] = 0
    lows = rng.uniform(1.0, 5.0, widths.size)
    lows[5] = np.inf
    keys = rng.integers(-50, 900, widths.size).tolist()

    highs = np.where(lows == np.inf, -np.inf, lows * 9.0)

    def make() -> list[DDSketch]:
        slices = BucketSlices(counts, starts, widths, np.array(keys), lows, highs)
        return [slices.sketch(*args) for args in zip(keys, starts.tolist(), widths.tolist(), lows.tolist(),
                                                     highs.tolist(), strict=True)]

    new, old = both(make)
    assert [pickle.dumps(s) for s in new] == [pickle.dumps(s) for s in old]
    quick = [s._blob is not None for s in new]
    assert quick == [i not in (10, 11, 12 + seed) for i in range(widths.size)]
    assert [s.to_bytes() for s in new] == [s.to_bytes() for s in old]
    assert [s.to_bytes(compress=False) for s in new] == [s.to_bytes(compress=False) for s in old]
    assert [fields(s) for s in new] == [fields(s) for s in old]


@pytest.mark.parametrize("family", list(FLAGS))
@pytest.mark.parametrize("mix", ["plain", "zeros", "ties", "many"])
def test_folds_are_as_before(family: str, mix: str) -> None:
    """Three folds into the same aggregates (a sketch made in the quick form then changed, decoded first),
    sorted and direct: the aggregates pickle to the same bytes and read the same as before."""
    rng = np.random.default_rng(hash((family, mix, 1)) & 0xFFFF)
    batches = [fold_batch(rng, family, int(rng.integers(1, 2_000)), mix) for _ in range(3)]
    for direct in (False, True):
        def run(direct: bool = direct) -> tuple[bytes, Any]:
            with pytest.MonkeyPatch.context() as m, np.errstate(invalid="ignore"):
                m.setattr(windows, "_DIRECT_KEYS", 1 << 40 if direct else -1)
                got = fold_into(WindowAccumulator(60, 100.0, 50.0), family, batches).take()
            return pickle.dumps(got), [agg_state(a) for a in got]

        new, old = both(run)
        assert new == old


def test_parts_of_a_generated_log_are_as_before(tmp_path: Path) -> None:
    """``process_part`` over the parts of a generated log: each part's result pickles to the same bytes as
    before (the trace records and counts with it)."""
    log = tmp_path / "app.log"
    now = time.time()
    write_log(log, generate_events(30_000, start=now - 3600.0, seed=5), ordinary_every=97)
    source = FileSource([str(log)])
    settings = EngineSettings(now=now, workers=2, part_bytes=2 << 20, chunk_bytes=256 << 10, max_series=2000)
    jobs = LocalEngine(source, settings).plan(source.scan({}))
    assert len(jobs) > 1
    for ti, pi, task in jobs:
        new, old = both(lambda task=task, ti=ti, pi=pi: process_part(source, task, settings, ti, pi))
        assert sum(a.sketch._blob is not None for a in new.aggregates) > 0.9 * len(new.aggregates)
        new.checkpoint = replace(new.checkpoint, read_at=old.checkpoint.read_at)  # (the wall clock of the read)
        assert pickle.dumps(new) == pickle.dumps(old)
