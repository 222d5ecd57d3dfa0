"""One aggregator run (``logapm run``): the steps of the design's "A run of the aggregator".

1. take the run lock (a second concurrent run raises ``LockedError`` at once);
2. scan the sources from their checkpoints;
3. read + parse + accumulate in parallel (``aggregator.engine``), merging partial aggregates in the parent;
   trace records go to the insights' analyzer in input order;
4. in ONE transaction: merge into the stored windows (lateness, series cap), the trace family's aggregates,
   the pipeline's own counts, the advanced checkpoints, the dead letters, an outbox entry per changed
   window and sink, and the run's summary row;
5. after the commit: export the dead letters to their file, then the post-commit stages
   (``POST_COMMIT_STAGES``: delivery, then alerting), each resolved lazily; a stage that is not installed
   is skipped, and one that raises is reported without stopping the next.

A run killed before step 4 commits leaves no trace; one killed after it has counted every line once.
"""

from __future__ import annotations

import os
import time
import traceback
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import orjson

from aggregator import collector, process_exit
from aggregator.catalog import merge_into
from aggregator.checkpoints import CheckpointStore
from aggregator.config import Config
from aggregator.dead_letters import DeadLetters
from aggregator.engine import PART_BYTES, EngineSettings, LocalEngine, task_size
from aggregator.model import RunContext, StageResult, WindowAggregate
from aggregator.optional import optional_attr
from aggregator.outbox import StoreOutbox, configured_sinks
from aggregator.sketch import DDSketch, merged, merged_quick
from aggregator.store import Store, run_lock
from aggregator.windows import WindowState, cap_warning, pipeline_aggregate, stderr_warning
from aggregator.windows_store import WindowsStore

POST_COMMIT_STAGES: Final[tuple[str, ...]] = ("aggregator.delivery:deliver", "alerting.stage:evaluate")
TRACE_ANALYZER: Final = ("aggregator.insights.traces", "TraceAnalyzer")
SPILL_AGGREGATES: Final = 50_000  # run aggregates kept in memory before they are merged into the store
ROUTE_WINDOWS_HELD: Final = 20_000  # request windows kept for RunReport.routes before they are merged
EXIT_OK: Final = 0
EXIT_FAILED: Final = 1  # the run could not be done (bad input path, unusable store): nothing committed
EXIT_USAGE: Final = 2  # bad command line or configuration
EXIT_STAGE_FAILED: Final = 3  # committed, but a post-commit stage (delivery, alerting) reported a failure
EXIT_LOCKED: Final = 75  # EX_TEMPFAIL: another run holds the lock; nothing done, try again later


@dataclass(slots=True)
class RunReport:
    """Everything a run did: the summary prints it, the ``runs`` table stores its counts."""

    started_at: float
    finished_at: float = 0.0
    files: int = 0
    parts: int = 0
    bytes_read: int = 0
    lines: int = 0
    events: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)
    skipped: int = 0
    invalid: dict[str, int] = field(default_factory=dict)
    dead_letters: int = 0
    dead_letter_path: str = ""
    late: int = 0
    windows_updated: int = 0
    window_starts: int = 0
    folded: dict[str, int] = field(default_factory=dict)
    sinks: list[str] = field(default_factory=list)
    outbox_entries: int = 0
    # "METHOD route" -> the run's request windows of the route, merged when ``routes`` is first read (never,
    # for a quiet run: decoding and merging each window's sketch was ~5% of the parent's CPU)
    _routes: dict[str, WindowAggregate] = field(default_factory=dict, repr=False)
    _route_windows: dict[str, list[WindowAggregate]] = field(default_factory=dict, repr=False)
    _route_windows_held: int = 0
    stages: list[StageResult] = field(default_factory=list)
    trace_lines: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def duration(self) -> float:
        return max(0.0, self.finished_at - self.started_at)

    @property
    def invalid_total(self) -> int:
        return sum(self.invalid.values())

    def counts(self) -> dict[str, Any]:
        return {
            "files": self.files, "bytes": self.bytes_read, "lines": self.lines, "events": self.events,
            "by_kind": self.by_kind, "skipped": self.skipped, "invalid": self.invalid, "late": self.late,
            "windows_updated": self.windows_updated, "folded": self.folded,
            "duration_s": round(self.duration, 3),
        }

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.stages)

    @property
    def routes(self) -> dict[str, WindowAggregate]:
        """``METHOD route`` -> the request windows this run wrote for the route, merged (the summary's slowest
        routes)."""
        self._merge_routes()
        return self._routes

    def add_route_window(self, label: str, agg: WindowAggregate) -> None:
        """A request window the run wrote (not changed afterwards), for ``routes``."""
        self._route_windows.setdefault(label, []).append(agg)
        self._route_windows_held += 1
        if self._route_windows_held >= ROUTE_WINDOWS_HELD:
            self._merge_routes()

    def _merge_routes(self) -> None:
        """Each route's windows merged into it as they came (the first one's series and window, its counters
        left out): the exact fields one by one, the sketches in one pass per route (``sketch.merged``: the
        same sketches as merging them one by one, which cost ~10-25 us a window at the end of the run)."""
        for label, aggs in self._route_windows.items():
            cur = self._routes.get(label)
            rest: Sequence[WindowAggregate] = aggs
            if cur is None:
                agg = aggs[0]
                cur = self._routes[label] = WindowAggregate(agg.series, agg.start, agg.width, agg.count,
                                                            agg.errors, agg.total, agg.min, agg.max, {},
                                                            agg.sketch)
                rest = aggs[1:]
            for agg in rest:
                merge_into(cur, agg, sketch=False)
            theirs = [agg.sketch for agg in rest if agg.sketch is not None]
            first = cur.sketch
            if not theirs or type(first) not in (DDSketch, type(None)):
                first = _copy(first)  # as merge_into takes it: a DDSketch of its own
            if theirs:  # merge_into's target sketch: the first's copy, or a new one
                group = [first if first is not None else DDSketch(theirs[0].relative_accuracy), *theirs]
                # The windows a run wrote are mostly in the workers' quick form still: summed from their bytes
                # as they are (merged_quick: the same sketch), ~16 -> ~12.5 ms for the 1M-event log's routes.
                first = merged_quick(group) or merged(group)
            cur.sketch = first
        self._route_windows.clear()
        self._route_windows_held = 0


def _resolve(spec: str) -> Callable[[RunContext], StageResult] | None:
    """``module:function`` -> the function, or None when the module is not installed (yet)."""
    module_name, _, attr = spec.partition(":")
    fn = optional_attr(module_name, attr)
    return fn if callable(fn) else None


def run_stages(ctx: RunContext, stages: Sequence[str] = POST_COMMIT_STAGES) -> list[StageResult]:
    """Run each post-commit stage; an exception (or an import error) becomes a failed StageResult."""
    results: list[StageResult] = []
    for spec in stages:
        name = spec.partition(":")[0].rsplit(".", 1)[-1]
        try:
            fn = _resolve(spec)
            if fn is None:
                continue
            result = fn(ctx)
            if not isinstance(result, StageResult):
                result = StageResult(name=name, lines=[f"returned {type(result).__name__}, not a StageResult"],
                                     ok=False)
        except Exception as exc:  # one stage must never stop the next: report it
            tb = traceback.extract_tb(exc.__traceback__)
            where = f" ({tb[-1].filename}:{tb[-1].lineno})" if tb else ""
            result = StageResult(name=name, lines=[f"failed: {type(exc).__name__}: {exc}{where}"], ok=False)
        results.append(result)
    return results


def dead_letter_path(config: Config, state_path: str | os.PathLike[str]) -> Path:
    configured = config.get("run.dead_letter")
    return Path(configured) if configured else Path(str(state_path) + ".dead-letters.jsonl")


def execute(
    config: Config,
    *,
    inputs: Sequence[str],
    state_path: str | os.PathLike[str],
    now: float | None = None,
    interactive: bool = False,
    progress: Any = None,
    stages: Sequence[str] = POST_COMMIT_STAGES,
    warn: Callable[[str], None] = stderr_warning,
    part_bytes: int | None = None,
) -> RunReport:
    """Do one run. Raises ``LockedError`` (another run is active), ``StoreError``, ``InputError``."""
    from aggregator.sources import FileSource

    started = time.time() if now is None else now
    report = RunReport(started_at=started)

    def _warn(message: str) -> None:
        report.warnings.append(message)
        warn(message)

    # Components register their tables' migrations on import and opening the store applies them: what the
    # read needs is imported first (the insights' analyzer, whose module the workers also use), the
    # post-commit stages while the workers read (``_import_stages``).
    # The collector is off until the read is over (the CLI turns it off before its imports), then on again
    # for the post-commit stages, without walking what the run allocated until then: ``aggregator.collector``.
    with collector.paused():
        analyzer_cls = optional_attr(*TRACE_ANALYZER)
        _locked_run(config, inputs, state_path, started, report, interactive, progress, stages, _warn,
                    FileSource, part_bytes, analyzer_cls)
    return report


def _locked_run(config: Config, inputs: Sequence[str], state_path: str | os.PathLike[str], started: float,
                report: RunReport, interactive: bool, progress: Any, stages: Sequence[str],
                warn: Callable[[str], None], source_cls: Any, part_bytes: int | None, analyzer_cls: Any) -> None:
    with run_lock(state_path), ExitStack() as held:
        # A store that does not exist yet is created once the workers read (``_execute_locked``).
        store = held.enter_context(Store(state_path)) if os.path.exists(state_path) else None
        _execute_locked(store, held, config, inputs, state_path, started, report, interactive, progress, stages,
                        warn, source_cls, part_bytes, analyzer_cls)


def _execute_locked(store: Store | None, held: ExitStack, config: Config, inputs: Sequence[str],
                    state_path: str | os.PathLike[str], started: float, report: RunReport, interactive: bool,
                    progress: Any, stages: Sequence[str], warn: Callable[[str], None], source_cls: Any,
                    part_bytes: int | None, analyzer_cls: Any) -> None:
    source = source_cls(list(inputs))
    # What the plan needs from the store: the checkpoints and the series admitted so far. A new store (None)
    # holds neither, so the workers start without it, and it is created while they read: its creation
    # (tables, the switch to WAL, with their fsyncs: 15-40 ms) no longer delays the read. A first run whose
    # inputs cannot be read still leaves no new, empty store behind: the scan raises before it is created.
    tasks = source.scan(CheckpointStore(store).load() if store is not None else {})
    known = WindowsStore(store).known_series() if store is not None else {}
    report.files = len(tasks)
    workers = int(config.get("run.workers") or 0) or (os.cpu_count() or 2)
    width = int(config["run.window_seconds"])
    cap = int(config["run.max_series_per_metric"])
    settings = EngineSettings(
        window_seconds=width,
        apdex_t_ms=float(config["run.apdex_t_ms"]),
        slow_query_ms=float(config["run.slow_query_ms"]),
        now=started,
        max_future_seconds=float(config["run.max_future_seconds"]),
        max_past_seconds=None,
        workers=workers,
        part_bytes=part_bytes or PART_BYTES,
        traces=analyzer_cls is not None and bool(config.get("run.trace_insights", True)),
        max_series=cap,
        admitted={fam: frozenset(tags) for fam, tags in known.items()},
    )
    engine = make_engine(config, source, settings, lock_path=str(state_path) + ".lock")
    if progress is not None:
        progress.start(sum(max(0, _task_bytes(t)) for t in tasks))
    on_wait = (lambda: progress.update(engine.bytes_done)) if progress is not None else None
    # The workers start on the first parts now: the rest of the setup overlaps their reading.
    parts = engine.start(tasks, on_wait=on_wait)
    try:
        if store is None:
            store = held.enter_context(Store(state_path))
        checkpoints = CheckpointStore(store)
        ws = WindowsStore(store)
        _import_stages(store, stages)
        analyzer = analyzer_cls(store, config) if settings.traces else None
        outbox = StoreOutbox(store, str(config["run.metric_prefix"]))
        sinks = configured_sinks(config)
        report.sinks = sinks
        dead = DeadLetters(store)
        lateness = int(config["run.lateness_seconds"])
        state = WindowState()
        warned: set[str] = set()

        def warn_once(message: str) -> None:  # the cap is met per part and per commit batch: one warning a run
            if message not in warned:
                warned.add(message)
                warn(message)

        changed: set[int] = set()
        new_checkpoints: dict[int, Any] = {}

        def apply(st: WindowState) -> None:
            res = st.apply(ws, lateness_seconds=lateness, max_series=cap, now=started, warn=warn_once)
            report.late += res.late_events
            for fam, n in res.folded.items():
                report.folded[fam] = report.folded.get(fam, 0) + n
            report.windows_updated += res.windows_updated
            changed.update(res.changed_starts)
            for agg in res.request_windows:  # merged per route: the summary's slowest routes
                report.add_route_window(f"{agg.series.tag('method', '?')} {agg.series.tag('route', '?')}", agg)

        # The whole run is one transaction. Aggregates and dead letters go into it as parts finish once they
        # are many (a backlog spanning days), so the parent's memory stays bounded by SPILL_AGGREGATES.
        with store.transaction():
            for part in parts:
                report.parts += 1
                state.merge(part.aggregates, part.max_ts)
                for fam, n in part.folded.items():
                    warn_once(cap_warning(fam, cap))
                    report.folded[fam] = report.folded.get(fam, 0) + n
                report.lines += part.lines
                report.events += part.events
                report.skipped += part.skipped
                report.bytes_read += part.bytes_read
                for k, n in part.by_kind.items():
                    report.by_kind[k] = report.by_kind.get(k, 0) + n
                for k, n in part.invalid.items():
                    report.invalid[k] = report.invalid.get(k, 0) + n
                if part.dead_letters:
                    report.dead_letters += dead.record(part.dead_letters, started)
                if part.checkpoint is not None:
                    new_checkpoints[part.task_index] = part.checkpoint
                if analyzer is not None and part.trace_records:
                    analyzer.feed(part.trace_records)
                if len(state) > SPILL_AGGREGATES:
                    apply(state)
                    state = WindowState(max_ts=state.max_ts)
                if on_wait is not None:
                    on_wait()
            if progress is not None:
                progress.finish()
            if analyzer is not None:
                state.merge(analyzer.finish())
                report.trace_lines = list(getattr(analyzer, "summary_lines", lambda: [])())
            apply(state)
            report.window_starts = len(changed)
            commit_time = time.time()
            report.finished_at = commit_time
            pipe = WindowState()
            pipe.merge([pipeline_aggregate(
                int(commit_time // width) * width, width, read=report.lines, parsed=report.events,
                skipped=report.skipped, invalid=report.invalid_total, late=report.late,
                duration_ms=(commit_time - started) * 1000.0)])
            changed |= pipe.apply(ws, lateness_seconds=10**12, max_series=1, now=started).changed_starts
            checkpoints.save(new_checkpoints.values(), started)
            report.outbox_entries = outbox.enqueue(sinks, changed, started)
            store.conn.execute("INSERT INTO runs (started_at, finished_at, summary) VALUES (?, ?, ?)",
                               (started, commit_time, orjson.dumps(report.counts()).decode()))
    finally:
        parts.close()  # ends the workers of a run that failed before taking every part
        collector.resume()  # for the stages

    store.start_checkpoint()  # the log's copy into the database overlaps the stages
    dl_path = dead_letter_path(config, state_path)
    report.dead_letter_path = str(dl_path)
    export_failed: list[StageResult] = []
    try:
        dead.export(dl_path)
    except OSError as exc:
        message = (f"cannot write dead letters to {dl_path}: {exc.strerror or exc} (they stay in the store; "
                   "the next run retries)")
        warn(message)
        # A failure the operator must see in the exit status too (3: committed, a later part failed).
        export_failed.append(StageResult("dead letters", lines=[message], ok=False))
    ctx = RunContext(store=store, config=config, now=time.time(), changed_windows=set(changed),
                     interactive=interactive)
    report.stages = export_failed + run_stages(ctx, stages)
    report.finished_at = time.time()
    process_exit.keep(analyzer, state)  # freeing them is work the logapm process can skip


def _import_stages(store: Store, stages: Sequence[str]) -> None:
    """Import the post-commit stages' modules and apply the migrations they registered (the store was opened
    before, for the read); a stage that cannot be imported is reported when it runs."""
    for spec in stages:
        try:
            _resolve(spec)
        except Exception:
            pass
    store.migrate()


def _copy(sketch: Any) -> Any:
    # copy() of a sketch as a worker sent it is another undecoded one (no decode, no encode)
    return None if sketch is None else sketch.copy() if type(sketch) is DDSketch else DDSketch.from_bytes(
        sketch.to_bytes(compress=False))


def make_engine(config: Config, source: Any, settings: EngineSettings, *, lock_path: str | None) -> LocalEngine:
    """The engine ``run.engine`` names: ``local`` (a fork pool) or ``dask`` (``aggregator.dask_engine``:
    the same parts and results, computed on a Dask cluster at ``run.dask_scheduler``, else a LocalCluster)."""
    kind = str(config.get("run.engine") or "local")
    if kind == "dask":
        from aggregator.dask_engine import DaskEngine

        return DaskEngine(source, settings, scheduler=config.get("run.dask_scheduler"), lock_path=lock_path)
    if kind != "local":
        raise ValueError(f"run.engine must be local or dask, not {kind!r}")
    return LocalEngine(source, settings, lock_path=lock_path)


def _task_bytes(task: Any) -> int:
    return task_size(task) or 0
