"""One trace drawn as a waterfall for a terminal: one row per operation, nested by parent span.

Offsets are from the start of the request (start = end timestamp - duration; events are written when an
operation ends), bars are scaled to the width available. Every string from the logs goes through
``printable`` so a crafted route or query cannot send escape sequences to the terminal.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from aggregator.insights.records import TraceRecord
from aggregator.insights.text import printable

MIN_BAR = 10
OFFSET_W = 10
DURATION_W = 10
KIND_W = 9


@dataclass(frozen=True, slots=True)
class Row:
    record: TraceRecord
    depth: int


def label(rec: TraceRecord) -> str:
    """What the operation was, in a few words (raw: escape before printing)."""
    status = str(rec.status) if rec.status else ""
    if rec.kind == "request":
        parts = [rec.detail, rec.name, status]
    elif rec.kind == "db":
        parts = [rec.detail or rec.name or "(query)"]
    elif rec.kind == "cache":
        hit = rec.extra
        parts = [rec.name, rec.detail, "" if hit is None else ("hit" if hit else "miss")]
    elif rec.kind == "external":
        parts = [rec.name, rec.detail, status]
    else:
        parts = [rec.name, f"[{rec.detail}]" if rec.detail else "", rec.extra]
    return " ".join(str(p) for p in parts if p)


def order(records: Sequence[TraceRecord]) -> list[Row]:
    """Depth-first rows: roots (no known parent) by start time, each followed by its children by start."""
    def key(r: TraceRecord) -> tuple[float, int, float]:
        # Earlier first; at the same start the enclosing (request, then longer) operation first.
        return (round(r.start, 6), 0 if r.kind == "request" else 1, -r.duration_ms)

    by_span: dict[str, int] = {}
    for i, r in enumerate(records):
        if r.span_id and r.span_id not in by_span:
            by_span[r.span_id] = i
    children: dict[int, list[int]] = {}
    roots: list[int] = []
    for i, r in enumerate(records):
        parent = by_span.get(r.parent_span_id) if r.parent_span_id else None
        if parent is None or parent == i:
            roots.append(i)
        else:
            children.setdefault(parent, []).append(i)
    # Operations whose parent span was never logged hang under the request, when there is one.
    requests = sorted((i for i in roots if records[i].kind == "request"), key=lambda i: key(records[i]))
    if requests:
        top = requests[0]
        for i in roots:
            if i != top and records[i].kind != "request":
                children.setdefault(top, []).append(i)
        roots = [i for i in roots if i == top or records[i].kind == "request"]
    rows: list[Row] = []
    seen: set[int] = set()

    def walk(i: int, depth: int) -> None:
        if i in seen:  # a span id reused by mistake must not loop forever
            return
        seen.add(i)
        rows.append(Row(records[i], depth))
        for c in sorted(children.get(i, ()), key=lambda c: key(records[c])):
            walk(c, depth + 1)

    for i in sorted(roots, key=lambda i: key(records[i])):
        walk(i, 0)
    for i in range(len(records)):  # anything in a parent cycle
        if i not in seen:
            walk(i, 0)
    return rows


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _bar(offset: float, duration: float, span: float, width: int, ascii_only: bool) -> str:
    full, thin = ("#", "|") if ascii_only else ("█", "▏")
    if span <= 0:
        return full * width if duration > 0 else thin
    scale = width / span
    start = min(max(int(offset * scale), 0), width - 1)
    length = round(duration * scale)
    if length <= 0:
        return " " * start + thin
    length = min(length, width - start)
    return " " * start + full * length


def render(records: Sequence[TraceRecord], width: int = 100, *, ascii_only: bool = False) -> str:
    """The waterfall as text (no trailing newline); ``width`` is the terminal's column count."""
    if not records:
        return "no operations"
    rows = order(records)
    request = next((r.record for r in rows if r.record.kind == "request"), None)
    base = request.start if request is not None else min(r.start for r in records)
    end = max(max(r.end for r in records), base)
    span_ms = (end - base) * 1000.0
    fixed = OFFSET_W + DURATION_W + KIND_W + 4  # columns plus separating spaces
    free = max(width - fixed, 2 * MIN_BAR)
    name_w = max(min(free // 2, 70), MIN_BAR)
    bar_w = max(free - name_w - 1, MIN_BAR)

    ellipsis = "~" if ascii_only else "…"
    trace_id = printable(records[0].trace_id)
    if request is not None:
        what = (f"{request.duration_ms:.1f} ms{'  FAILED' if request.failed else ''}  "
                f"{printable(label(request))}")
    else:
        what = "(no request event found)"
    head = f"trace {trace_id}  started {_iso(base)}"
    counts: dict[str, int] = {}
    for r in records:
        counts[r.kind] = counts.get(r.kind, 0) + 1
    summary = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))

    def fit(text: str) -> str:
        return text if len(text) <= width else text[: max(width - 1, 1)] + ellipsis

    lines = [
        head,  # the trace id is never cut: it is what a user copies
        fit(what),
        fit(f"{len(records)} operations ({summary}), {span_ms:.1f} ms from first start to last end"),
        "",
        f"{'offset ms':>{OFFSET_W}} {'dur ms':>{DURATION_W}} {'kind':<{KIND_W}} {'operation':<{name_w}} "
        f"{'0':<{bar_w // 2}}{f'{span_ms:.0f} ms':>{bar_w - bar_w // 2}}",
    ]
    for row in rows:
        r = row.record
        offset_ms = (r.start - base) * 1000.0
        indent = "  " * min(row.depth, 8)
        name = printable(label(r))
        name = (indent + name)
        if len(name) > name_w:
            name = name[: name_w - 1] + ellipsis
        kind = r.kind + (" !" if r.failed else "")
        bar = _bar(offset_ms, r.duration_ms, span_ms, bar_w, ascii_only)
        lines.append(f"{offset_ms:>{OFFSET_W}.1f} {r.duration_ms:>{DURATION_W}.1f} {kind:<{KIND_W}} "
                     f"{name:<{name_w}} {bar}".rstrip())
    return "\n".join(lines)
