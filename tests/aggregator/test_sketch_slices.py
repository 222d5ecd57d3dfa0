"""A fold's sketches made with their quick form (``sketch.BucketSlices``) are the sketches
``DDSketch.of_bucket_counts`` made before, and go to the parent as the same bytes: every quick form kept is
``to_bytes(compress=False)`` of its sketch (what ``__reduce__`` sent before), for slices with peaks in every
count width, zero edges (trimmed, so no form kept), collapsed widths, and for the aggregates of folds of
every family and of whole parts of a generated log (a sketch changed after its fold drops the form)."""

from __future__ import annotations

import pickle
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from aggregator import windows
from aggregator.engine import EngineSettings, LocalEngine, process_part
from aggregator.loggen import generate_events, write_log
from aggregator.sketch import MAX_BUCKETS, BucketSlices, DDSketch
from aggregator.sources import FileSource
from tests.aggregator.test_windows_fold import FLAGS, fold_all
from tests.aggregator.test_windows_fold import batch as fold_batch


def encoded(sketch: DDSketch) -> bytes:
    """What ``__reduce__`` sent before: the sketch encoded from its buckets, the quick form set aside."""
    blob, sketch._blob = sketch._blob, None
    try:
        return sketch.to_bytes(compress=False)
    finally:
        sketch._blob = blob


def fields(sketch: DDSketch) -> Any:
    return (sketch.pos.offset, sketch.pos.counts.tolist(), sketch.neg.counts.tolist(), sketch.zero_count,
            sketch.min, sketch.max, sketch.relative_accuracy)


def check(sketches: list[DDSketch]) -> int:
    """Every quick form kept is the sketch's encoding (and pickles as it did): -> how many were kept."""
    kept = 0
    for s in sketches:
        if s._blob is not None:
            kept += 1
            assert s._blob == encoded(s)
            assert pickle.loads(pickle.dumps(s)).to_bytes() == s.to_bytes()
    return kept


@pytest.mark.parametrize("seed", range(6))
def test_slices_are_of_bucket_counts_with_their_encoding(seed: int) -> None:
    """Random back-to-back slices: peaks below and above 2**8, 2**16 and 2**32, zeros at either edge,
    widths past ``MAX_BUCKETS``: the same sketches as ``of_bucket_counts``; a form kept where none is trimmed
    or collapsed, and it is the encoding."""
    rng = np.random.default_rng(seed)
    widths = rng.integers(1, 60, 40)
    widths[rng.integers(0, 40)] = MAX_BUCKETS + 7
    counts = rng.integers(1, 5, int(widths.sum())).astype(np.int64)
    starts = np.zeros(widths.size, np.int64)
    np.cumsum(widths[:-1], out=starts[1:])
    for i, big in enumerate((1 << 8, 1 << 16, 1 << 32, 1 << 40)):
        counts[starts[i] + widths[i] // 2] = big - int(rng.integers(0, 2))
    counts[starts[10]] = 0
    counts[starts[11] + widths[11] - 1] = 0
    slices = BucketSlices(counts, starts, widths)
    made, want = [], []
    for start, width in zip(starts.tolist(), widths.tolist(), strict=True):
        lo = float(rng.uniform(1.0, 5.0))
        key = int(rng.integers(-50, 900))
        made.append(slices.sketch(key, start, width, lo, lo * 9.0))
        want.append(DDSketch.of_bucket_counts(key, counts[start: start + width], lo, lo * 9.0))
    assert [fields(s) for s in made] == [fields(s) for s in want]
    assert [s.to_bytes(compress=False) for s in made] == [s.to_bytes(compress=False) for s in want]
    assert check(made) == sum(1 for i, w in enumerate(widths.tolist()) if w <= MAX_BUCKETS and i not in (10, 11))


@pytest.mark.parametrize("family", list(FLAGS))
@pytest.mark.parametrize("mix", ["plain", "zeros", "ties", "many"])
def test_fold_sketches_keep_their_encoding(family: str, mix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Three folds into the same aggregates, with gauges' zeros and negatives (no quick form: the general
    path), sorted and direct: every form still kept is the sketch's encoding (those changed by a later fold
    dropped theirs)."""
    rng = np.random.default_rng(hash((family, mix, 1)) & 0xFFFF)
    batches = [fold_batch(rng, family, int(rng.integers(1, 2_000)), mix) for _ in range(3)]
    original = windows.WindowAccumulator.take
    made: list[DDSketch] = []

    def take(self: Any) -> Any:
        out = original(self)
        made.extend(a.sketch for a in out)
        return out

    monkeypatch.setattr(windows.WindowAccumulator, "take", take)
    for direct in (False, True):
        made.clear()
        with np.errstate(invalid="ignore"):
            fold_all(family, batches, direct, monkeypatch)
        kept = check(made)
        assert kept > 0 or mix == "zeros"


def test_parts_of_a_generated_log_pickle_as_before(tmp_path: Path) -> None:
    """``process_part`` over the parts of a generated log: almost every sketch keeps its quick form, each
    the encoding the pickle carried before, and the unpickled aggregates store the same sketches."""
    log = tmp_path / "app.log"
    now = time.time()
    write_log(log, generate_events(30_000, start=now - 3600.0, seed=5), ordinary_every=97)
    source = FileSource([str(log)])
    settings = EngineSettings(now=now, workers=2, part_bytes=2 << 20, chunk_bytes=256 << 10, max_series=2000)
    jobs = LocalEngine(source, settings).plan(source.scan({}))
    assert len(jobs) > 1
    sketches, total = [], 0
    for ti, pi, task in jobs:
        result = process_part(source, task, settings, ti, pi)
        total += len(result.aggregates)
        sketches += [a.sketch for a in result.aggregates]
        back = pickle.loads(pickle.dumps(result))
        assert [a.sketch.to_bytes() for a in back.aggregates] == [a.sketch.to_bytes() for a in result.aggregates]
    assert check(sketches) >= total * 0.9
