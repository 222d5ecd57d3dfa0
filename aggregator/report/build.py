"""Open a state store read-only, gather the report's data and write the HTML file (atomically).

The alert history belongs to ``alerting``, which sits downstream of the aggregator; this module never
imports it. Whoever composes the report (the ``logapm report`` and ``logapm demo`` commands) passes an
``AlertSource``: a function from an open store and a span to the alert changes.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aggregator.report.data import AlertChange, Extras, NPlusOne, Span, Thresholds, choose_span, gather
from aggregator.report.model import ReportData
from aggregator.report.render import render
from aggregator.sinks.openmetrics import write_atomic  # write-then-rename, fsynced
from aggregator.store import Store
from aggregator.windows_store import WindowsStore

AlertSource = Callable[[Store, Span], list[AlertChange]]


@dataclass(frozen=True, slots=True)
class ReportResult:
    path: Path
    bytes: int
    start: int
    end: int
    sections: int
    charts: int
    empty: bool


def load_findings(store: Store, span: Span) -> list[NPlusOne]:
    from aggregator.insights.findings import load_findings as _load

    return [
        NPlusOne(f.route, f.method, f.fingerprint, f.query_text, f.db_table, f.requests, f.executions,
                 f.max_executions, f.time_ms, f.example_trace_id)
        for f in _load(store.conn, span.start, span.end)
    ]


def collect(
    store: Store,
    *,
    config: Any,
    hours: float = 24.0,
    until: int | None = None,
    alerts: AlertSource | None = None,
    match: Mapping[str, str] | None = None,
    title: str = "logging-apm report",
) -> ReportData | None:
    """The report's data for the newest ``hours`` of event time; None when the store holds no windows."""
    reader = WindowsStore(store)
    window = int(config["run.window_seconds"])
    span = choose_span(reader, window, hours, until=until)
    if span is None:
        return None
    extras = Extras(findings=load_findings(store, span))
    if alerts is not None:
        extras.alerts = alerts(store, span)
    return gather(reader, span=span, window_seconds=window, thresholds=Thresholds.from_config(config),
                  extras=extras, title=title, state_path=str(store.path), match=match)


def write_report(
    state: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    config: Any,
    hours: float = 24.0,
    until: int | None = None,
    alerts: AlertSource | None = None,
    match: Mapping[str, str] | None = None,
    title: str = "logging-apm report",
) -> ReportResult:
    """Write the report of the store at ``state`` to ``out``. Raises ``StoreError`` for a missing or
    foreign store. An empty store still gives a page, which says so."""
    out_path = Path(out)
    with Store(state, readonly=True) as store:
        data = collect(store, config=config, hours=hours, until=until, alerts=alerts, match=match, title=title)
    if data is None:
        import time

        now = int(time.time())
        data = ReportData(title=title, generated_at=now, state_path=str(state), start=now, end=now,
                          step=int(config["run.window_seconds"]),
                          window_seconds=int(config["run.window_seconds"]),
                          notes=["The state store holds no windows yet: run `logapm run` on your logs first."])
    page = render(data)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out_path, page)  # a reader never sees half a report
    size = len(page.encode("utf-8"))
    charts = sum(len(s.charts) for s in data.sections)
    return ReportResult(out_path, size, data.start, data.end, len(data.sections), charts, not data.sections)
