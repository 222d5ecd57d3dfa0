"""The parent merges the sketches of a window several parts hold when it seals or reads the window, in one pass
(``WindowState._settle``: ``sketch.merged_quick`` on the workers' quick forms, else ``sketch.merged``), not part by
part: the same stored bytes, quick bytes and fields as merging each in turn (``merge_into``, the reference).
Checked for sketches in every form (quick, stored, decoded, new), with zeros, negatives, counts of every width
(up to 2**40), ranges wide enough to collapse, other accuracies (``merged_quick``), windows without sketches, and
batches out of time order."""

from __future__ import annotations

import pickle
import random
from collections.abc import Iterable

import numpy as np
import pytest

from aggregator.model import SeriesKey, WindowAggregate
from aggregator.sketch import MAX_BUCKETS, DDSketch, SketchError, merged, merged_quick
from aggregator.windows import WindowState
from tests.aggregator.test_sketch import _one_by_one
from tests.aggregator.test_windows_apply import _reference_merge


def _quick(sketch: DDSketch) -> DDSketch:
    """The sketch as the parent gets it from a worker: its quick form, undecoded."""
    out = pickle.loads(pickle.dumps(sketch))
    assert out._blob is not None and out._blob[:1] == b"\0"
    return out


def _values(rng: np.random.Generator, kind: int) -> np.ndarray:
    n = int(rng.integers(1, 400))
    if kind == 0:
        return rng.lognormal(3.0, 1.5, n)
    if kind == 1:  # one bucket holding more than 2**8, 2**16 values
        return np.full(int(rng.choice([300, 70_000])), 12.5)
    if kind == 2:  # zeros and negatives: a gauge
        return rng.normal(0.0, 5.0, n).round(1)
    if kind == 6:  # zeros beside positive values only: a quick form merged_quick takes, with a zero count
        return np.concatenate([np.zeros(int(rng.integers(1, 5))), rng.lognormal(3.0, 1.5, n)])
    return np.concatenate([rng.uniform(1e-30, 1e-29, 3), rng.uniform(1e20, 1e21, 3)])  # wider than MAX_BUCKETS


def _sketch(rng: np.random.Generator, form: int, kind: int) -> DDSketch:
    if kind == 5:  # buckets holding more than 2**32 values
        counts = rng.integers(1, 1 << 40, int(rng.integers(1, 30)))
        s = DDSketch.of_bucket_counts(int(rng.integers(0, 40)), counts, 1.0, 2.0)
        return _quick(s) if form == 0 else s
    s = DDSketch(0.02) if kind == 4 else DDSketch()
    s.add_many(_values(rng, kind) if kind != 4 else rng.lognormal(3.0, 1.0, 50))
    if form == 0:
        return _quick(s)
    if form == 1:
        return DDSketch.from_bytes(s.to_bytes())  # decoded from its stored form
    if form == 2:
        return _from_store(s)
    return s


def _from_store(s: DDSketch) -> DDSketch:
    out = DDSketch.__new__(DDSketch)
    out._blob, out._stored = s.to_bytes(), None
    return out


def _forms(s: DDSketch) -> tuple[bytes, bytes, float, float, float, int]:
    return s.to_bytes(), s.to_bytes(compress=False), s.count, s.min, s.max, s.zero_count


def test_merged_quick_is_merged() -> None:
    """Every list of quick forms ``merged_quick`` takes gives the stored and quick bytes and fields of merging
    each in turn (``DDSketch.merge``, the reference); what it does not take (another form, negative buckets,
    another accuracy, collapsing) it declines (None), and the sum of the quick forms it took is not vacuous
    (counts of every width, zeros, several inputs)."""
    rng = np.random.default_rng(5)
    taken = declined = with_zeros = 0
    for _ in range(1500):
        n = int(rng.integers(1, 5))
        sketches = [_sketch(rng, int(rng.choice([0] * 8 + [1, 2, 3])), int(rng.choice([0] * 6 + [1, 1, 2, 3, 4, 5, 6])))
                    for _ in range(n)]
        fast = merged_quick(sketches)
        if len({sk.relative_accuracy for sk in sketches}) > 1:  # refused, by merged as by merging in turn
            assert fast is None
            with pytest.raises(SketchError):
                merged(sketches)
            continue
        want = _one_by_one(sketches)  # after merged_quick: it decodes the inputs
        if fast is None:
            declined += 1
            continue
        taken += n > 1
        with_zeros += any(sk.zero_count for sk in sketches[1:])  # summed into the first's
        assert _forms(fast) == _forms(want)
        assert fast.quantiles([0.5, 0.99]) == want.quantiles([0.5, 0.99])
    assert taken > 200 and declined > 200 and with_zeros > 20
    low, high = DDSketch(), DDSketch()
    low.add_many([1e-30])
    high.add_many([1e30])
    assert merged([low, high]).pos.counts.size == MAX_BUCKETS  # collapsed
    assert merged_quick([_quick(low), _quick(high)]) is None


def _batches(seed: int) -> list[list[WindowAggregate]]:
    """Parts of a log: each a run of windows of a few series, the first and last window shared with the parts
    beside it; some parts out of time order, some windows without a sketch."""
    rng = np.random.default_rng(seed)
    pick = random.Random(seed)
    out = []
    starts = [int(s) for s in rng.integers(0, 40, 30)] if seed % 2 else list(range(0, 120, 4))
    for first in starts:
        part = []
        for w in range(first, first + 5):
            for route in range(4):
                sk = None if route == 3 and pick.random() < 0.5 else _sketch(
                    rng, pick.choice([0, 0, 0, 0, 1, 2, 3]), pick.choice([0, 0, 0, 0, 1, 2, 5]))
                part.append(WindowAggregate(SeriesKey("request", (("route", f"r{route}"),)), 60 * w, 60,
                                            count=pick.randint(1, 9), errors=pick.randint(0, 2),
                                            total=pick.random(), min=pick.random(), max=1 + pick.random(),
                                            counters={"satisfied": 1.0}, sketch=sk))
        out.append(part)
    return out


def _copies(batches: Iterable[list[WindowAggregate]]) -> list[list[WindowAggregate]]:
    return pickle.loads(pickle.dumps(list(batches)))


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_window_state_merges_as_each_part_in_turn(seed: int) -> None:
    """The state's windows, read midway and at the end, have the reference's exact fields and sketch bytes
    (stored and quick forms); windows were sealed and merged from several parts (not vacuous); the count of
    waiting sketches stays the one ``_pending`` holds as seals take theirs."""
    batches = _batches(seed)
    state, plain = WindowState(), WindowState()
    for i, (new, ref) in enumerate(zip(_copies(batches), _copies(batches), strict=True)):
        state.merge(new, float(i))
        _reference_merge(plain, ref, float(i))
        assert state._waiting == sum(len(theirs) for theirs in state._pending.values())  # the seals' too
        if i == len(batches) // 2:
            assert set(state.aggs) == set(plain.aggs)  # pending sketches merged now, the rest later
    assert state._sealed > 50
    assert set(state.aggs) == set(plain.aggs) and state.max_ts == plain.max_ts
    for k, agg in state.aggs.items():
        want = plain.aggs[k]
        assert (agg.count, agg.errors, agg.total, agg.min, agg.max, agg.counters) == (
            want.count, want.errors, want.total, want.min, want.max, want.counters)
        assert (agg.sketch is None) == (want.sketch is None)
        if agg.sketch is not None:
            assert _forms(agg.sketch) == _forms(want.sketch)  # type: ignore[arg-type]
    seen: dict[tuple[str, int], int] = {}
    for part in batches:
        for a in part:
            if a.sketch is not None:
                seen[(a.series.tags[0][1], a.start)] = seen.get((a.series.tags[0][1], a.start), 0) + 1
    assert sum(n > 1 for n in seen.values()) > 20
    assert not state._pending


def _held(state: WindowState) -> int:
    """The sketches the state holds: one per window, and those still waiting to be merged into it."""
    return len(state) + sum(len(theirs) for theirs in state._pending.values())


def test_waiting_sketches_stay_bounded_by_the_windows() -> None:
    """Inputs that overlap in time (one log per host, read one after the other) stop the sealing, and then every
    part adds a sketch to each window it shares: the sketches waiting to be merged stay at most one per window
    the state counts (``len``, what ``SPILL_AGGREGATES`` bounds), not one per part and window; the windows are
    still the reference's (each part merged in turn), bit for bit."""
    rng = np.random.default_rng(7)
    hosts = [[WindowAggregate(SeriesKey("request", (("route", f"r{r}"),)), 60 * w, 60, count=1, errors=0,
                              total=1.0, min=1.0, max=1.0, counters={},
                              sketch=_sketch(rng, 0, 0))
              for w in range(40) for r in range(10)] for _ in range(12)]
    parts = [host[i: i + 100] for host in hosts for i in range(0, len(hosts[0]), 100)]  # 4 parts a host
    state, plain = WindowState(), WindowState()
    most = 0
    for i, (new, ref) in enumerate(zip(_copies(parts), _copies(parts), strict=True)):
        state.merge(new, float(i))
        _reference_merge(plain, ref, float(i))
        most = max(most, _held(state) - 2 * len(state))
        assert state._waiting == _held(state) - len(state)
    assert state._resealed * 8 > state._sealed  # the sealing stopped: nothing else merged the waiting sketches
    assert most <= 0
    assert set(state.aggs) == set(plain.aggs)
    for k, agg in state.aggs.items():
        assert _forms(agg.sketch) == _forms(plain.aggs[k].sketch)  # type: ignore[arg-type]



@pytest.mark.parametrize("form", [0, 3])
def test_a_sealed_window_read_then_reopened_merges_as_each_part_in_turn(form: int) -> None:
    """A window sealed while later parts were read, then read (its quantiles asked: the sketch decoded), then
    reopened by a late part, merges to the reference's fields and sketch bytes, stored and quick, whether its
    first sketch came in a worker's quick form or decoded. (The seal keeps a quick form, so ``merged_quick``
    takes both; ``merged``, the fallback for a first sketch without one, is held to the reference by
    ``test_window_state_merges_as_each_part_in_turn``'s decoded, stored and new forms.)"""
    rng = np.random.default_rng(11)
    key = ("request", (("route", "r"),), 0)

    def part(starts: Iterable[int], f: int = 0) -> list[WindowAggregate]:
        return [WindowAggregate(SeriesKey("request", (("route", "r"),)), 60 * w, 60, count=3, errors=1,
                                total=float(w) + 0.1, min=0.5, max=9.0, counters={}, sketch=_sketch(rng, f, 0))
                for w in starts]

    batches = [part([0, 1], form), part([2, 3]), part([0, 4])]  # the third reopens window 0, sealed by the second
    state, plain = WindowState(), WindowState()
    for i, (new, ref) in enumerate(zip(_copies(batches), _copies(batches), strict=True)):
        if i == 2:
            sealed = state._aggs[key].sketch
            assert type(sealed) is DDSketch and sealed._stored is not None  # sealed by the second part
            sealed.quantiles([0.5])  # a reader decodes it
        state.merge(new, float(i))
        _reference_merge(plain, ref, float(i))
    assert set(state.aggs) == set(plain.aggs)
    for k, agg in state.aggs.items():
        want = plain.aggs[k]
        assert (agg.count, agg.errors, agg.total, agg.min, agg.max) == (
            want.count, want.errors, want.total, want.min, want.max)
        assert _forms(agg.sketch) == _forms(want.sketch)  # type: ignore[arg-type]
    assert state.aggs[key].count == 6
