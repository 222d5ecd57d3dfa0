"""``ReportData`` -> one self-contained HTML page (inline CSS, inline SVG, one inline script).

Escaping is done in exactly two ways, both here or in ``svg``: text and attributes through ``esc`` (HTML
entities), and the JSON block for the script through ``script_json`` (``<``, ``>``, ``&``, U+2028 and
U+2029 as ``\\uXXXX``, so no string from the logs can end the ``<script>`` element or start a comment).
The page's Content-Security-Policy allows no network access at all and only the report's own script (by
its hash), so even a mistake in escaping could not run an injected script or fetch anything.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
from functools import cache
from importlib import resources
from typing import Any

from aggregator.report import svg
from aggregator.report.model import (
    BarChart,
    Cell,
    Chart,
    LineChart,
    ReportData,
    Section,
    StackedBarChart,
    Table,
    Unit,
)
from aggregator.report.svg import esc, fmt

_SCRIPT = re.compile(r"<script>(.*?)</script>", re.S)
_MARKER = re.compile(r"@@(CSP|TITLE|BODY|DATA)@@")
_JSON_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
_JSON_UNSAFE = re.compile("[<>&\u2028\u2029]")


@cache
def _template() -> tuple[str, str]:
    text = resources.files("aggregator.report").joinpath("template.html").read_text(encoding="utf-8")
    match = _SCRIPT.search(text)
    if match is None:  # pragma: no cover - the template ships with its script
        raise RuntimeError("report template has no script")
    digest = base64.b64encode(hashlib.sha256(match.group(1).encode("utf-8")).digest()).decode("ascii")
    csp = (
        "default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
        f"script-src 'sha256-{digest}'; base-uri 'none'; form-action 'none'"
    )
    return text, csp


def script_json(value: Any) -> str:
    """JSON that is safe inside a ``<script>`` element, whatever strings it holds."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return _JSON_UNSAFE.sub(lambda m: _JSON_ESCAPES[m.group(0)], text)


def _chart_svg(chart: Chart) -> str:
    if isinstance(chart, LineChart):
        return svg.line_chart(chart)
    if isinstance(chart, BarChart):
        return svg.bar_chart(chart)
    if isinstance(chart, StackedBarChart):
        return svg.stacked_bar_chart(chart)
    return svg.timeline(chart)


def _figure(chart: Chart) -> str:
    note = f' <span class="note">{esc(chart.note)}</span>' if chart.note else ""
    wide = "" if isinstance(chart, LineChart) else " wide"
    parts = [f'<figure class="chart-figure{wide}"><figcaption>{esc(chart.title)}{note}</figcaption>']
    if isinstance(chart, LineChart) and len(chart.series) > 1:
        parts.append(svg.legend(chart))
    if isinstance(chart, StackedBarChart):
        parts.append(svg.stacked_legend(chart.parts))
    parts.append(_chart_svg(chart))
    parts.append("</figure>")
    return "".join(parts)


def _cell(cell: Cell) -> tuple[str, str, bool]:
    """(markup, sort key, numeric)"""
    v = cell.value
    if cell.kind in ("num", "ms", "ratio", "count"):
        if v is None or isinstance(v, str):
            return "–", "", True
        unit: Unit = "ms" if cell.kind == "ms" else "ratio" if cell.kind == "ratio" else "count"
        return esc(fmt(float(v), unit)), repr(float(v)), True
    text = "" if v is None else str(v)
    if cell.kind == "code":
        return f"<code>{esc(text)}</code>", text, False
    if cell.kind == "badge":
        css = re.sub(r"[^a-z]", "", (text.split() or [""])[0].lower())
        return f'<span class="badge {css}">{esc(text)}</span>', text, False
    return esc(text), text, False


def _table(table: Table) -> str:
    if not table.rows:
        return ""
    numeric = [False] * len(table.columns)
    rendered_rows = []
    for row in table.rows:
        cells = []
        for i, cell in enumerate(row):
            markup, key, is_num = _cell(cell)
            numeric[i] = numeric[i] or is_num
            cls = ' class="num"' if is_num else ""
            cells.append(f'<td{cls} data-v="{esc(key)}">{markup}</td>')
        rendered_rows.append("<tr>" + "".join(cells) + "</tr>")
    num_class = ' class="num"'
    head = "".join(
        f'<th{num_class if numeric[i] else ""} title="sort">{esc(col)}</th>'
        for i, col in enumerate(table.columns)
    )
    note = f'<p class="notes">{esc(table.note)}</p>' if table.note else ""
    return (
        f'<table class="sortable" id="{esc(table.id)}"><caption>{esc(table.title)}</caption>'
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(rendered_rows)}</tbody></table>{note}"
    )


def _section(section: Section) -> str:
    out = [f'<section class="card" id="{esc(section.id)}"><h2>{esc(section.title)}</h2>']
    if section.intro:
        out.append(f'<p class="intro">{esc(section.intro)}</p>')
    if section.empty and not section.charts and not section.tables:
        out.append(f'<p class="empty-section">{esc(section.empty)}</p>')
    if section.charts:
        out.append('<div class="charts">' + "".join(_figure(c) for c in section.charts) + "</div>")
    out.extend(_table(t) for t in section.tables)
    out.append("</section>")
    return "".join(out)


def _chart_data(data: ReportData) -> dict[str, Any]:
    """What the script needs for tooltips: the line charts' values (already drawn in the SVG)."""
    charts: dict[str, Any] = {}
    for section in data.sections:
        for chart in section.charts:
            if isinstance(chart, LineChart):
                charts[chart.id] = {
                    "unit": chart.unit,
                    "series": [
                        {"name": s.name, "colour": svg.colour(i),
                         "points": [[ts, v] for ts, v in s.points if v is not None]}
                        for i, s in enumerate(chart.series)
                    ],
                }
    return {"charts": charts}


def _utc(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ts))


def render(data: ReportData) -> str:
    """The report page."""
    template, csp = _template()
    span_minutes = (data.end - data.start) / 60
    meta = [
        f"<span>{esc(_utc(data.start))} – {esc(_utc(data.end))} ({span_minutes:,.0f} min of event time)</span>",
        f"<span>{data.step // 60 if data.step >= 60 else data.step}{' min' if data.step >= 60 else ' s'}"
        " per point</span>",
        f"<span>generated {esc(_utc(data.generated_at))}</span>",
        f"<span>store {esc(data.state_path)}</span>",
    ]
    body = [f'<header><h1>{esc(data.title)}</h1><div class="meta">{"".join(meta)}</div></header>']
    body.append(
        "<nav>" + "".join(f'<a href="#{esc(s.id)}">{esc(s.title)}</a>' for s in data.sections) + "</nav>"
    )
    body.append("<main>")
    if data.tiles:
        body.append('<div class="tiles">')
        for tile in data.tiles:
            detail = f'<div class="detail">{esc(tile.detail)}</div>' if tile.detail else ""
            body.append(
                f'<div class="tile {esc(tile.tone)}"><div class="label">{esc(tile.label)}</div>'
                f'<div class="value">{esc(tile.value)}</div>{detail}</div>'
            )
        body.append("</div>")
    body.extend(_section(s) for s in data.sections)
    body.append("</main>")
    notes = "".join(f"<p>{esc(n)}</p>" for n in data.notes)
    body.append(
        f"<footer>{notes}<p>Percentiles come from merged quantile sketches (within 1% of the exact "
        "interpolated value); counts are exact. Times are UTC, event time. Written by logging-apm.</p></footer>"
    )
    values = {
        "CSP": esc(csp),
        "TITLE": esc(data.title),
        "BODY": "\n".join(body),
        "DATA": script_json(_chart_data(data)),
    }
    # One pass over the template's own markers: a marker-like string inside inserted text is never expanded.
    return _MARKER.sub(lambda m: values[m.group(1)], template)
