"""A block's events as columns: what the native scanner writes, and what the run's stages read.

``EventColumns`` holds, for the ``n`` events of one parsed block in line order, exactly the fields the
worker's stages read (windows and the trace summary), one numpy array per fixed-width field and, per string
field, an ``int32`` code per event into a table of the block's distinct values (in order of first
appearance; -1 is an absent field). It is the same information as the block's ``Event`` objects minus the
fields no stage reads, without one Python object per event: the native scanner (``parsers._scan``) fills
it straight from the bytes, and ``from_events`` builds it from decoded events, as the reference the
scanner and the columnar stages are tested against (two batches are ``equal`` field by field).

Codes and absent values (one place for them: the scanner's C source mirrors this table):

=================  ==========  =====================================================================
column             dtype       value
=================  ==========  =====================================================================
kind               int8        ``KIND_CODES`` (request 0 .. metric 5)
ts                 float64     ``timestamp`` as epoch seconds (as ``TimestampReader`` reads it)
duration_ms        float64     NaN when absent (metrics)
outcome            int8        -1 absent, 0 success, 1 failure
status             int16       ``http.response.status_code``, -1 absent
cache_hit          int8        -1 absent, 0 false, 1 true
task_state         int8        -1 absent, 0 success, 1 failure, 2 retry
queue_wait_ms      float64     ``task.queue_wait_ms``, NaN when absent
metric_type        int8        -1 absent, 0 count, 1 gauge
metric_value       float64     NaN when absent
=================  ==========  =====================================================================

String columns (``STRING_FIELDS``, the ``Event`` attribute names): ``codes[name]`` and ``tables[name]``,
except ``span_id`` and ``parent_span_id``, which share the table ``tables["span_id"]`` so that "is this
operation's parent one of these task spans" is a comparison of codes. From the native scanner that table is
a ``parsers._scan.Strings``, not a list: it reads as the list would (len, index, slices, iteration, ``==``
with a list, pickled as a list) and makes a span id's str only when read, as the columns path reads only
the codes and the table's size (a str per span id was ~4% of ``scan``'s instructions). So is
``tables["trace_id"]``: the trace summary reads its size, and a worker sends it to the parent joined
(``Strings.join``, see ``aggregator.insights.columns.ScannedIds``). ``metric_tags`` holds one entry per metric
event, in order (its dict, or None).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Final

import numpy as np
import numpy.typing as npt

KIND_CODES: Final[dict[str, int]] = {"request": 0, "db": 1, "cache": 2, "external": 3, "task": 4, "metric": 5}
OUTCOMES: Final[dict[str, int]] = {"success": 0, "failure": 1}
TASK_STATES: Final[dict[str, int]] = {"success": 0, "failure": 1, "retry": 2}
METRIC_TYPES: Final[dict[str, int]] = {"count": 0, "gauge": 1}

# The string fields a stage reads, in the order the scanner's C source numbers them.
STRING_FIELDS: Final[tuple[str, ...]] = (
    "service_name", "deployment_environment", "trace_id", "span_id", "parent_span_id",
    "http_request_method", "http_route",
    "db_system", "db_namespace", "db_operation_name", "db_collection_name", "db_query_text",
    "db_query_fingerprint",
    "cache_name", "cache_operation", "peer_service", "external_operation",
    "task_name", "messaging_destination_name", "metric_name",
)
# The string column whose table each string field's codes index (span ids share one table).
TABLE_OF: Final[dict[str, str]] = {name: name for name in STRING_FIELDS} | {"parent_span_id": "span_id"}
# The numeric columns and their dtypes, in the order the scanner's C function returns them.
NUMERIC_FIELDS: Final[dict[str, Any]] = {
    "kind": np.int8, "ts": np.float64, "duration_ms": np.float64, "outcome": np.int8, "status": np.int16,
    "cache_hit": np.int8, "task_state": np.int8, "queue_wait_ms": np.float64, "metric_type": np.int8,
    "metric_value": np.float64,
}

I32 = npt.NDArray[np.int32]


class EventColumns:
    """One block's events as columns (see the module docstring)."""

    __slots__ = ("cache_hit", "codes", "duration_ms", "kind", "metric_tags", "metric_type", "metric_value", "n",
                 "outcome", "queue_wait_ms", "status", "tables", "task_state", "ts")

    n: int
    kind: npt.NDArray[np.int8]
    ts: npt.NDArray[np.float64]
    duration_ms: npt.NDArray[np.float64]
    outcome: npt.NDArray[np.int8]
    status: npt.NDArray[np.int16]
    cache_hit: npt.NDArray[np.int8]
    task_state: npt.NDArray[np.int8]
    queue_wait_ms: npt.NDArray[np.float64]
    metric_type: npt.NDArray[np.int8]
    metric_value: npt.NDArray[np.float64]
    codes: dict[str, I32]
    tables: dict[str, list[str]]
    metric_tags: list[dict[str, str] | None]

    def __len__(self) -> int:
        return self.n

    def strings(self, name: str) -> list[str | None]:
        """The values of one string field, per event (None where absent): for tests and slow paths."""
        table: list[str | None] = [*self.tables[TABLE_OF[name]], None]  # code -1 reads the last entry
        return [table[c] for c in self.codes[name].tolist()]

    def equal(self, other: EventColumns) -> bool:
        """Same events, same codes and tables, the same doubles bit for bit (NaN equal to NaN, -0.0 not
        equal to 0.0)."""
        return not self.differences(other)

    def differences(self, other: EventColumns) -> list[str]:
        """The columns that differ from ``other``'s (empty when ``equal``)."""
        out: list[str] = []
        if self.n != other.n:
            return ["n"]
        for name, dtype in NUMERIC_FIELDS.items():
            a, b = getattr(self, name), getattr(other, name)
            if a.dtype != np.dtype(dtype) or b.dtype != np.dtype(dtype) or a.shape != (self.n,) \
                    or a.tobytes() != b.tobytes():
                # (NaN payloads: both sides write the one quiet NaN, so bytes compare)
                out.append(name)
        for name in STRING_FIELDS:
            a, b = self.codes[name], other.codes[name]
            if a.dtype != np.int32 or b.dtype != np.int32 or not np.array_equal(a, b):
                out.append(name)
        for name in set(TABLE_OF.values()):
            if self.tables[name] != other.tables[name]:
                out.append(f"tables[{name}]")
        if self.metric_tags != other.metric_tags:
            out.append("metric_tags")
        return out


_NAN: Final = math.nan


def _coded(values: Sequence[Any], table: dict[str, int]) -> I32:
    setdefault = table.setdefault
    return np.array([-1 if v is None else setdefault(v, len(table)) for v in values], dtype=np.int32)


def _small(values: Sequence[Any], codes: dict[Any, int], dtype: Any) -> npt.NDArray[Any]:
    return np.array([-1 if v is None else codes[v] for v in values], dtype=dtype)


def from_events(events: Sequence[Any]) -> EventColumns:
    """The columns of decoded events (``parsers.Event``, ``ts`` set): the reference for the scanner."""
    c = EventColumns()
    c.n = len(events)
    c.kind = np.array([KIND_CODES[e.kind] for e in events], dtype=np.int8)
    c.ts = np.array([e.ts for e in events], dtype=np.float64)
    c.duration_ms = np.array([_NAN if e.duration_ms is None else e.duration_ms for e in events], np.float64)
    c.outcome = _small([e.outcome for e in events], OUTCOMES, np.int8)
    c.status = np.array([-1 if e.http_response_status_code is None else e.http_response_status_code
                         for e in events], dtype=np.int16)
    c.cache_hit = np.array([-1 if e.cache_hit is None else int(e.cache_hit) for e in events], dtype=np.int8)
    c.task_state = _small([e.task_state for e in events], TASK_STATES, np.int8)
    c.queue_wait_ms = np.array([_NAN if e.task_queue_wait_ms is None else e.task_queue_wait_ms
                                for e in events], dtype=np.float64)
    c.metric_type = _small([e.metric_type for e in events], METRIC_TYPES, np.int8)
    c.metric_value = np.array([_NAN if e.metric_value is None else e.metric_value for e in events], np.float64)
    tables: dict[str, dict[str, int]] = {}
    c.codes = {}
    for name in STRING_FIELDS:
        if name == "parent_span_id":
            continue  # coded with span_id, event by event (see below)
        table = tables.setdefault(TABLE_OF[name], {})
        if name == "span_id":  # one table for both: each event's span id first, then its parent's
            setdefault = table.setdefault
            spans, parents = [], []
            for e in events:
                spans.append(-1 if e.span_id is None else setdefault(e.span_id, len(table)))
                parents.append(-1 if e.parent_span_id is None else setdefault(e.parent_span_id, len(table)))
            c.codes["span_id"] = np.array(spans, dtype=np.int32)
            c.codes["parent_span_id"] = np.array(parents, dtype=np.int32)
        else:
            c.codes[name] = _coded([getattr(e, name) for e in events], table)
    c.tables = {name: list(t) for name, t in tables.items()}
    c.metric_tags = [e.metric_tags for e in events if e.kind == "metric"]
    return c
