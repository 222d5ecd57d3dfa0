"""The parent's open traces as columns of slots (``insights.opentraces.OpenTraces``): read as the dict of open traces
they replace, whatever index finds them (``_opentable.Index`` in C, ``_DictIndex`` in Python) and however many of
their hashes collide (``HASH_BITS`` kept low: the hash alone never decides); and runs over a generated log leave
the same store with colliding hashes as with full ones."""

from __future__ import annotations

import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_insights_open_traces import _cut_log, runs_states

from aggregator.insights import opentraces
from aggregator.insights.opentraces import InColumns, OpenTraces, _DictIndex
from aggregator.insights.partials import PackedTrace
from aggregator.insights.traces import TraceAnalyzer, extract

INDEXES = ["python", pytest.param("c", marks=pytest.mark.skipif(opentraces._native is None,
                                                                  reason="_opentable not built"))]


def _make_index(kind: str, bits: int) -> Any:
    assert opentraces._native is not None or kind == "python"
    return _DictIndex(bits) if kind == "python" else opentraces._native.Index(bits)


@pytest.mark.skipif(opentraces._native is None, reason="_opentable not built")
@pytest.mark.parametrize("bits", [1, 2, 7, 63, 64])
def test_the_index_in_c_is_its_python_twin(bits: int) -> None:
    """The same hashes, slots, taken flags and counts from both, through inserts over dead and live slots, ids
    inserted twice, None and int ids, empty and one-id calls, a clear, and a table grown far past its first size."""
    rng = random.Random(bits)
    c, py = opentraces._native.Index(bits), _DictIndex(bits)
    alive = np.zeros(0, np.bool_)
    pool: list[Any] = [f"{i:032x}" for i in range(5000)] + [None, 0, -1, 2**70, "é" * 3, ""]
    n = 0
    for step in range(60):
        if step == 30:
            c.clear()
            py.clear()
        k = rng.choice([0, 1, 3, 200, 3000])
        ids = [rng.choice(pool) for _ in range(k)]
        got = []
        for index in (c, py):
            slots, hashes = np.full(k, -7, np.int64), np.full(k, -7, np.int64)
            index.lookup(ids, slots, hashes)
            again = np.full(k, -7, np.int64)
            index.get(hashes, again)
            got.append((slots.tolist(), hashes.tolist(), again.tolist()))
        assert got[0] == got[1] and got[0][0] == got[0][2]
        assert got[0][1] == [hash(x) & ((1 << bits) - 1) if bits < 64 else hash(x) for x in ids]
        alive = np.concatenate([alive, np.ones(k, np.bool_)])
        alive[rng.sample(range(alive.size), alive.size // 2)] = False
        new = np.arange(n, n + k, dtype=np.int64)
        hashes = np.array(got[0][1], np.int64)
        taken = [np.full(k, 9, np.bool_), np.full(k, 9, np.bool_)]
        counts = [index.insert(hashes, new, alive, t) for index, t in zip((c, py), taken, strict=True)]
        assert counts[0] == counts[1] == int(taken[0].sum()) and taken[0].tolist() == taken[1].tolist()
        assert len(c) == len(py)
        n += k
    assert len(c) > 1024 or bits < 11  # (grown past its first table)
    with pytest.raises(TypeError):
        c.lookup([[]], np.zeros(1, np.int64), np.zeros(1, np.int64))
    with pytest.raises(TypeError):
        py.lookup([[]], np.zeros(1, np.int64), np.zeros(1, np.int64))
    with pytest.raises(TypeError):
        c.get(np.zeros(2, np.int32), np.zeros(2, np.int64))
    with pytest.raises(ValueError):
        c.lookup(["a", "b"], np.zeros(1, np.int64), np.zeros(2, np.int64))
    with pytest.raises(ValueError):
        opentraces._native.Index(0)


@pytest.mark.skipif(opentraces._native is None, reason="_opentable not built")
def test_lookup_of_an_id_whose_hash_empties_the_list() -> None:
    """An id whose ``__hash__`` empties the list being looked up (no caller's id does it: they are str, whose
    hash runs no Python code): a RuntimeError, the ids before it done (it read the freed list: a crash)."""
    ids: list[Any] = []

    class Emptying:
        def __hash__(self) -> int:
            ids.clear()
            return 7

    ids += ["a" * 32, Emptying(), "b" * 32, "c" * 32]
    index = opentraces._native.Index()
    slots, hashes = np.full(4, -9, np.int64), np.full(4, -9, np.int64)
    with pytest.raises(RuntimeError, match="ids changed size during the call"):
        index.lookup(ids, slots, hashes)
    assert hashes.tolist() == [hash("a" * 32), 7, -9, -9] and slots.tolist() == [-1, -1, -9, -9]


class _Source:
    """A batch's rests, as far as the table is concerned: something its traces point into."""


def _packed(newest: float, events: int) -> PackedTrace:
    return tuple.__new__(PackedTrace, (newest, events, 0, 0.0, 0.0, 0.0))


@pytest.mark.parametrize("index", INDEXES)
@pytest.mark.parametrize("bits", [1, 3, 64])
@pytest.mark.parametrize("seed", range(4))
def test_open_traces_read_as_the_dict_they_replace(monkeypatch: pytest.MonkeyPatch, index: str, bits: int,
                                                   seed: int) -> None:
    """Random opens (in bulk and one by one), merges in place, pops, drops and compactions: the table reads as a
    dict given the same operations (its items in order, membership, lookups), with colliding hashes too."""
    monkeypatch.setattr(opentraces.OpenTraces, "HASH_BITS", bits)
    if index == "python":
        monkeypatch.setattr(opentraces, "_native", None)
    rng = random.Random(seed)
    table, model = OpenTraces(), {}
    overflowed = 0
    assert type(table.index) is type(_make_index(index, bits))
    pool = [f"{i:08x}" for i in range(400)]
    for step in range(300):
        op = rng.random()
        if op < 0.3:  # a batch's rests
            ids = list(dict.fromkeys(rng.choice(pool) for _ in range(rng.randint(1, 40))))
            ids = [t for t in ids if t not in model]
            source = _Source()
            newest, events = [float(step)] * len(ids), [rng.randint(1, 5) for _ in ids]
            table.append(ids, np.array(newest), np.array(events, np.int64), source, np.arange(len(ids)))
            model.update((t, tuple.__new__(InColumns, (newest[i], events[i], source, i))) for i, t in enumerate(ids))
        elif op < 0.5:
            trace_id, trace = rng.choice(pool), _packed(float(step), rng.randint(1, 5))
            table[trace_id] = trace
            model[trace_id] = trace
        elif op < 0.7:
            trace_id = rng.choice(pool)
            assert table.pop(trace_id, "none") == model.pop(trace_id, "none")
        elif op < 0.85 and model:
            slots = table.slots()
            drop = np.array(sorted(rng.sample(range(slots.size), rng.randint(0, slots.size))), np.int64)
            for trace_id in table.ids_of(slots[drop]):
                del model[trace_id]
            table.kill(slots[drop])
        elif op < 0.9:
            table.compact()
        asked = [rng.choice(pool) for _ in range(rng.randint(0, 30))]
        slots = table.lookup(asked)
        assert [table.ids_of(np.array([s]))[0] if s >= 0 else None for s in slots.tolist()] == [t if t in model else None
                                                                             for t in asked]
        assert list(table.items()) == list(model.items()) and len(table) == len(model)
        assert all((t in table) == (t in model) for t in asked)
        overflowed = max(overflowed, len(table.overflow))
    assert len(table.index) > 0 and (overflowed > 0) == (bits < 64)  # (the collisions went through overflow)


def _through_pickle(chunk: list[Any]) -> list[Any]:
    """``extract``'s batches as the parent gets them from a worker (their trace ids a ``columns.PackedIds``)."""
    return pickle.loads(pickle.dumps(extract(chunk)))  # type: ignore[no-any-return]


@pytest.mark.parametrize("pickled", [False, True])
@pytest.mark.parametrize("index", INDEXES)
def test_runs_with_colliding_hashes_leave_what_full_hashes_leave(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 index: str, pickled: bool) -> None:
    """A generated log over several runs (traces carried in the store, the cap, logs going back in time), with
    every open trace's hash cut to 2 bits (nearly all of them collide), the batches as made or as unpickled
    (their ids read one at a time from the joined string): the same aggregates, findings, counters and open
    traces in the same order after every run as with full hashes."""
    cfg = {"run.trace_pending_max_events": 300, "run.n_plus_one_threshold": 2}
    runs = _cut_log(tmp_path, 21, 25_000, True)
    want = runs_states(tmp_path / "full.db", runs, extract, cfg, TraceAnalyzer)
    monkeypatch.setattr(opentraces.OpenTraces, "HASH_BITS", 2)
    if index == "python":
        monkeypatch.setattr(opentraces, "_native", None)
    overflowed = []

    class Counting(TraceAnalyzer):
        def finish(self) -> list[Any]:
            overflowed.append(len(self._open.overflow))
            return super().finish()

    got = runs_states(tmp_path / "tiny.db", runs, _through_pickle if pickled else extract, cfg, Counting)
    assert repr(got) == repr(want)
    assert max(overflowed) > 100


@pytest.mark.skipif(opentraces._native is None, reason="_opentable not built")
def test_unpickled_trace_ids_carry_their_hashes(tmp_path: Path) -> None:
    """A batch's trace ids come back from the pickle as ``columns.PackedIds``: the joined string, ``hash()`` of each
    id (None's place too) and each id read alone (made in C from the joined string), the list when split (the
    batch's ``traces``), the same packed form when pickled again; as the list where the joined string is not
    ASCII. The index finds the same slots from those hashes as from the ids."""
    import pickle

    from test_insights_columns import chunks_of, realistic_events

    from aggregator.insights.columns import PackedIds, TraceBatch, _packed_ids, _unpacked_ids, take_ids
    from aggregator.loggen import write_log

    for ids in (["a"], ["", "a"], ["a", ""], [""], ["x", None], ["a", None, "b"], [None, "", "q"],
                [f"{i:032x}" for i in range(3000)] + [None]):
        packed = _packed_ids(ids)
        assert type(packed) is tuple
        back = _unpacked_ids(packed)
        assert type(back) is PackedIds and back.packed == packed and len(back) == len(ids)
        assert back.hashes.tolist() == [hash(x) for x in ids]
        assert [back[i] for i in range(len(ids))] == ids == back.split() == take_ids(back, np.arange(len(ids)))
        assert back.split().hashes is back.hashes
        codes = np.array([len(ids) - 1, 0, len(ids) // 2])
        assert back.take(codes) == [ids[i] for i in codes.tolist()] == take_ids(ids, codes)
    assert _unpacked_ids(_packed_ids(["é", "a"])) == ["é", "a"]
    for joined, want in (("a\x00bb\x00", ["a", "bb", ""]), ("", [""]), ("\x00", ["", ""])):
        hashes, starts = np.zeros(4, np.int64), np.zeros(5, np.int64)
        assert opentraces._native.hash_pieces(joined, hashes, starts) == len(want)
        assert hashes[:len(want)].tolist() == [hash(x) for x in want]
        assert [joined[starts[k]:starts[k + 1] - 1] for k in range(len(want))] == want
    assert opentraces._native.hash_pieces("a\x00b", np.zeros(1, np.int64)) == -1  # (too short: unchanged)
    assert opentraces._native.hash_pieces("a\x00b", np.zeros(2, np.int64), np.zeros(2, np.int64)) == -1
    log = tmp_path / "app.log"
    write_log(log, realistic_events(300, seed=2))
    (batch,) = extract(chunks_of(log, 10**9)[0])
    back = pickle.loads(pickle.dumps(batch))
    assert type(back.trace_ids()) is PackedIds and type(TraceBatch.__getstate__(back)[-1]) is tuple
    again = pickle.loads(pickle.dumps(back))
    assert back.traces == batch.traces == again.traces and back.differences(batch) == []
    table = OpenTraces()
    ids = [f"{i:032x}" for i in range(50)]
    table.append(ids[::2], np.zeros(25), np.ones(25, np.int64), _Source(), np.arange(25))
    lazy = _unpacked_ids(_packed_ids(ids))
    assert table.lookup(lazy, table.hashes_of(lazy)).tolist() == table.lookup(ids).tolist()
    assert table.lookup(ids).tolist() == [i // 2 if i % 2 == 0 else -1 for i in range(50)]
