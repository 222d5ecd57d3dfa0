"""Inline SVG charts, drawn here so that the report needs no library and no network to be viewed.

Every chart is a pure function from typed chart data (``aggregator.report.model``) to SVG markup. Every
string that came from the logs (route names, query text, service names) goes through ``esc`` before it is
placed in markup; numbers are formatted here. Marks that carry data have a ``data-mark`` attribute, so a
test (or a reader's devtools) can tell a chart that drew something from an empty frame.
"""

from __future__ import annotations

import html
import math
import time
from collections.abc import Sequence

from aggregator.report.model import BarChart, LineChart, StackedBarChart, Timeline, Unit

PALETTE: tuple[str, ...] = (
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f",
    "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac",
)
STATE_COLOURS = {"pending": "#edc948", "firing": "#e15759", "resolved": "#59a14f"}

WIDTH = 620  # a line chart; two fit side by side on a laptop screen
WIDE = 1240  # bar charts and the timeline span the row
HEIGHT = 220
_PAD_LEFT, _PAD_RIGHT, _PAD_TOP, _PAD_BOTTOM = 64, 16, 14, 28


def esc(text: object) -> str:
    """Text for HTML/SVG content and quoted attributes: ``& < > " '`` escaped."""
    return html.escape(str(text), quote=True)


def colour(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


def fmt(value: float | None, unit: Unit) -> str:
    """A value as a reader wants to see it: ``512 ms``, ``1.24 s``, ``3.5%``, ``120/min``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if unit == "ms":
        if abs(value) >= 1000:
            return f"{value / 1000:.2f} s"
        if abs(value) >= 100:
            return f"{value:.0f} ms"
        if abs(value) >= 10:
            return f"{value:.1f} ms"
        return f"{value:.2f} ms"
    if unit == "ratio":
        return f"{value * 100:.1f}%"
    if unit == "per_min":
        return f"{value:,.1f}/min" if value < 100 else f"{value:,.0f}/min"
    if float(value).is_integer():
        return f"{value:,.0f}"
    return f"{value:,.2f}"


def _axis_label(value: float, unit: Unit) -> str:
    if unit == "ratio":
        return f"{value * 100:g}%"
    if unit == "ms":
        return f"{value / 1000:g} s" if value >= 1000 else f"{value:g} ms"
    return f"{value:g}"


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values covering ``[low, high]`` (1, 2, 2.5 or 5 times a power of ten apart)."""
    if not math.isfinite(low) or not math.isfinite(high):
        return [0.0, 1.0]
    if high <= low:
        high = low + (abs(low) or 1.0)
    raw = (high - low) / max(count, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    start = math.floor(low / step) * step
    ticks: list[float] = []
    value = start
    while value < high + step * 0.5:
        ticks.append(round(value, 10))
        value += step
        if len(ticks) > 50:  # a guard; the arithmetic above never gets here
            break
    if ticks[-1] < high:
        ticks.append(round(ticks[-1] + step, 10))
    return ticks


def _time_ticks(start: int, end: int, count: int = 6) -> list[int]:
    span = max(end - start, 60)
    steps = (60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)
    step = next((s for s in steps if span / s <= count), 86400 * math.ceil(span / (86400 * count)))
    first = math.ceil(start / step) * step
    return list(range(first, end + 1, step))


def _time_label(ts: int, span: int) -> str:
    fmt_ = "%H:%M" if span <= 86400 else "%m-%d %H:%M"
    return time.strftime(fmt_, time.gmtime(ts))


def _frame(chart_id: str, kind: str, title: str, width: int, height: int) -> str:
    return (
        f'<svg class="chart {kind}" id="{esc(chart_id)}" role="img" aria-label="{esc(title)}" '
        f'viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'xmlns="http://www.w3.org/2000/svg">'
    )


def _empty(chart_id: str, kind: str, title: str, message: str, width: int = WIDTH, height: int = 80) -> str:
    return (
        _frame(chart_id, kind + " empty", title, width, height)
        + f'<text class="empty-note" x="{width / 2:.0f}" y="{height / 2:.0f}" text-anchor="middle">'
        + f"{esc(message)}</text></svg>"
    )


def line_chart(chart: LineChart, width: int = WIDTH, height: int = HEIGHT) -> str:
    """Lines over time, one per series, with gaps where a series has no value; y from zero."""
    values = [v for s in chart.series for _, v in s.points if v is not None]
    if not values:
        return _empty(chart.id, "line-chart", chart.title, "no data in this span")
    x0, x1 = chart.start, max(chart.end, chart.start + 1)
    y_max = max(values)
    if chart.y_max is not None:
        y_max = max(y_max, chart.y_max)
    ticks = nice_ticks(0.0, y_max if y_max > 0 else 1.0)
    y_top = ticks[-1]
    plot_w = width - _PAD_LEFT - _PAD_RIGHT
    plot_h = height - _PAD_TOP - _PAD_BOTTOM

    def sx(ts: float) -> float:
        return _PAD_LEFT + (ts - x0) / (x1 - x0) * plot_w

    def sy(v: float) -> float:
        return _PAD_TOP + plot_h - (v / y_top) * plot_h

    out = [_frame(chart.id, "line-chart", chart.title, width, height)]
    out.append('<g class="grid">')
    for t in ticks:
        y = sy(t)
        out.append(f'<line x1="{_PAD_LEFT}" x2="{width - _PAD_RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>')
        out.append(f'<text class="y-label" x="{_PAD_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">'
                   f"{esc(_axis_label(t, chart.unit))}</text>")
    for ts in _time_ticks(x0, x1):
        x = sx(ts)
        out.append(f'<line class="x-tick" x1="{x:.1f}" x2="{x:.1f}" y1="{_PAD_TOP}" y2="{_PAD_TOP + plot_h}"/>')
        out.append(f'<text class="x-label" x="{x:.1f}" y="{height - 8}" text-anchor="middle">'
                   f"{esc(_time_label(ts, x1 - x0))}</text>")
    out.append("</g>")
    if chart.threshold is not None and chart.threshold <= y_top:
        y = sy(chart.threshold)
        out.append(
            f'<line class="threshold" x1="{_PAD_LEFT}" x2="{width - _PAD_RIGHT}" y1="{y:.1f}" y2="{y:.1f}">'
            f"<title>{esc(chart.threshold_label or 'threshold')}: {esc(fmt(chart.threshold, chart.unit))}"
            "</title></line>"
        )
    for index, series in enumerate(chart.series):
        col = colour(index)
        segments: list[list[tuple[float, float]]] = [[]]
        for ts, v in series.points:
            if v is None:
                if segments[-1]:
                    segments.append([])
                continue
            segments[-1].append((sx(ts + chart.step / 2), sy(v)))
        d = " ".join(
            "M" + " L".join(f"{x:.1f},{y:.1f}" for x, y in seg) for seg in segments if len(seg) > 1
        )
        out.append(f'<g class="series" data-series="{index}">')
        if d:
            out.append(f'<path data-mark="line" d="{d}" stroke="{col}"><title>{esc(series.name)}</title></path>')
        # Lone points (a value between two gaps) would draw no line: mark them.
        for seg in segments:
            if len(seg) == 1:
                x, y = seg[0]
                out.append(f'<circle data-mark="point" cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{col}"/>')
        out.append("</g>")
    out.append(
        f'<line class="crosshair" x1="0" x2="0" y1="{_PAD_TOP}" y2="{_PAD_TOP + plot_h}" visibility="hidden"/>'
        f'<rect class="hover-area" x="{_PAD_LEFT}" y="{_PAD_TOP}" width="{plot_w}" height="{plot_h}" '
        f'data-x0="{x0}" data-x1="{x1}" data-step="{chart.step}"/>'
    )
    out.append("</svg>")
    return "".join(out)


def legend(chart: LineChart) -> str:
    items = []
    for index, series in enumerate(chart.series):
        items.append(
            f'<button type="button" class="legend-item" data-chart="{esc(chart.id)}" data-series="{index}">'
            f'<span class="swatch" style="background:{colour(index)}"></span>{esc(series.name)}</button>'
        )
    return f'<div class="legend">{"".join(items)}</div>'


def bar_chart(chart: BarChart, width: int = WIDE) -> str:
    """Horizontal bars, one per labelled value (largest first as given), the value written at the end."""
    bars = [(label, value, detail) for label, value, detail in chart.bars if value is not None]
    if not bars:
        return _empty(chart.id, "bar-chart", chart.title, "nothing to show in this span")
    label_w = 340
    row_h = 22
    height = row_h * len(bars) + 10
    top = max(v for _, v, _ in bars) or 1.0
    plot_w = width - label_w - 90
    out = [_frame(chart.id, "bar-chart", chart.title, width, height)]
    for i, (label, value, detail) in enumerate(bars):
        y = 5 + i * row_h
        w = max(value / top * plot_w, 1.0)
        shown = label if len(label) <= 52 else label[:51] + "…"
        tip = f"{label}: {fmt(value, chart.unit)}" + (f" ({detail})" if detail else "")
        out.append(
            f'<g class="bar"><title>{esc(tip)}</title>'
            f'<text class="bar-label" x="{label_w - 8}" y="{y + 15}" text-anchor="end">{esc(shown)}</text>'
            f'<rect data-mark="bar" x="{label_w}" y="{y + 3}" width="{w:.1f}" height="{row_h - 6}" '
            f'fill="{colour(chart.colour_index)}"/>'
            f'<text class="bar-value" x="{label_w + w + 6:.1f}" y="{y + 15}">{esc(fmt(value, chart.unit))}</text>'
            "</g>"
        )
    out.append("</svg>")
    return "".join(out)


def stacked_bar_chart(chart: StackedBarChart, width: int = WIDE) -> str:
    """One horizontal bar per row, split into parts that add up to the whole (shares of 1)."""
    if not chart.rows:
        return _empty(chart.id, "stacked-bar-chart", chart.title, "nothing to show in this span")
    label_w = 340
    row_h = 22
    height = row_h * len(chart.rows) + 10
    plot_w = width - label_w - 16
    out = [_frame(chart.id, "stacked-bar-chart", chart.title, width, height)]
    for i, (label, parts) in enumerate(chart.rows):
        y = 5 + i * row_h
        shown = label if len(label) <= 52 else label[:51] + "…"
        out.append(f'<g class="stack"><text class="bar-label" x="{label_w - 8}" y="{y + 15}" '
                   f'text-anchor="end">{esc(shown)}<title>{esc(label)}</title></text>')
        x = float(label_w)
        for index, share in enumerate(parts):
            # Shares of overlapping calls can add up to more than the whole: never draw past the end.
            w = min(max(min(share, 1.0), 0.0) * plot_w, label_w + plot_w - x)
            if w <= 0:
                continue
            name = chart.parts[index]
            out.append(
                f'<rect data-mark="bar" x="{x:.1f}" y="{y + 3}" width="{w:.1f}" height="{row_h - 6}" '
                f'fill="{colour(index)}"><title>{esc(label)}: {esc(name)} {share * 100:.1f}%</title></rect>'
            )
            x += w
        out.append("</g>")
    out.append("</svg>")
    return "".join(out)


def stacked_legend(parts: Sequence[str]) -> str:
    items = "".join(
        f'<span class="legend-item static"><span class="swatch" style="background:{colour(i)}"></span>'
        f"{esc(name)}</span>"
        for i, name in enumerate(parts)
    )
    return f'<div class="legend">{items}</div>'


def timeline(chart: Timeline, width: int = WIDE) -> str:
    """Alert rows over time: pending and firing stretches as bars, notifications and resolutions as ticks."""
    if not chart.rows:
        return _empty(chart.id, "timeline", chart.title, "no alert changed state in this span")
    label_w = 340
    row_h = 24
    axis_h = 24
    height = row_h * len(chart.rows) + axis_h + 6
    x0, x1 = chart.start, max(chart.end, chart.start + 1)
    plot_w = width - label_w - 16

    def sx(ts: float) -> float:
        return label_w + (min(max(ts, x0), x1) - x0) / (x1 - x0) * plot_w

    out = [_frame(chart.id, "timeline", chart.title, width, height)]
    out.append('<g class="grid">')
    bottom = row_h * len(chart.rows) + 4
    for ts in _time_ticks(x0, x1):
        x = sx(ts)
        out.append(f'<line class="x-tick" x1="{x:.1f}" x2="{x:.1f}" y1="2" y2="{bottom}"/>')
        out.append(f'<text class="x-label" x="{x:.1f}" y="{bottom + 16}" text-anchor="middle">'
                   f"{esc(_time_label(ts, x1 - x0))}</text>")
    out.append("</g>")
    for i, row in enumerate(chart.rows):
        y = 4 + i * row_h
        shown = row.label if len(row.label) <= 52 else row.label[:51] + "…"
        out.append(f'<g class="timeline-row"><text class="bar-label" x="{label_w - 8}" y="{y + 15}" '
                   f'text-anchor="end">{esc(shown)}<title>{esc(row.label)}</title></text>')
        for seg in row.segments:
            xa, xb = sx(seg.start), sx(seg.end if seg.end is not None else x1)
            fill = STATE_COLOURS.get(seg.state, "#999")
            tip = f"{seg.state} from {_time_label(seg.start, 0)}" + (
                f" to {_time_label(seg.end, 0)}" if seg.end is not None else " (still active)"
            ) + (f": {seg.detail}" if seg.detail else "")
            out.append(
                f'<rect data-mark="{esc(seg.state)}" x="{xa:.1f}" y="{y + 3}" width="{max(xb - xa, 3):.1f}" '
                f'height="{row_h - 8}" fill="{fill}"><title>{esc(tip)}</title></rect>'
            )
        for mark in row.marks:
            x = sx(mark.at)
            fill = STATE_COLOURS.get(mark.state, "#333")
            out.append(
                f'<path data-mark="{esc(mark.state)}" d="M{x:.1f},{y + 1} l5,0 l-5,8 l-5,-8 z" fill="{fill}" '
                f'stroke="#333" stroke-width="0.5"><title>{esc(mark.state)} at {_time_label(mark.at, 0)}'
                f"{': ' + esc(mark.detail) if mark.detail else ''}</title></path>"
            )
        out.append("</g>")
    out.append("</svg>")
    return "".join(out)
