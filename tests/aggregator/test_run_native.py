"""A run whose blocks go through the native scanner and the columnar stages commits exactly what a run
through msgspec events and the object paths commits: every stored window (sketch bytes included), the
trace insights and findings, the counts. Proves the pieces fit together; each piece has its own
equivalence tests (tests/parsers/test_scan.py, test_windows_columns.py, test_insights_columns_native.py)."""

from __future__ import annotations

import functools
import os
import time
from pathlib import Path
from typing import Any

import pytest
from test_insights_logs import Traffic

from aggregator import run as run_module
from aggregator.config import load_config
from aggregator.engine import EngineSettings
from aggregator.insights.findings import counters, load_findings
from aggregator.loggen import generate_events, write_log
from aggregator.run import execute
from aggregator.store import Store
from aggregator.windows import WindowAccumulator
from aggregator.windows_store import WindowsStore
from parsers import scan

NOW = time.time()
START = int(NOW // 60) * 60 - 1800


@pytest.fixture(autouse=True)
def _native_required() -> None:
    if not scan.available:
        if os.environ.get("CI") == "true" and os.environ.get("LOGAPM_NATIVE") != "0":
            pytest.fail("the native scanner (parsers._scan) is not built: pip install -e . compiles it")
        pytest.skip("the native scanner is not built here")


def _state(path: Path) -> tuple[Any, ...]:
    with Store(path) as store:
        windows = [(a.series.family, a.series.tags, a.start, a.width, a.count, a.errors, a.total.hex(),
                    a.min, a.max, sorted(a.counters.items()),
                    None if a.sketch is None else a.sketch.to_bytes(compress=False))
                   for a in WindowsStore(store).all_windows() if a.series.family != "pipeline"]
        findings = [(f.route, f.fingerprint, f.requests, f.executions, f.max_executions, f.time_ms)
                    for f in load_findings(store.conn)]
        return windows, findings, counters(store.conn)


def _run(log: Path, state: Path, native: bool, monkeypatch: pytest.MonkeyPatch,
         **overrides: object) -> tuple[Any, int, int]:
    calls = events = 0
    add_columns = WindowAccumulator.add_columns

    def counting(self: WindowAccumulator, cols: Any) -> None:
        nonlocal calls, events
        calls += 1
        events += cols.n
        add_columns(self, cols)

    with monkeypatch.context() as m:
        m.setattr(scan, "available", native)
        m.setattr(WindowAccumulator, "add_columns", counting)
        # 64 KB blocks: many blocks per run, ordinary lines in most of them
        m.setattr(run_module, "EngineSettings", functools.partial(EngineSettings, chunk_bytes=64 << 10))
        config = load_config(environ={}, overrides={"run.workers": 1, **overrides})
        report = execute(config, inputs=[str(log)], state_path=state, stages=(), warn=lambda msg: None,
                         now=NOW)
    counts = (report.lines, report.events, report.skipped, report.invalid, report.late, report.by_kind)
    return (counts, _state(state)), calls, events


def _both(log: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **overrides: object) -> tuple[Any, int]:
    """Both runs commit the same; the native run's counts and how many events it took as columns."""
    native, native_calls, columns_events = _run(log, tmp_path / "native.db", True, monkeypatch, **overrides)
    objects, object_calls, _ = _run(log, tmp_path / "objects.db", False, monkeypatch, **overrides)
    assert native_calls > 0 and object_calls == 0  # each run took the path it was meant to
    assert native[0] == objects[0]
    assert native[1][0] == objects[1][0]  # windows
    assert native[1][1:] == objects[1][1:]  # findings and counters
    assert native[1][0]  # not vacuous
    return native[0], columns_events


def test_generated_log_commits_the_same(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every kind, ordinary lines among them, small chunks so that a run has many blocks."""
    log = tmp_path / "app.log"
    write_log(log, generate_events(8000, start=START, seconds=900, seed=7), ordinary_every=40)
    _both(log, tmp_path, monkeypatch)


def test_trace_insights_commit_the_same(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Requests with N+1 loops, cache and external calls, tasks: the same findings and trace windows."""
    traffic = Traffic(seed=11, base=(int(NOW) // 60 - 20) * 60)
    traffic.mixed(150)
    log = tmp_path / "traffic.log"
    log.write_bytes(traffic.data())
    _both(log, tmp_path, monkeypatch)


def test_series_cap_commits_the_same(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Over the series cap, the same series fold into `other` either way."""
    log = tmp_path / "app.log"
    write_log(log, generate_events(4000, start=START, seconds=600, seed=3))
    _both(log, tmp_path, monkeypatch, **{"run.max_series_per_metric": 3})


def test_invalid_lines_sprinkled_commit_the_same(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One event line in 500 invalid (a string duration, a missing field, a timestamp out of bounds, in
    turn): the same commit, the same invalid counts, and still nearly every event through the columns (the
    scanner declines the bad lines one by one instead of giving up their blocks)."""
    events = generate_events(8000, start=START, seconds=900, seed=5)
    bad: dict[str, dict[str, Any]] = {
        "bad_duration": {"duration_ms": "12.5"},
        "missing_field": {"apm.kind": "db", "db.system": None},
        "past_timestamp": {"timestamp": "2001-01-01T00:00:00.000Z"},
    }
    changes = list(bad.values())
    for n, i in enumerate(range(250, len(events), 500)):
        events[i] = {**events[i], **changes[n % len(changes)]}
        events[i] = {k: v for k, v in events[i].items() if v is not None}
    log = tmp_path / "app.log"
    write_log(log, events, ordinary_every=40)
    counts, columns_events = _both(log, tmp_path, monkeypatch)
    invalid = counts[3]
    assert set(invalid) == set(bad) and sum(invalid.values()) == 16
    assert columns_events >= 0.95 * counts[1], (columns_events, counts[1])
