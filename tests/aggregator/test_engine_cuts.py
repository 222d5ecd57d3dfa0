"""The engine's parts end where windows end (``engine.window_cuts``): each cut of a file moves to the nearest line
within half a part where the lines' window changes, so that no window is sent by two parts; a log where no such
line is found keeps its cuts; whatever the cuts, the run's windows are the same."""

from __future__ import annotations

import calendar
import itertools
import json
import random
import re
from pathlib import Path
from typing import Any

import pytest

from aggregator import engine as engine_mod
from aggregator.engine import EngineSettings, LocalEngine, process_part, window_cuts
from aggregator.loggen import generate_events, write_log
from aggregator.sources import FileSource
from aggregator.windows import WindowState

START = 1_700_000_000.0
NOW = START + 4000.0
STAMP = re.compile(rb'"timestamp":"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)')


def _log(tmp_path: Path, seconds: float = 900, n: int = 6000) -> Path:
    log = tmp_path / "app.log"
    write_log(log, generate_events(n, start=START, seconds=seconds, seed=5), ordinary_every=30)
    return log


def _window(line: bytes, width: int = 60) -> int | None:
    m = STAMP.search(line)
    return None if m is None else calendar.timegm(tuple(map(int, m.groups()))) // width  # type: ignore[arg-type]


def _changes(data: bytes) -> list[int]:
    """The line starts where the window of the timestamped lines goes up (from the last one before to the first
    one from there)."""
    out, last, start = [], None, 0
    for line in data.splitlines(keepends=True):
        w = _window(line)
        if w is not None:
            if last is not None and w > last:
                out.append(start)
            last = w
        start += len(line)
    return out


def _plain_cuts(size: int, parts: int) -> list[int]:
    step = size // parts
    return [i * step for i in range(parts)] + [size]


@pytest.mark.parametrize(("parts", "back", "forward"), [(14, 7, 6), (7, 3, 3)])
def test_cuts_move_to_where_the_window_changes(tmp_path: Path, parts: int, back: int, forward: int) -> None:
    """15 windows of a minute: at 14 parts, about a window a part (a change of window within half a part of each
    cut, on one side or the other); at 7, two changes within reach of most cuts: the nearer is taken."""
    log = _log(tmp_path)
    data = log.read_bytes()
    bounds = _plain_cuts(len(data), parts)
    cuts = list(window_cuts(str(log), bounds, 60))
    assert cuts[0] == bounds[0] and cuts[-1] == bounds[-1] and len(cuts) == len(bounds)
    assert cuts == sorted(set(cuts))
    half = (bounds[1] - bounds[0]) // 2
    changes = _changes(data)
    # (a non-event line just before a window's first event goes with either side: the search takes the event's)
    ahead = {c: c + len(data[c:].split(b"\n", 1)[0]) + 1 for c in changes}
    moved = [0, 0]  # back, forward
    for cut, was in zip(cuts[1:-1], bounds[1:-1], strict=True):
        assert abs(cut - was) <= half + 1
        if cut != was:
            moved[cut > was] += 1
            assert data[cut - 1:cut] == b"\n"  # a line start: the reader starts the next part there
            assert cut in changes or cut in ahead.values()
            # and the nearest change: none closer to the cut it came from
            assert all(abs(c - was) >= abs(cut - was) - (ahead[c] - c) for c in changes)
    assert moved == [back, forward]


def test_a_window_is_sent_by_one_part(tmp_path: Path) -> None:
    """Parts of about a minute each: with the cuts moved, no (series, window) comes from two parts."""
    log = _log(tmp_path)
    source = FileSource([str(log)])
    settings = EngineSettings(now=NOW, workers=2, part_bytes=log.stat().st_size // 15 + 1)
    jobs = LocalEngine(source, settings).plan(source.scan({}))
    seen: dict[tuple[Any, ...], int] = {}
    twice = 0
    for _, pi, task in jobs:
        for agg in process_part(source, task, settings).aggregates:
            key = (agg.series.family, agg.series.tags, agg.start)
            twice += key in seen
            seen[key] = pi
    assert len(jobs) == 15
    assert twice == 0


def _merged(source: FileSource, settings: EngineSettings, jobs: list[Any]) -> dict[Any, Any]:
    state = WindowState()
    for _, _, task in jobs:
        part = process_part(source, task, settings)
        state.merge(part.aggregates, part.max_ts)
    return {k: (a.count, a.errors, a.min, a.max, a.total, sorted(a.counters.items()), a.sketch.to_bytes())
            for k, a in state.aggs.items()}


@pytest.mark.parametrize("part_kb", [48, 100, 300])
def test_the_windows_are_the_same_whatever_the_cuts(tmp_path: Path, part_kb: int,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The same aggregates (totals within float rounding: a window's sum is added in another grouping) from the
    moved cuts, the plain byte cuts and the whole file as one part."""
    log = _log(tmp_path)
    source = FileSource([str(log)])
    tasks = source.scan({})
    settings = EngineSettings(now=NOW, workers=2, part_bytes=part_kb << 10)
    moved = _merged(source, settings, LocalEngine(source, settings).plan(tasks))
    whole = _merged(source, settings, [(0, 0, tasks[0])])
    monkeypatch.setattr(engine_mod, "window_cuts", lambda _path, bounds, _width: iter(bounds))
    plain = _merged(source, settings, LocalEngine(source, settings).plan(tasks))
    for other in (plain, whole):
        assert moved.keys() == other.keys()
        for k, got in moved.items():
            want = other[k]
            assert got[:4] == want[:4] and got[5:] == want[5:], k
            assert got[4] == pytest.approx(want[4], rel=1e-12, abs=1e-9), k


def _cuts_of_lines(tmp_path: Path, lines: list[bytes], parts: int) -> tuple[list[int], list[int]]:
    log = tmp_path / "odd.log"
    log.write_bytes(b"".join(lines))
    bounds = _plain_cuts(log.stat().st_size, parts)
    return bounds, list(window_cuts(str(log), bounds, 60))


def test_cuts_stay_without_timestamps(tmp_path: Path) -> None:
    """Lines without a timestamp, lines longer than a probe, a stamp that is not one: nothing to go by."""
    plain = [json.dumps({"message": f"hello {i}", "level": "info"}).encode() + b"\n" for i in range(5000)]
    bounds, cuts = _cuts_of_lines(tmp_path, plain, 8)
    assert cuts == bounds
    long = [b'{"timestamp":"2026-11-29T10:%02d:00.000Z","pad":"%s"}\n' % (i % 60, b"x" * 9000) for i in range(200)]
    bounds, cuts = _cuts_of_lines(tmp_path, long, 8)
    assert cuts == bounds
    bad = [b'{"timestamp":"2026-11-29T10:xx:00.000Z","i":%d}\n' % i for i in range(20000)]
    bounds, cuts = _cuts_of_lines(tmp_path, bad, 8)
    assert cuts == bounds


def test_cuts_of_a_log_out_of_order_stay_in_order(tmp_path: Path) -> None:
    """Times going back and forth: the search finds some change of window or none, and the cuts stay ascending
    line starts (or where they were) inside the file."""
    rng = random.Random(7)
    lines = [b'{"timestamp":"2026-11-29T%02d:%02d:%02d.000Z","apm.schema":1,"i":%d}\n'
             % (rng.randrange(24), rng.randrange(60), rng.randrange(60), i) for i in range(30000)]
    bounds, cuts = _cuts_of_lines(tmp_path, lines, 12)
    data = b"".join(lines)
    assert cuts[0] == 0 and cuts[-1] == len(data)
    assert all(a < b for a, b in itertools.pairwise(cuts))
    assert all(c == b or data[c - 1:c] == b"\n" for c, b in zip(cuts, bounds, strict=True))


def test_the_run_takes_the_parts_as_planned(tmp_path: Path) -> None:
    """``_plan`` counts the parts first and moves each cut as its part is taken: the same parts as ``plan``."""
    log = _log(tmp_path)
    source = FileSource([str(log)])
    engine = LocalEngine(source, EngineSettings(now=NOW, workers=2, part_bytes=64 << 10))
    tasks = source.scan({})
    count, jobs = engine._plan(tasks)
    planned = engine.plan(tasks)
    assert list(jobs) == planned and count == len(planned) > 10
    assert all(a.end == b.start for (_, _, a), (_, _, b) in itertools.pairwise(planned))
