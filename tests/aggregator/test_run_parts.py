"""Pieces of the run: exactly-once dead-letter export, the progress bar, `--since` times, the summary."""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from aggregator.commands.metrics import parse_time
from aggregator.dead_letters import DeadLetters
from aggregator.model import SeriesKey, StageResult, WindowAggregate, make_tags
from aggregator.progress import MIN_BYTES, Progress
from aggregator.run import RunReport
from aggregator.sketch import DDSketch, sketch_of
from aggregator.store import Store
from aggregator.summary import slowest_routes, summary_lines
from parsers.deadletter import read_dead_letters
from parsers.lines import DeadLetter


def _letters(n: int, start: int = 0) -> list[DeadLetter]:
    return [DeadLetter("app.log", start + i, "bad_json", b'{"apm.schema":1,' + str(i).encode()) for i in range(n)]


def test_dead_letter_export_survives_a_killed_export(tmp_path: Path) -> None:
    """An export killed after appending but before recording it is cut back and redone: each letter once."""
    out = tmp_path / "dead.jsonl"
    with Store(tmp_path / "s.db") as store:
        dl = DeadLetters(store)
        with store.transaction():
            dl.record(_letters(3), now=0)
        assert dl.export(out) == 3
        with store.transaction():
            dl.record(_letters(2, start=100), now=0)
        with open(out, "ab") as f:  # what a killed export leaves: bytes appended, position not recorded
            f.write(b'{"source":"app.log","offset":100,"reason":"bad_json","line":"x"}\n{"sourc')
        assert dl.export(out) == 2
        assert dl.export(out) == 0
    got = read_dead_letters(out)
    assert [d.offset for d in got] == [0, 1, 2, 100, 101]
    assert got[0].line == b'{"apm.schema":1,0'


def test_dead_letter_export_starts_a_fresh_file_after_rotation(tmp_path: Path) -> None:
    """When the dead-letter file was rotated away, the next export writes only the new letters."""
    out = tmp_path / "dead.jsonl"
    with Store(tmp_path / "s.db") as store:
        dl = DeadLetters(store)
        with store.transaction():
            dl.record(_letters(4), now=0)
        dl.export(out)
        out.rename(tmp_path / "dead.jsonl.1")
        with store.transaction():
            dl.record(_letters(1, start=50), now=0)
        dl.export(out)
    assert [d.offset for d in read_dead_letters(out)] == [50]


def test_progress_bar_only_on_a_terminal_for_large_inputs() -> None:
    """The bar draws on a TTY for inputs over MIN_BYTES, never otherwise, and clears itself."""
    buf = io.StringIO()
    p = Progress(buf, enabled=True)
    p.start(MIN_BYTES * 2)
    p.update(MIN_BYTES)
    p.finish()
    assert "50.0%" in buf.getvalue() and buf.getvalue().endswith("\r")
    quiet = io.StringIO()
    small = Progress(quiet, enabled=True)
    small.start(1000)
    small.update(500)
    assert quiet.getvalue() == ""
    not_tty = io.StringIO()  # StringIO.isatty() is False
    Progress(not_tty).update(1)
    assert not_tty.getvalue() == ""


def test_parse_time_forms() -> None:
    """--since/--until accept epoch seconds, ISO 8601 (naive = UTC) and durations back from the newest window."""
    assert parse_time("1764410400", 0) == 1764410400
    assert parse_time("2025-11-29T10:00:00Z", 0) == parse_time("2025-11-29T10:00:00", 0) == 1764410400
    assert parse_time("15m", 10_000) == 10_000 - 900
    assert parse_time("2h", 10_000) == 10_000 - 7200
    with pytest.raises(ValueError):
        parse_time("yesterday", 0)


def test_summary_lines() -> None:
    """The summary names lines, events by kind, skipped, invalid by reason, late, windows, the slowest
    routes by p95 and each stage's outcome."""
    rng = np.random.default_rng(0)

    def route(name: str, scale: float) -> WindowAggregate:
        v = rng.lognormal(np.log(scale), 0.5, 500)
        return WindowAggregate(SeriesKey("request", make_tags(route=name, method="GET")), 0, 60, v.size, 0,
                               float(v.sum()), float(v.min()), float(v.max()), {}, sketch_of(v))

    report = RunReport(started_at=0.0, finished_at=1.5, files=2, lines=1234, events=1200,
                       by_kind={"request": 700, "db": 500}, skipped=30, invalid={"bad_json": 3, "bad_duration": 1},
                       late=7, windows_updated=40, window_starts=5, dead_letter_path="/x/dead.jsonl",
                       stages=[StageResult("delivery", ["datadog: 40 points"]),
                               StageResult("alerting", ["failed: boom"], ok=False)])
    for label, agg in {"GET fast/": route("fast/", 10), "GET slow/": route("slow/", 900)}.items():
        report.add_route_window(label, agg)
    text = "\n".join(summary_lines(report))
    for needle in ("1,234 lines", "request 700", "db 500", "skipped (not timing events): 30",
                   "invalid: 4 (bad_json 3, bad_duration 1)", "late", "7", "windows updated: 40",
                   "delivery: ok: datadog: 40 points", "alerting: FAILED: failed: boom"):
        assert needle in text, needle
    assert [r[0] for r in slowest_routes(report.routes)] == ["GET slow/", "GET fast/"]
    assert text.index("GET slow/") < text.index("GET fast/")


@pytest.mark.parametrize("held", [1, 3, 20_000])
def test_routes_merge_the_request_windows_in_order(monkeypatch: pytest.MonkeyPatch, held: int) -> None:
    """``RunReport.routes``, merged when read (or every ``held`` windows), is what merging each request window
    into its route as it came gives: the first one's series and window, its counters left out, the rest
    merged in order (sums to the bit; sketches to the byte)."""
    import aggregator.run as run_module
    from aggregator.catalog import merge_into

    monkeypatch.setattr(run_module, "ROUTE_WINDOWS_HELD", held)
    rng = np.random.default_rng(3)
    windows = [(f"GET {r}", WindowAggregate(SeriesKey("request", make_tags(route=r, method="GET")), 60 * i, 60,
                                            int(n), int(n) // 7, float(v.sum()), float(v.min()), float(v.max()),
                                            {"satisfied": float(n) / 3, "tolerating": 0.1 * i}, sketch_of(v)))
               for i in range(12) for r in ("a/", "b/", "c/")
               for n in [rng.integers(1, 200)] for v in [rng.lognormal(3, 1.2, int(n)) * (0.5 + i % 3)]]
    want: dict[str, WindowAggregate] = {}
    for label, agg in windows:
        cur = want.get(label)
        if cur is None:
            assert isinstance(agg.sketch, DDSketch)
            want[label] = WindowAggregate(agg.series, agg.start, agg.width, agg.count, agg.errors, agg.total,
                                          agg.min, agg.max, {}, agg.sketch.copy())
        else:
            merge_into(cur, agg)
    report = RunReport(started_at=0.0)
    for i, (label, agg) in enumerate(windows):  # some as a worker sends them (sketches not decoded yet)
        report.add_route_window(label, pickle.loads(pickle.dumps(agg)) if i % 2 else agg)
    got = report.routes
    assert list(got) == list(want)
    for label, w in want.items():
        g = got[label]
        assert (g.series, g.start, g.width, g.count, g.errors, repr(g.total), g.min, g.max, repr(g.counters)) == (
            w.series, w.start, w.width, w.count, w.errors, repr(w.total), w.min, w.max, repr(w.counters))
        assert g.sketch is not None and w.sketch is not None and g.sketch.to_bytes() == w.sketch.to_bytes()
    assert report.routes is got and list(report.routes) == list(want)


def test_engine_pool_handler_does_not_wait_on_the_result_pipe() -> None:
    """engine._Pool overrides a private method of multiprocessing's Pool: if a Python release renamed it,
    the override would silently do nothing (the handler thread busy-looping again). The method must exist,
    be what Pool.__init__ calls, and leave the result pipe out of what the handler waits on."""
    import inspect
    from multiprocessing.pool import Pool

    from aggregator.engine import _Pool

    assert "self._get_sentinels()" in inspect.getsource(Pool.__init__)
    pool = _Pool(1)
    try:
        sentinels = pool._get_sentinels()  # type: ignore[attr-defined]
        assert pool._outqueue._reader not in sentinels  # type: ignore[attr-defined]
        assert pool.apply(abs, (-3,)) == 3  # and it still runs and returns work
    finally:
        pool.terminate()
        pool.join()


def test_tune_malloc_applies_on_glibc_and_is_a_no_op_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    """engine.tune_malloc sets glibc's malloc options through mallopt (each call must succeed), in a process
    of its own here (it lasts for the process); without glibc it does nothing and says so."""
    import os
    import subprocess
    import sys

    from aggregator import engine

    glibc = bool(hasattr(os, "confstr") and _confstr_glibc())
    code = "from aggregator.engine import tune_malloc; print(tune_malloc())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == str(glibc)

    monkeypatch.setattr(engine.os, "confstr", lambda name: None)  # musl and others: no glibc version
    assert engine.tune_malloc() is False

    def no_such_name(name: str) -> str:
        raise ValueError("unrecognized configuration name")

    monkeypatch.setattr(engine.os, "confstr", no_such_name)
    assert engine.tune_malloc() is False


def test_tune_malloc_on_a_glibc_that_caps_the_mmap_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    """A glibc before 2.35 refuses an mmap threshold above 32 MB: tune_malloc then sets 32 MB and the other
    options; when even that is refused it sets none (the others alone would fix glibc's small default
    threshold) and says so."""
    from aggregator import engine

    class FakeMallopt:
        def __init__(self, max_threshold: int) -> None:
            self.max_threshold, self.calls = max_threshold, []

        def __call__(self, param: int, value: int) -> int:
            self.calls.append((param, value))
            return 0 if param == -3 and value > self.max_threshold else 1

    def libc_with(mallopt: FakeMallopt) -> None:
        monkeypatch.setattr(engine.os, "confstr", lambda name: "glibc 2.31")
        monkeypatch.setattr(engine.ctypes, "CDLL", lambda name: type("Libc", (), {"mallopt": mallopt})())

    old = FakeMallopt(32 << 20)
    libc_with(old)
    assert engine.tune_malloc() is True
    assert old.calls == [(-3, 256 << 20), (-3, 32 << 20), (-1, 512 << 20), (-2, 64 << 20), (-8, 1)]

    none = FakeMallopt(0)
    libc_with(none)
    assert engine.tune_malloc() is False
    assert none.calls == [(-3, 256 << 20), (-3, 32 << 20)]


def _confstr_glibc() -> str | None:
    import os

    try:
        return os.confstr("CS_GNU_LIBC_VERSION")
    except (ValueError, OSError):
        return None


def test_cli_parser_for_a_command_parses_as_the_full_one(capsys: pytest.CaptureFixture[str]) -> None:
    """cli.parser_for(["run", ...]) builds the parser from the run command's module alone: the same
    arguments, the same help; anything else (no command, an option first, a command not named after its
    module) gets every command."""
    from aggregator.cli import build_parser, parser_for

    argv = ["run", "--input", "a.log", "-i", "b.log", "--state", "s.db", "--workers", "3", "-q", "--no-progress"]
    fast, full = parser_for(argv), build_parser()
    got, want = vars(fast.parse_args(argv)), vars(full.parse_args(argv))
    assert got.keys() == want.keys() and all(got[k] == want[k] for k in want if k != "func")
    assert got["func"] is want["func"]
    for parser in (fast, full):
        with pytest.raises(SystemExit):
            parser.parse_args(["run", "--help"])
    fast_help, full_help = capsys.readouterr().out.split("usage: ")[1:]
    assert fast_help == full_help
    everything = set(full._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
    assert {"run", "metrics"} <= everything
    assert "alerts" in everything  # alerting.commands: not named after its module
    for other in ([], ["--version"], ["alerts", "--help"], ["no-such-command"]):
        assert set(parser_for(other)._subparsers._group_actions[0].choices) == everything  # type: ignore[union-attr]
    assert set(fast._subparsers._group_actions[0].choices) == {"run"}  # type: ignore[union-attr]
    assert set(parser_for(["metrics"])._subparsers._group_actions[0].choices) == {"metrics"}  # type: ignore[union-attr]


def _engine_on_a_log(tmp_path: Path) -> tuple[Any, list[Any]]:
    from aggregator.engine import EngineSettings, LocalEngine
    from aggregator.loggen import generate_events, write_log
    from aggregator.sources import FileSource

    log = tmp_path / "app.log"
    write_log(log, generate_events(6000, start=1_700_000_000.0, seconds=900, seed=3), ordinary_every=30)
    source = FileSource([str(log)])
    engine = LocalEngine(source, EngineSettings(now=1_700_001_000.0, workers=2, part_bytes=64 << 10))
    return engine, source.scan({})


def test_engine_start_reads_before_it_is_iterated(tmp_path: Path) -> None:
    """LocalEngine.start forks the workers and queues the first parts before it returns (run.py does its
    own setup meanwhile); it then yields what run() yields, in input order, and ends its pool."""
    import multiprocessing as mp
    import time

    engine, tasks = _engine_on_a_log(tmp_path)
    def seen(r: Any) -> tuple[Any, ...]:
        return r.task_index, r.part_index, r.lines, r.events, r.bytes_read, r.checkpoint.offset, r.by_kind

    want = [seen(r) for r in engine.run(tasks)]
    assert len(want) == len(engine.plan(tasks)) > 5
    engine.progress.value = 0
    parts = engine.start(tasks)
    deadline = time.monotonic() + 60
    while engine.bytes_done == 0 and time.monotonic() < deadline:  # nobody has asked for a result yet
        time.sleep(0.01)
    assert engine.bytes_done > 0
    got = [seen(r) for r in parts]
    assert got == want
    assert not mp.active_children()


def test_engine_start_closed_early_ends_its_workers(tmp_path: Path) -> None:
    """A run that fails between start() and its last part closes the iterator: the pool is terminated,
    its workers gone, whether it had yielded nothing yet or some parts."""
    import multiprocessing as mp

    engine, tasks = _engine_on_a_log(tmp_path)
    for taken in (0, 2):
        parts = engine.start(tasks)
        assert mp.active_children()
        for _ in range(taken):
            next(parts)
        parts.close()
        assert not mp.active_children()
