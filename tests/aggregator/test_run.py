"""``logapm run`` end to end: ground truth, reruns, partial lines, rotation, locks, late events, the cap,
post-commit stages, the summary and ``logapm metrics``."""

from __future__ import annotations

import gzip
import json
import shutil
import sys
import time
import types
from pathlib import Path

import pytest
from runhelp import assert_matches, logapm, stored, truth

from aggregator.config import load_config
from aggregator.loggen import generate_events, write_log
from aggregator.model import RunContext, StageResult
from aggregator.outbox import StoreOutbox
from aggregator.run import EXIT_LOCKED, execute, run_stages
from aggregator.store import Store, run_lock
from aggregator.summary import summary_lines

NOW = time.time()
START = int(NOW // 60) * 60 - 1800  # half an hour ago: inside every bound


def _config(**overrides: object):  # type: ignore[no-untyped-def]
    return load_config(environ={}, overrides={"run.workers": 2, **overrides})


def _run(log: Path | list[Path], state: Path, **overrides: object):  # type: ignore[no-untyped-def]
    inputs = [str(p) for p in (log if isinstance(log, list) else [log])]
    return execute(_config(**overrides), inputs=inputs, state_path=state, stages=(), warn=lambda m: None)


@pytest.fixture(scope="module")
def events() -> list[dict]:
    return generate_events(6000, start=START, seconds=900, seed=42)


def test_ground_truth_exact_counts_and_percentiles(tmp_path: Path, events: list[dict]) -> None:
    """Generated logs: every series and window has the exact count, errors, sum, min, max, and p50/p95/p99
    within 1% of numpy's interpolated quantiles; ordinary lines are skipped, not errors."""
    log = tmp_path / "app.log"
    written = write_log(log, events, ordinary_every=50)
    report = _run(log, tmp_path / "state.db")
    assert report.lines == written.events + written.ordinary
    assert report.events == len(events) and report.skipped == written.ordinary
    assert report.invalid == {} and report.late == 0
    assert_matches(tmp_path / "state.db", events)


def test_ground_truth_through_the_worker_pool(tmp_path: Path, events: list[dict]) -> None:
    """Split into many parts over 2 worker processes, the result is the same exact ground truth."""
    log = tmp_path / "app.log"
    write_log(log, events)
    report = execute(_config(), inputs=[str(log)], state_path=tmp_path / "s.db", stages=(), warn=lambda m: None,
                     part_bytes=64 << 10)
    assert report.parts > 10
    assert report.events == len(events)
    assert_matches(tmp_path / "s.db", events)


def test_spilling_aggregates_mid_run_keeps_the_truth(tmp_path: Path, events: list[dict],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """With a tiny in-memory bound the run merges its aggregates into the store part by part (inside the
    one transaction); the stored result is still the exact ground truth."""
    monkeypatch.setattr("aggregator.run.SPILL_AGGREGATES", 50)
    log = tmp_path / "app.log"
    write_log(log, events)
    report = execute(_config(), inputs=[str(log)], state_path=tmp_path / "s.db", stages=(), warn=lambda m: None,
                     part_bytes=64 << 10)
    assert report.parts > 10 and report.windows_updated > len(truth(events))  # windows were written repeatedly
    assert_matches(tmp_path / "s.db", events)


def test_rerun_counts_nothing_twice(tmp_path: Path, events: list[dict]) -> None:
    """A second run with no new lines reads nothing; appended lines are read once."""
    log, state = tmp_path / "app.log", tmp_path / "state.db"
    write_log(log, events[:3000])
    _run(log, state)
    again = _run(log, state)
    assert again.lines == 0 and again.events == 0
    write_log(log, events[3000:])
    third = _run(log, state)
    assert third.events == len(events) - 3000
    assert_matches(state, events)


def test_partial_last_line_waits_for_the_next_run(tmp_path: Path, events: list[dict]) -> None:
    """A line without its newline is left for the next run, then counted once when complete."""
    log, state = tmp_path / "app.log", tmp_path / "state.db"
    write_log(log, events[:100])
    last = json.dumps(events[100]).encode()
    with open(log, "ab") as f:
        f.write(last[:57])
    first = _run(log, state)
    assert first.events == 100
    with open(log, "ab") as f:
        f.write(last[57:] + b"\n")
    second = _run(log, state)
    assert second.events == 1 and second.invalid == {}
    assert_matches(state, events[:101])


def test_rotation_by_rename_and_gzip(tmp_path: Path, events: list[dict]) -> None:
    """Rotation by rename (lines appended to the old file after the last run included) and a later gzip of
    the rotated file: every line counted exactly once."""
    log, state = tmp_path / "app.log", tmp_path / "state.db"
    write_log(log, events[:2000])
    _run([tmp_path / "app.log*"], state)
    write_log(log, events[2000:2500])  # written after the run, before rotation
    log.rename(tmp_path / "app.log.1")
    write_log(log, events[2500:4000])
    _run([tmp_path / "app.log*"], state)
    with open(tmp_path / "app.log.1", "rb") as src, gzip.open(tmp_path / "app.log.1.gz", "wb") as dst:
        shutil.copyfileobj(src, dst)
    (tmp_path / "app.log.1").unlink()
    write_log(log, events[4000:])
    _run([tmp_path / "app.log*"], state)
    assert_matches(state, events)


def test_copytruncate(tmp_path: Path, events: list[dict]) -> None:
    """copytruncate rotation (copy, then truncate in place): the new lines after the truncation are read."""
    log, state = tmp_path / "app.log", tmp_path / "state.db"
    write_log(log, events[:3000])
    _run(log, state)
    shutil.copy(log, tmp_path / "app.log.1")
    with open(log, "r+b") as f:
        f.truncate(0)
    write_log(log, events[3000:3100])
    report = _run(log, state)
    assert report.events == 100
    assert_matches(state, events[:3100])


def test_second_concurrent_run_exits_at_once(tmp_path: Path) -> None:
    """While a run holds the lock, `logapm run` exits at once with status 75 and says why."""
    log, state = tmp_path / "app.log", tmp_path / "state.db"
    write_log(log, generate_events(10, start=START, seed=1))
    with run_lock(state):
        t0 = time.monotonic()
        proc = logapm("run", "--input", str(log), "--state", str(state))
        elapsed = time.monotonic() - t0
    assert proc.returncode == EXIT_LOCKED
    assert "another logapm run holds the lock" in proc.stderr
    assert elapsed < 60  # "at once": it never waits for the lock (generous bound for a loaded machine)
    assert not state.exists() or stored(state) == {}


def test_late_events_update_their_window_or_are_counted(tmp_path: Path) -> None:
    """Within the lateness a late event updates its window and requeues it for the sinks; older events are
    counted as late (summary and apm.pipeline.events.late), not lost silently."""
    log, state = tmp_path / "app.log", tmp_path / "state.db"
    recent = generate_events(200, start=START + 600, seconds=60, seed=3)
    write_log(log, recent)
    _run(log, state, **{"run.lateness_seconds": 300})
    late_ok = generate_events(20, start=START + 360, seconds=30, seed=4)  # 4-5 min before: within lateness
    too_late = generate_events(30, start=START, seconds=30, seed=5)  # 10 min before: beyond
    write_log(log, late_ok + too_late)
    report = _run(log, state, **{"run.lateness_seconds": 300})
    assert report.late == len(too_late)
    assert any("late" in line and "30" in line for line in summary_lines(report))
    assert_matches(state, recent + late_ok)
    proc = logapm("metrics", "--state", str(state), "--format", "json", "--metric", "apm.pipeline.events.late")
    assert sum(json.loads(x)["value"] for x in proc.stdout.splitlines()) == len(too_late)


def test_late_window_is_republished(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A delivered window becomes pending again when a late event changes it, and renders the new values."""
    monkeypatch.setattr("aggregator.run.configured_sinks", lambda config: ["test"])
    log, state = tmp_path / "app.log", tmp_path / "state.db"
    first = [e for e in generate_events(200, start=START + 600, seconds=60, seed=6) if e["apm.kind"] == "request"]
    write_log(log, first)
    _run(log, state)
    window = START + 600
    with Store(state) as store:
        box = StoreOutbox(store)
        pending = box.pending("test", now=time.time())
        assert window in {d.window_start for d in pending}
        box.delivered("test", [d.id for d in pending])
        assert box.pending("test", now=time.time()) == []
    late = [e for e in generate_events(100, start=window, seconds=60, seed=7) if e["apm.kind"] == "request"]
    write_log(log, late)
    _run(log, state)
    with Store(state) as store:
        again = {d.window_start: d for d in StoreOutbox(store).pending("test", now=time.time())}
    assert window in again
    count = sum(p.value for p in again[window].points if p.metric == "apm.request.count")
    assert count == len(first) + len(late)


def test_series_cap_folds_excess_into_other(tmp_path: Path) -> None:
    """With run.max_series_per_metric = 3, extra routes fold into route=other, counts stay exact, one warning."""
    log, state = tmp_path / "app.log", tmp_path / "state.db"
    evs = [e for e in generate_events(3000, start=START, seconds=60, seed=8) if e["apm.kind"] == "request"]
    write_log(log, evs)
    warnings: list[str] = []
    report = execute(_config(**{"run.max_series_per_metric": 3}), inputs=[str(log)], state_path=state,
                     stages=(), warn=warnings.append)
    got = stored(state)
    request = {k: a for k, a in got.items() if k[0] == "request"}
    assert len({k[1] for k in request}) == 4
    assert any(dict(k[1]).get("route") == "other" for k in request)
    assert sum(a.count for a in request.values()) == len(evs)
    assert len([w for w in warnings if "request" in w]) == 1 and report.folded["request"] > 0


def test_invalid_lines_are_dead_lettered_once(tmp_path: Path, events: list[dict]) -> None:
    """Invalid lines are counted by reason and written to the dead-letter file exactly once, across runs."""
    from parsers.deadletter import read_dead_letters

    log, state = tmp_path / "app.log", tmp_path / "state.db"
    write_log(log, events[:100])
    with open(log, "ab") as f:
        f.write(b'{"apm.schema":1,"apm.kind":"request","timestamp":"2026-01-01T00:00:00.000Z",\n')
        f.write(b'{"apm.schema":1,"apm.kind":"teleport","timestamp":"2026-01-01T00:00:00.000Z"}\n')
    report = _run(log, state)
    assert report.invalid_total == 2 and report.events == 100
    _run(log, state)
    letters = read_dead_letters(Path(str(state) + ".dead-letters.jsonl"))
    assert len(letters) == 2 and len({(d.source, d.offset) for d in letters}) == 2


def test_post_commit_stages_are_isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stage that raises is reported as failed; the next stage still runs; a missing module is skipped."""
    calls: list[str] = []

    def boom(ctx: RunContext) -> StageResult:
        calls.append("boom")
        raise RuntimeError("vendor exploded")

    def fine(ctx: RunContext) -> StageResult:
        calls.append("fine")
        return StageResult(name="fine", lines=["did it"])

    mod = types.ModuleType("c2_fake_stages")
    mod.boom, mod.fine = boom, fine  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "c2_fake_stages", mod)
    ctx = RunContext(store=None, config=None, now=0.0)
    results = run_stages(ctx, ("c2_fake_stages:boom", "c2_not_installed_module:x", "c2_fake_stages:fine"))
    assert calls == ["boom", "fine"]
    assert [r.ok for r in results] == [False, True]
    assert "vendor exploded" in results[0].lines[0]


def test_cli_summary_and_metrics(tmp_path: Path, events: list[dict]) -> None:
    """`logapm run` prints the summary (lines, events by kind, skipped, invalid, late, windows, slowest
    routes); `logapm metrics --format json` prints one point per line with the documented keys."""
    log, state = tmp_path / "app.log", tmp_path / "state.db"
    write_log(log, events, ordinary_every=100)
    proc = logapm("run", "--input", str(log), "--state", str(state), "--workers", "2")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for needle in ("lines", "events:", "request", "skipped", "invalid: 0", "late", "windows updated",
                   "slowest routes by p95"):
        assert needle in out, (needle, out)
    proc = logapm("metrics", "--state", str(state), "--format", "json", "--metric", "apm.request.count")
    rows = [json.loads(x) for x in proc.stdout.splitlines()]
    assert rows and all(set(r) == {"metric", "tags", "timestamp", "value", "type"} for r in rows)
    assert sum(r["value"] for r in rows) == sum(1 for e in events if e["apm.kind"] == "request")
    assert {r["type"] for r in rows} == {"count"}
    table = logapm("metrics", "--state", str(state), "--format", "table", "--metric", "apm.request.duration.p95",
                   "--since", "2h")
    assert table.returncode == 0 and "apm.request.duration.p95" in table.stdout


def test_truth_helper_is_not_vacuous(events: list[dict]) -> None:
    """The ground truth covers every family the generator produces (so the comparisons above mean something)."""
    families = {k[0] for k in truth(events)}
    assert {"request", "db", "cache", "external", "task", "task.queue_wait", "metric:db.pool.utilization",
            "metric:celery.queue.depth", "metric:stories.published"} <= families


def test_routes_are_the_request_windows_merged_one_by_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``RunReport.routes`` (each route's sketches merged in one pass) is, field for field and sketch bit for bit,
    what the previous merge gives from the same windows (each one into its route as it came: the first one's
    series, window and sketch copy, its counters left out), and so is the summary: over a first run whose
    extra routes fold into `other` (the series cap), then a second run on the same store whose late events
    update stored windows (some beyond the lateness), with several applies and the held windows merged in
    batches."""
    import aggregator.run as run_module
    from aggregator.catalog import merge_into
    from aggregator.model import WindowAggregate
    from aggregator.run import RunReport
    from aggregator.summary import slowest_routes

    monkeypatch.setattr(run_module, "ROUTE_WINDOWS_HELD", 7)
    monkeypatch.setattr(run_module, "SPILL_AGGREGATES", 40)
    seen: list[tuple[str, WindowAggregate]] = []
    add = RunReport.add_route_window

    def record(self: RunReport, label: str, agg: WindowAggregate) -> None:
        seen.append((label, agg))
        add(self, label, agg)

    monkeypatch.setattr(RunReport, "add_route_window", record)

    def one_by_one() -> dict[str, WindowAggregate]:  # RunReport._merge_routes before sketch.merged
        out: dict[str, WindowAggregate] = {}
        for label, agg in seen:
            cur = out.get(label)
            if cur is None:
                out[label] = WindowAggregate(agg.series, agg.start, agg.width, agg.count, agg.errors, agg.total,
                                             agg.min, agg.max, {}, run_module._copy(agg.sketch))
            else:
                merge_into(cur, agg)
        return out

    log, state = tmp_path / "app.log", tmp_path / "state.db"
    settings = {"run.max_series_per_metric": 4, "run.lateness_seconds": 300}
    write_log(log, generate_events(3000, start=START + 300, seconds=600, seed=21))
    late_ok = generate_events(300, start=START + 700, seconds=120, seed=22)  # updates stored windows
    too_late = generate_events(100, start=START, seconds=60, seed=23)
    reports = [_run(log, state, **settings)]
    write_log(log, late_ok + too_late + generate_events(500, start=START + 900, seconds=120, seed=24))
    seen_first = len(seen)
    reports.append(_run(log, state, **settings))
    assert reports[0].folded.get("request") and reports[1].late == len(too_late)
    assert 0 < seen_first < len(seen)
    for report, windows in ((reports[0], seen[:seen_first]), (reports[1], seen[seen_first:])):
        seen[:] = windows
        want, got = one_by_one(), report.routes
        assert list(got) == list(want) and any(label.endswith(" other") for label in got)
        for label, w in want.items():
            g = got[label]
            assert (g.series, g.start, g.width, g.count, g.errors, repr(g.total), repr(g.min), repr(g.max),
                    repr(g.counters)) == (w.series, w.start, w.width, w.count, w.errors, repr(w.total),
                                          repr(w.min), repr(w.max), repr(w.counters))
            assert g.sketch is not None and w.sketch is not None
            assert (g.sketch.pos.offset, g.sketch.pos.counts.tolist(), g.sketch.zero_count) == (
                w.sketch.pos.offset, w.sketch.pos.counts.tolist(), w.sketch.zero_count)
            assert g.sketch.to_bytes() == w.sketch.to_bytes()
        assert slowest_routes(got, limit=100) == slowest_routes(want, limit=100)
