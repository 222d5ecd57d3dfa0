"""Datadog's API on plain HTTP: v1 series intake, monitors, dashboards and key validation.

Series (``POST /api/v1/series``): ``DD-API-KEY`` checked (403), ``Content-Type: application/json``, body
deflate- or gzip-compressed or plain, at most 3,200,000 bytes as received and under 62,914,560 bytes
decompressed (413), body ``{"series": [...]}`` with valid names, points, types and tags (400 with
``{"errors": [...]}``), points more than 1 h old or 10 min ahead accepted but not stored (as Datadog does)
and counted in ``dropped_for_age``; success 202 ``{"status": "ok"}``.
Monitors and dashboards (``/api/v1/monitor``, ``/api/v1/dashboard``) also need ``DD-APPLICATION-KEY``.
"""

from __future__ import annotations

import gzip
import itertools
import json
import re
import time
import zlib
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .base import HTTPIntake

MAX_WIRE = 3_200_000
MAX_RAW = 62_914_560
NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_.]{0,199}")
TAG_RE = re.compile(r"[a-z][a-z0-9_\-:./]{0,199}")
MONITOR_QUERY_RE = re.compile(r"^\w+\(last_\d+[mhd]\):.+\s(>=|<=|>|<)\s(-?[\d.]+)$")


class DatadogIntake(HTTPIntake):
    def __init__(self, api_key: str, app_key: str | None = None, **kw: Any) -> None:
        super().__init__(**kw)
        self.api_key = api_key
        self.app_key = app_key
        self.series: list[dict[str, Any]] = []  # accepted points, one dict each
        self.dropped_for_age = 0
        self.monitors: dict[int, dict[str, Any]] = {}
        self.dashboards: dict[str, dict[str, Any]] = {}
        self.writes: list[tuple[str, str]] = []  # (method, path) of every monitor/dashboard change
        self._ids = itertools.count(1000)
        self.clock = time.time

    def handle(self, h: BaseHTTPRequestHandler, method: str, path: str,
               body: bytes) -> tuple[int, Any, dict[str, str]]:
        url = urlsplit(path)
        if h.headers.get("DD-API-KEY") != self.api_key:
            return 403, {"errors": ["Forbidden"]}, {}
        if url.path == "/api/v1/validate" and method == "GET":
            return 200, {"valid": True}, {}
        if url.path == "/api/v1/series" and method == "POST":
            return self._series(h, body)
        if url.path.startswith(("/api/v1/monitor", "/api/v1/dashboard")):
            if not self.app_key or h.headers.get("DD-APPLICATION-KEY") != self.app_key:
                return 403, {"errors": ["Forbidden: application key required"]}, {}
            if url.path.startswith("/api/v1/monitor"):
                return self._monitor(method, url.path, parse_qs(url.query), body)
            return self._dashboard(method, url.path, body)
        return 404, {"errors": ["Not found"]}, {}

    # --- series -----------------------------------------------------------------------------------------

    def _series(self, h: BaseHTTPRequestHandler, body: bytes) -> tuple[int, Any, dict[str, str]]:
        if len(body) > MAX_WIRE:
            return 413, {"errors": ["Request Entity Too Large"]}, {}
        encoding = (h.headers.get("Content-Encoding") or "").lower()
        try:
            if encoding == "deflate":
                d = zlib.decompressobj()
                raw = d.decompress(body, MAX_RAW)
                if d.unconsumed_tail:
                    return 413, {"errors": ["Request Entity Too Large (decompressed)"]}, {}
            elif encoding == "gzip":
                d = zlib.decompressobj(31)
                raw = d.decompress(body, MAX_RAW)
                if d.unconsumed_tail:
                    return 413, {"errors": ["Request Entity Too Large (decompressed)"]}, {}
            elif encoding in ("", "identity"):
                raw = body
            else:
                return 415, {"errors": [f"unsupported Content-Encoding {encoding}"]}, {}
        except (zlib.error, gzip.BadGzipFile):
            return 400, {"errors": ["Malformed compressed body"]}, {}
        if len(raw) >= MAX_RAW:
            return 413, {"errors": ["Request Entity Too Large (decompressed)"]}, {}
        if not (h.headers.get("Content-Type") or "").startswith("application/json"):
            return 400, {"errors": ["Content-Type must be application/json"]}, {}
        try:
            doc = json.loads(raw, parse_constant=_reject_constant)
        except ValueError as exc:
            return 400, {"errors": [f"Invalid JSON: {exc}"]}, {}
        problems: list[str] = []
        accepted: list[dict[str, Any]] = []
        if not isinstance(doc, dict) or not isinstance(doc.get("series"), list):
            return 400, {"errors": ["body must be {\"series\": [...]}"]}, {}
        now = self.clock()
        dropped = 0
        for s in doc["series"]:
            err = _check_series(s)
            if err:
                problems.append(err)
                continue
            for ts, value in s["points"]:
                if ts < now - 3600 or ts > now + 600:
                    dropped += 1
                    continue
                accepted.append({"metric": s["metric"], "timestamp": int(ts), "value": float(value),
                                 "type": s.get("type", "gauge"), "interval": s.get("interval"),
                                 "tags": list(s.get("tags") or []), "host": s.get("host")})
        if problems:
            return 400, {"errors": problems[:20]}, {}
        with self._lock:
            self.series.extend(accepted)
            self.dropped_for_age += dropped
        return 202, {"status": "ok"}, {}

    # --- monitors ---------------------------------------------------------------------------------------

    def _monitor(self, method: str, path: str, query: dict[str, list[str]],
                 body: bytes) -> tuple[int, Any, dict[str, str]]:
        parts = path.rstrip("/").split("/")
        if path.rstrip("/") == "/api/v1/monitor/validate" and method == "POST":
            err = _check_monitor(json.loads(body or b"{}"))
            return (400, {"errors": [err]}, {}) if err else (200, {}, {})
        if len(parts) == 4:  # /api/v1/monitor
            if method == "GET":
                out = list(self.monitors.values())
                if "name" in query:
                    out = [m for m in out if query["name"][0].lower() in m["name"].lower()]
                if "monitor_tags" in query:
                    wanted = set(query["monitor_tags"][0].split(","))
                    out = [m for m in out if wanted <= set(m.get("tags") or [])]
                return 200, out, {}
            if method == "POST":
                doc = json.loads(body or b"{}")
                err = _check_monitor(doc)
                if err:
                    return 400, {"errors": [err]}, {}
                mid = next(self._ids)
                stored = {**doc, "id": mid, "created": time.time(), "overall_state": "No Data"}
                self.monitors[mid] = stored
                self.writes.append((method, path))
                return 200, stored, {}
        elif len(parts) == 5 and parts[4].isdigit():
            mid = int(parts[4])
            if mid not in self.monitors:
                return 404, {"errors": ["Monitor not found"]}, {}
            if method == "GET":
                return 200, self.monitors[mid], {}
            if method == "PUT":
                doc = {**self.monitors[mid], **json.loads(body or b"{}")}
                err = _check_monitor(doc)
                if err:
                    return 400, {"errors": [err]}, {}
                self.monitors[mid] = doc
                self.writes.append((method, path))
                return 200, doc, {}
            if method == "DELETE":
                del self.monitors[mid]
                self.writes.append((method, path))
                return 200, {"deleted_monitor_id": mid}, {}
        return 404, {"errors": ["Not found"]}, {}

    # --- dashboards -------------------------------------------------------------------------------------

    def _dashboard(self, method: str, path: str, body: bytes) -> tuple[int, Any, dict[str, str]]:
        parts = path.rstrip("/").split("/")
        if len(parts) == 4:
            if method == "GET":
                return 200, {"dashboards": [{k: v for k, v in d.items() if k != "widgets"}
                                            for d in self.dashboards.values()]}, {}
            if method == "POST":
                doc = json.loads(body or b"{}")
                err = _check_dashboard(doc)
                if err:
                    return 400, {"errors": [err]}, {}
                did = f"abc-{next(self._ids)}"
                self.dashboards[did] = {**doc, "id": did}
                self.writes.append((method, path))
                return 200, self.dashboards[did], {}
        elif len(parts) == 5:
            did = parts[4]
            if did not in self.dashboards:
                return 404, {"errors": ["Dashboard not found"]}, {}
            if method == "GET":
                return 200, self.dashboards[did], {}
            if method == "PUT":
                doc = json.loads(body or b"{}")
                err = _check_dashboard(doc)
                if err:
                    return 400, {"errors": [err]}, {}
                self.dashboards[did] = {**doc, "id": did}
                self.writes.append((method, path))
                return 200, self.dashboards[did], {}
            if method == "DELETE":
                del self.dashboards[did]
                self.writes.append((method, path))
                return 200, {"deleted_dashboard_id": did}, {}
        return 404, {"errors": ["Not found"]}, {}


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _check_series(s: Any) -> str | None:
    if not isinstance(s, dict):
        return "series item must be an object"
    name = s.get("metric")
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        return f"invalid metric name {name!r}"
    if s.get("type", "gauge") not in ("gauge", "count", "rate"):
        return f"invalid type {s.get('type')!r}"
    if s.get("type") in ("count", "rate") and not (isinstance(s.get("interval"), int) and s["interval"] > 0):
        return f"{name}: count and rate need a positive interval"
    points = s.get("points")
    if not isinstance(points, list) or not points:
        return f"{name}: points must be a non-empty list"
    for p in points:
        if (not isinstance(p, list) or len(p) != 2 or not isinstance(p[0], (int, float))
                or not isinstance(p[1], (int, float)) or isinstance(p[1], bool)):
            return f"{name}: point must be [timestamp, value]"
        if abs(p[1]) > 3.4028234663852886e38:
            return f"{name}: value out of 32-bit float range"
    tags = s.get("tags") or []
    if not isinstance(tags, list):
        return f"{name}: tags must be a list"
    for t in tags:
        if not isinstance(t, str) or not TAG_RE.fullmatch(t):
            return f"{name}: invalid tag {t!r}"
    if not isinstance(s.get("host"), str) or not s["host"]:
        return f"{name}: host missing"
    return None


def _check_monitor(m: Any) -> str | None:
    if not isinstance(m, dict):
        return "monitor must be an object"
    for key in ("type", "query", "name"):
        if not isinstance(m.get(key), str) or not m[key]:
            return f"monitor {key} is required"
    if m["type"] != "query alert":
        return f"unsupported monitor type {m['type']!r}"
    match = MONITOR_QUERY_RE.match(m["query"])
    if not match:
        return f"invalid query {m['query']!r}"
    thresholds = (m.get("options") or {}).get("thresholds") or {}
    critical = thresholds.get("critical")
    if critical is None or float(critical) != float(match.group(2)):
        return "The value provided for parameter 'query' is invalid: critical threshold must match the query"
    warning = thresholds.get("warning")
    if warning is not None:
        op = match.group(1)
        if (op.startswith(">") and float(warning) > float(critical)) or (
                op.startswith("<") and float(warning) < float(critical)):
            return "warning threshold must not be beyond the critical threshold"
    return None


def _check_dashboard(d: Any) -> str | None:
    if not isinstance(d, dict) or not d.get("title"):
        return "dashboard title is required"
    if d.get("layout_type") not in ("ordered", "free"):
        return "layout_type must be ordered or free"
    widgets = d.get("widgets")
    if not isinstance(widgets, list) or not widgets:
        return "widgets are required"
    for w in widgets:
        definition = w.get("definition") if isinstance(w, dict) else None
        if not isinstance(definition, dict) or "type" not in definition:
            return "each widget needs a definition with a type"
        if definition["type"] == "timeseries" and not all(
                isinstance(r, dict) and isinstance(r.get("q"), str) for r in definition.get("requests") or [None]):
            return "timeseries widgets need requests with q"
    return None
