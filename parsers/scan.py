"""The native scanner's wrapper: a block of event lines straight to ``EventColumns``, or None.

``scan_range(data, past_limit, future_limit, max_line_bytes)`` returns ``(lines, skipped, columns, stop)``
for a range ``data[:stop]`` of whole lines that the reference (``LineParser.parse`` then
``columns.from_events``) reads as nothing but events and skipped lines, with the same counts and
bit-identical columns; None whenever the scanner is not sure of that (then the caller runs the reference on
all of ``data``). ``stop`` is ``len(data)``, or the offset where a declined line starts: a line holding
``apm.schema`` that is not an event the scanner is sure of (an invalid line, typically); the caller has the
reference read that line alone and scans on after it. ``scan(...)`` is the whole block or None: its
``(lines, skipped, columns)`` when ``stop == len(data)``. Neither raises. ``past_limit``/``future_limit`` are
``now - max_past_seconds`` and ``now + max_future_seconds``: an event is kept iff
``past_limit <= ts <= future_limit``, as ``parsers.timestamps.TimestampReader`` decides.

What the scanner accepts, and where it gives up, is described in ``parsers/_scan.c``; the proof that its
results equal the reference's is ``tests/parsers/test_scan.py``.

``available`` is False when the extension was not built (it is optional) or ``LOGAPM_NATIVE=0``.
"""

from __future__ import annotations

from types import ModuleType
from typing import Final

import numpy as np

from logging_apm._native import load as load_native
from parsers.columns import NUMERIC_FIELDS, STRING_FIELDS, EventColumns

_native: ModuleType | None = load_native("parsers._scan")
available: bool = _native is not None

# the dtypes of the C function's columns, in the order of its offsets: NUMERIC_FIELDS, then the codes
_DTYPES: Final = [np.dtype(t) for t in NUMERIC_FIELDS.values()] + [np.dtype(np.int32)] * len(STRING_FIELDS)
_NUMERIC: Final = len(NUMERIC_FIELDS)


def scan(data: bytes | memoryview, past_limit: float, future_limit: float,
         max_line_bytes: int) -> tuple[int, int, EventColumns] | None:
    """``(lines, skipped, columns)`` of the whole of ``data``, or None (see the module docstring)."""
    got = scan_range(data, past_limit, future_limit, max_line_bytes)
    if got is None or got[3] != len(data):
        return None
    return got[0], got[1], got[2]


def scan_range(data: bytes | memoryview, past_limit: float, future_limit: float,
               max_line_bytes: int) -> tuple[int, int, EventColumns, int] | None:
    """``(lines, skipped, columns, stop)`` of ``data[:stop]``, or None (see the module docstring). ``data``
    may be a memoryview (of bytes): the C function reads the buffer in place."""
    if _native is None:
        return None
    try:
        raw = _native.scan(data, float(past_limit), float(future_limit), int(max_line_bytes))
        if raw is None:
            return None
        lines, skipped, n, arena, offsets, tables, tags, stop = raw
        # every column a view of the one arena (no copy): NUMERIC_FIELDS' then STRING_FIELDS' order
        views = [np.frombuffer(arena, dtype, n, off) for dtype, off in zip(_DTYPES, offsets, strict=True)]
        c = EventColumns()
        c.n = n
        for name, view in zip(NUMERIC_FIELDS, views[:_NUMERIC], strict=True):
            setattr(c, name, view)
        c.codes = dict(zip(STRING_FIELDS, views[_NUMERIC:], strict=True))
        c.tables = {name: table for name, table in zip(STRING_FIELDS, tables, strict=True)
                    if name != "parent_span_id"}
        c.metric_tags = tags
        return lines, skipped, c, stop
    except Exception:  # a bug: the reference decides
        return None
