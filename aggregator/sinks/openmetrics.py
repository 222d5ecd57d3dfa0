"""The OpenMetrics sink: a text file for node_exporter's textfile collector, written atomically.

node_exporter reads ``*.prom`` files from its textfile directory on every scrape and refuses files with
client-side timestamps, so the file holds one value per series with no timestamp: the series' value in the
newest window delivered so far. Count-type metrics (events in a window) are exposed as gauges, since they
are per-window figures, not ever-growing totals.

The newest window of each series is remembered in a small JSON file beside the output (``.<name>.state``,
which the collector ignores), so a run that only republishes an older window (late events) never moves a
series back in time; series not updated for ``stale_seconds`` leave the file.

Writes follow prometheus/client_python's ``write_to_textfile``: a temporary file in the same directory,
flushed and fsynced, then renamed over the target, so a scrape sees the old file or the new one, never half.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aggregator.model import MetricPoint, SinkError, SinkReport
from aggregator.sinks.base import bump

_NAME_BAD = re.compile(r"[^a-zA-Z0-9_:]")
_LABEL_BAD = re.compile(r"[^a-zA-Z0-9_]")


def metric_name(name: str) -> str:
    out = _NAME_BAD.sub("_", name)
    return out if out and not out[0].isdigit() else "_" + out


def label_name(name: str) -> str:
    out = _LABEL_BAD.sub("_", name)
    if not out or out[0].isdigit():
        out = "_" + out
    return out


def escape_label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def format_value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _help(metric: str) -> str:
    try:
        from aggregator import catalog

        bare = metric.split(".", 1)[1] if "." in metric else metric
        d = catalog.METRICS.get(bare)
        if d is not None and d.doc:
            kind = " (per window)" if d.type == "count" else ""
            return f"{d.doc}{kind} [{metric}]"
    except Exception:  # the catalog is optional for this module; the name alone will do
        pass
    return metric


def render(series: dict[str, dict[str, Any]]) -> str:
    """OpenMetrics text for ``series`` (key -> {"metric", "tags", "value"}), families sorted, ``# EOF``."""
    families: dict[str, list[tuple[str, float]]] = {}
    helps: dict[str, str] = {}
    for entry in series.values():
        family = metric_name(entry["metric"])
        helps.setdefault(family, _help(entry["metric"]))
        labels = ",".join(
            f'{label_name(k)}="{escape_label_value(str(v))}"' for k, v in sorted(entry["tags"])
        )
        families.setdefault(family, []).append((labels, float(entry["value"])))
    lines: list[str] = []
    for family in sorted(families):
        lines.append(f"# TYPE {family} gauge")
        lines.append(f"# HELP {family} {escape_label_value(helps[family])}")
        seen: set[str] = set()
        for labels, value in sorted(families[family]):
            if labels in seen:
                continue  # two tag sets that normalise alike: the first wins
            seen.add(labels)
            lines.append(f"{family}{{{labels}}} {format_value(value)}" if labels else f"{family} {format_value(value)}")
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that a reader sees the old content or the new, never a part."""
    directory = path.parent
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:
        dir_fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


class OpenMetricsSink:
    """The newest value of every series, in one ``.prom`` file."""

    def __init__(self, path: str | os.PathLike[str], *, stale_seconds: float = 900.0,
                 name: str = "openmetrics") -> None:
        self.name = name
        self.path = Path(path)
        self.state_path = self.path.with_name(f".{self.path.name}.state")
        self.stale_seconds = stale_seconds

    def _load(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(self.state_path.read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def send(self, points: Sequence[MetricPoint]) -> SinkReport:
        report = SinkReport()
        if not self.path.parent.is_dir():
            raise SinkError(f"{self.name}: directory {self.path.parent} does not exist", retryable=False)
        series = self._load()
        for point in points:
            if not math.isfinite(point.value):
                bump(report.dropped, "non_finite")
                continue
            key = json.dumps([point.metric, list(map(list, point.tags))])
            old = series.get(key)
            if old is not None and old["timestamp"] > point.timestamp:
                bump(report.dropped, "superseded_by_newer_window")
                continue
            series[key] = {"metric": point.metric, "tags": [list(t) for t in point.tags],
                           "timestamp": point.timestamp, "value": point.value}
            report.sent += 1
        if series:
            newest = max(e["timestamp"] for e in series.values())
            series = {k: e for k, e in series.items() if e["timestamp"] >= newest - self.stale_seconds}
        try:
            write_atomic(self.state_path, json.dumps(series, separators=(",", ":")))
            write_atomic(self.path, render({k: {**e, "tags": [tuple(t) for t in e["tags"]]}
                                            for k, e in series.items()}))
        except OSError as exc:
            raise SinkError(f"{self.name}: cannot write {self.path}: {exc.strerror}", retryable=True) from None
        report.requests += 1
        return report

    def close(self) -> None:
        pass
