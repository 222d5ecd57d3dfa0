"""The run's short summary: what was read, parsed, skipped, refused, late; what changed; the slowest routes."""

from __future__ import annotations

from collections.abc import Mapping

from aggregator.catalog import value
from aggregator.insights.text import printable
from aggregator.model import WindowAggregate
from aggregator.run import RunReport


def slowest_routes(routes: Mapping[str, WindowAggregate], limit: int = 5) -> list[tuple[str, float, int]]:
    """(``METHOD route``, p95 ms, requests) over the windows a run touched (merged per route), slowest first."""
    rows: list[tuple[str, float, int]] = []
    for label, span in routes.items():
        p95 = value("request.duration.p95", span)
        if p95 is not None:
            rows.append((label, p95, span.count))
    rows.sort(key=lambda r: (-r[1], r[0]))
    return rows[:limit]


def _n(x: int) -> str:
    return f"{x:,}"


def summary_lines(report: RunReport) -> list[str]:
    lines = [
        f"read {_n(report.lines)} lines ({report.bytes_read / 1e6:,.1f} MB) from {_n(report.files)} "
        f"file(s) in {report.duration:.2f} s",
    ]
    kinds = ", ".join(f"{k} {_n(n)}" for k, n in sorted(report.by_kind.items(), key=lambda kv: -kv[1]))
    lines.append(f"events: {_n(report.events)}" + (f" ({kinds})" if kinds else ""))
    lines.append(f"skipped (not timing events): {_n(report.skipped)}")
    if report.invalid:
        reasons = ", ".join(f"{r} {_n(n)}" for r, n in sorted(report.invalid.items(), key=lambda kv: -kv[1]))
        lines.append(f"invalid: {_n(report.invalid_total)} ({reasons}) -> {report.dead_letter_path}")
    else:
        lines.append("invalid: 0")
    lines.append(f"late (older than the lateness, not counted in a window): {_n(report.late)}")
    lines.append(f"windows updated: {_n(report.windows_updated)} in {_n(report.window_starts)} window(s)"
                 + (f"; queued for {', '.join(report.sinks)}" if report.sinks else "; no sinks configured"))
    for family, n in sorted(report.folded.items()):
        lines.append(f"series cap: {_n(n)} new {family} series folded into 'other'")
    # Route names come from the logs: control characters (ANSI escapes) shown, never sent to the terminal.
    slow = [(printable(label), p95, count) for label, p95, count in slowest_routes(report.routes)]
    if slow:
        lines.append("slowest routes by p95 (windows of this run):")
        width = max(len(r[0]) for r in slow)
        for label, p95, count in slow:
            lines.append(f"  {label:<{width}}  p95 {p95:10,.1f} ms  ({_n(count)} requests)")
    lines.extend(report.trace_lines)
    for stage in report.stages:
        status = "ok" if stage.ok else "FAILED"
        head = f"{stage.name}: {status}"
        if stage.lines:
            lines.append(f"{head}: {stage.lines[0]}")
            lines.extend(f"  {line}" for line in stage.lines[1:])
        else:
            lines.append(head)
    return lines
