"""``alerting._columns`` (C) against its Python twins in ``alerting.columns``: a chunk's stored counts added into
its matrix run by run (``_add_runs``), then summed along each row and over the rows (``_sum_rows``). The C loops
give what the Python ones give, or decline (False, the matrix unchanged) and leave it to them; the whole read
(``read_chunk``) is the same with them or without."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from aggregator.model import SeriesKey, make_tags
from aggregator.sketch import DDSketch
from alerting import columns

native = columns._native
pytestmark = pytest.mark.skipif(native is None, reason="alerting._columns not built (or LOGAPM_NATIVE=0)")


def _python(fn: Any, *args: Any) -> None:
    """``fn(*args)`` with the extension off: its Python (or numpy) twin."""
    saved = columns._native
    columns._native = None
    try:
        fn(*args)
    finally:
        columns._native = saved


@pytest.mark.parametrize("seed", range(30))
def test_summed_sums_what_numpy_sums(seed: int) -> None:
    """Matrices of 0 to 9 rows and 0 to 300 columns, counts up to 2**62 and negative ones, sums that wrap: the
    same int64s as numpy's cumsum along the rows and adds over them."""
    rng = np.random.default_rng(seed)
    rows, width = int(rng.integers(0, 10)), int(rng.integers(0, 300))
    if seed % 3 == 0:
        flat = rng.integers(-(2**62), 2**62, rows * width, dtype=np.int64)
    else:
        flat = rng.integers(0, 1000, rows * width, dtype=np.int64)
    if seed % 5 == 0 and flat.size:
        flat[rng.integers(0, flat.size, 3)] = np.iinfo(np.int64).max
    mine, theirs = flat.copy(), flat.copy()
    assert native.summed(mine, rows, width) is True
    _python(columns._sum_rows, theirs, rows, width)
    assert mine.tobytes() == theirs.tobytes()
    if rows and width:
        assert mine[width - 1] == np.cumsum(flat[:width])[-1]


@pytest.mark.parametrize("case", ["cells", "rows", "negative", "int32", "strided", "readonly"])
def test_summed_declines_what_it_cannot_take(case: str) -> None:
    """A matrix of another size than rows x width, a negative count of rows, or an array that is not a
    writable C-contiguous int64 one: False and the array unchanged; ``_sum_rows`` then sums it with numpy."""
    flat = np.arange(1, 13, dtype=np.int64)
    rows, width = {"cells": (3, 5), "rows": (2, 4), "negative": (-3, -4)}.get(case, (3, 4))
    target: Any = flat.copy()
    if case == "int32":
        target = flat.astype(np.int32)
    if case == "strided":
        target = np.arange(1, 25, dtype=np.int64)[::2]
    if case == "readonly":
        target.setflags(write=False)
    before = target.copy()
    assert native.summed(target, rows, width) is False
    assert np.array_equal(target, before)
    if case in ("int32", "strided"):
        columns._sum_rows(target, rows, width)
        assert target.tolist() == np.cumsum(np.cumsum(before.reshape(3, 4), axis=1), axis=0).reshape(-1).tolist()
    with pytest.raises(TypeError):
        native.summed(flat, 3)


@pytest.mark.parametrize("seed", range(40))
def test_add_runs_adds_what_python_adds(seed: int) -> None:
    """Runs into overlapping places (several sketches of a group in one row), counts up to 2**63 - 1 and
    negative ones (a form-1 uint64 past 2**63, as the decoder reads it), into a matrix that wraps: the same
    int64s as numpy's slice-adds, in the same order."""
    rng = np.random.default_rng(seed)
    cells, n_runs = 300, int(rng.integers(0, 60))
    runs = rng.integers(0, 2**62 if seed % 3 == 0 else 1000, 2000, dtype=np.int64)
    if seed % 4 == 0:
        runs[rng.integers(0, runs.size, 5)] = -(2**63) + 7
    lengths = rng.integers(0, 40, n_runs).astype(np.int64)
    starts = np.array([int(rng.integers(0, runs.size - n + 1)) for n in lengths], dtype=np.int64)
    places = np.array([int(rng.integers(0, cells - n + 1)) for n in lengths], dtype=np.int64)
    start = rng.integers(-(2**62), 2**62, cells, dtype=np.int64)
    if seed % 5 == 0:
        start[:] = np.iinfo(np.int64).max - 3
    mine, theirs = start.copy(), start.copy()
    assert native.add_runs(mine, runs, places, starts, lengths) is True
    _python(columns._add_runs, theirs, runs, places, starts, lengths)
    assert mine.tobytes() == theirs.tobytes()
    if n_runs and lengths.any():
        assert not np.array_equal(mine, start)


@pytest.mark.parametrize("case", ["place", "start", "negative", "length", "shapes", "int32", "strided", "readonly"])
def test_add_runs_declines_what_it_cannot_take(case: str) -> None:
    """A run outside the matrix or the counts, a negative position or length, arrays of different lengths, or
    arrays that are not C-contiguous int64 ones (the matrix writable): False and the matrix unchanged; then
    ``_add_runs`` does it (or refuses it) as the Python loop always did."""
    flat = np.zeros(10, dtype=np.int64)
    runs = np.arange(1, 17, dtype=np.int64)
    args: dict[str, Any] = {"places": [0], "starts": [1], "lengths": [3]}
    changes = {"place": {"places": [8]}, "start": {"starts": [15]}, "negative": {"places": [-1]},
               "length": {"lengths": [-2]}, "shapes": {"places": [0, 4]}}.get(case, {})
    places, starts, lengths = (np.array({**args, **changes}[k], dtype=np.int64) for k in ("places", "starts", "lengths"))
    target, counts = flat, runs
    if case == "int32":
        target, counts = flat.copy(), runs.astype(np.int32)
    if case == "strided":
        target = np.zeros(20, dtype=np.int64)[::2]
    if case == "readonly":
        target = flat.copy()
        target.setflags(write=False)
    assert native.add_runs(target, counts, places, starts, lengths) is False
    assert not target.any()
    if case in ("int32", "strided"):  # the Python loop takes these, with the same sums
        columns._add_runs(target, counts, places, starts, lengths)
        assert target.tolist()[:4] == [2, 3, 4, 0]
    assert native.add_runs(flat, runs, *(np.array(x, dtype=np.int64) for x in ([2], [0], [3]))) is True
    assert flat.tolist() == [0, 0, 1, 2, 3, 0, 0, 0, 0, 0]


def test_read_chunk_is_the_same_without_the_extension(monkeypatch: pytest.MonkeyPatch) -> None:
    """A chunk of stored and quick sketches of many sizes, several series a group, read with the C loops and
    with the Python ones: the same groups, counts and quantiles, bit for bit; the C loops were used."""
    rng = np.random.default_rng(3)
    t0, w = 1_795_000_000 - 1_795_000_000 % 3600, 60
    grid = columns.Grid.of([t0 + w * (5 + i) for i in range(20)], 5 * w, w)
    rows = []
    for r in range(grid.rows):
        for route in ("a", "b", "c", "d"):
            for method in ("GET", "POST"):
                if rng.random() < 0.2:
                    continue
                n = int(rng.choice([1, 30, 300, 70_000]))
                s = DDSketch()
                s.add_many(rng.lognormal(3.0 + 0.3 * "abcd".index(route), 1.0, n))
                rows.append((SeriesKey("request", make_tags(route=route, method=method)),
                             ("request", f"{route}{method}", grid.base + r * w, w, n, 0, 1.0, None, None, "{}",
                              s.to_bytes(compress=bool(rng.random() < 0.7)))))
    calls: list[bool] = []

    class Counting:
        def add_runs(self, *args: Any) -> Any:
            calls.append(native.add_runs(*args))
            return calls[-1]

        def summed(self, *args: Any) -> Any:
            calls.append(native.summed(*args))
            return calls[-1]

    qs = {0.5, 0.95, 0.99}
    monkeypatch.setattr(columns, "_native", Counting())
    fast = columns.read_chunk(lambda sketches: rows, ("route",), grid, qs, False)
    monkeypatch.setattr(columns, "_native", None)
    slow = columns.read_chunk(lambda sketches: rows, ("route",), grid, qs, False)
    assert fast is not None and slow is not None and len(calls) == 2 and all(calls)
    assert fast.keys == slow.keys
    assert np.array_equal(fast.present, slow.present) and np.array_equal(fast.counts, slow.counts)
    for q in qs:
        assert fast.quantiles.values[q].keys() == slow.quantiles.values[q].keys()
        for key, values in slow.quantiles.values[q].items():
            assert fast.quantiles.values[q][key].tobytes() == values.tobytes()
