"""What a report shows, as typed data: gathered from the store by ``data``, drawn by ``svg`` and ``render``.

Nothing here is escaped or formatted: labels are the raw strings from the logs, values are numbers (ms for
durations, 0..1 for rates). Escaping happens once, where markup is written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Unit = Literal["ms", "ratio", "per_min", "count"]


@dataclass(frozen=True, slots=True)
class Series:
    """One line on a chart: (bucket start, value or None for a gap)."""

    name: str
    points: tuple[tuple[int, float | None], ...]


@dataclass(frozen=True, slots=True)
class LineChart:
    id: str
    title: str
    unit: Unit
    start: int
    end: int
    step: int  # bucket width in seconds: points are drawn at the middle of their bucket
    series: tuple[Series, ...]
    threshold: float | None = None
    threshold_label: str | None = None
    y_max: float | None = None  # at least this much head room (for example 1.0 for rates)
    note: str = ""


@dataclass(frozen=True, slots=True)
class BarChart:
    id: str
    title: str
    unit: Unit
    bars: tuple[tuple[str, float | None, str], ...]  # label, value, detail for the tooltip
    colour_index: int = 0
    note: str = ""


@dataclass(frozen=True, slots=True)
class StackedBarChart:
    id: str
    title: str
    parts: tuple[str, ...]
    rows: tuple[tuple[str, tuple[float, ...]], ...]  # label, share of each part (0..1)
    note: str = ""


@dataclass(frozen=True, slots=True)
class Segment:
    state: str  # pending, firing
    start: int
    end: int | None  # None: still in that state at the end of the span
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Mark:
    state: str  # resolved, firing (a notification), ...
    at: int
    detail: str = ""


@dataclass(frozen=True, slots=True)
class TimelineRow:
    label: str
    segments: tuple[Segment, ...] = ()
    marks: tuple[Mark, ...] = ()


@dataclass(frozen=True, slots=True)
class Timeline:
    id: str
    title: str
    start: int
    end: int
    rows: tuple[TimelineRow, ...]
    note: str = ""


Chart = LineChart | BarChart | StackedBarChart | Timeline

CellKind = Literal["text", "code", "num", "ms", "ratio", "count", "badge"]


@dataclass(frozen=True, slots=True)
class Cell:
    value: str | float | int | None
    kind: CellKind = "text"


@dataclass(frozen=True, slots=True)
class Table:
    id: str
    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[Cell, ...], ...]
    note: str = ""
    numeric: tuple[bool, ...] = ()  # per column: right-aligned


@dataclass(frozen=True, slots=True)
class Section:
    id: str
    title: str
    intro: str
    charts: tuple[Chart, ...] = ()
    tables: tuple[Table, ...] = ()
    empty: str = ""  # shown instead when the span had nothing for this section


@dataclass(frozen=True, slots=True)
class Tile:
    """A headline number at the top of the report."""

    label: str
    value: str
    detail: str = ""
    tone: Literal["neutral", "good", "warn", "bad"] = "neutral"


@dataclass(slots=True)
class ReportData:
    title: str
    generated_at: float
    state_path: str
    start: int
    end: int
    step: int
    window_seconds: int
    tiles: list[Tile] = field(default_factory=list)
    sections: list[Section] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
