"""The New Relic sink: ``MetricClient.send_batch`` of ``newrelic-telemetry-sdk``, one request at a time.

The SDK's ``Harvester`` logs and drops data when a request fails, so the sink calls ``send_batch`` itself
and turns every non-2xx response (which the SDK returns rather than raises) and every urllib3 error into a
``SinkError`` the delivery stage can act on. Gauges, counts with ``interval.ms``, and summaries of
durations (count, sum, min, max) go out as the Metric API documents them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

from aggregator.model import MetricPoint, SinkError, SinkReport
from aggregator.sinks import validate
from aggregator.sinks.base import (
    AgeLimits,
    AnyPoint,
    Prepared,
    RequestLimits,
    SummaryPoint,
    bump,
    connection_problem,
    error_for_status,
    parse_retry_after,
    scrub,
    scrubbed_loggers,
)

NR_MAX_WIRE = 1_000_000  # bytes on the wire (doc)
NR_MAX_RAW = 64 * 1024 * 1024  # no documented decompressed limit; bounds our memory per request
NR_AGE = AgeLimits(max_age=48 * 3600.0, max_future=24 * 3600.0)
HOSTS = {"us": "metric-api.newrelic.com", "eu": "metric-api.eu.newrelic.com"}
SDK_LOGGERS = ("newrelic_telemetry_sdk", "newrelic_telemetry_sdk.client", "urllib3", "urllib3.connectionpool")


def metric_host_for(region: str | None, host: str | None) -> tuple[str, int]:
    """``NEW_RELIC_METRIC_HOST`` (``host`` or ``host:port``) wins; else the region's Metric API host."""
    if host:
        host = host.strip()
        for scheme in ("https://", "http://"):
            if host.startswith(scheme):
                host = host[len(scheme):]
        host = host.split("/", 1)[0]
        name, sep, port = host.rpartition(":")
        if sep and name and port.isdigit():
            return name, int(port)
        return host, 443
    key = (region or "us").strip().lower()
    if key not in HOSTS:
        raise ValueError(f"NEW_RELIC_REGION must be one of {', '.join(sorted(HOSTS))}, not {region!r}")
    return HOSTS[key], 443


class NewRelicSink:
    """Metrics to New Relic's Metric API through the official Telemetry SDK."""

    age_limits = NR_AGE
    wants_summaries = True

    def __init__(
        self,
        *,
        license_key: str,
        host: str,
        port: int = 443,
        common: dict[str, Any] | None = None,
        ca_certs: str | None = None,
        timeout: float = 10.0,
        max_items: int = 0,
        secrets: Sequence[str] = (),
        name: str = "newrelic",
    ) -> None:
        from newrelic_telemetry_sdk import MetricClient

        from logging_apm import __version__

        self.name = name
        self.host = host
        self.port = port
        self.timeout = timeout
        self.common = {"attributes": dict(common or {})} if common else None
        self.request_limits = RequestLimits(NR_MAX_WIRE, NR_MAX_RAW, max_items)
        self.secrets = [s for s in (*secrets, license_key) if s]
        kwargs: dict[str, Any] = {}
        if ca_certs:
            kwargs["ca_certs"] = ca_certs
        self.client = MetricClient(license_key, host=host, port=port, **kwargs)
        self.client.add_version_info("logging-apm", __version__)

    def prepare(self, points: Sequence[AnyPoint]) -> Prepared:
        out = Prepared()
        room = validate.NR_MAX_ATTRIBUTES - len(self.common["attributes"]) if self.common else validate.NR_MAX_ATTRIBUTES
        for index, point in enumerate(points):
            name = validate.newrelic_metric_name(point.metric, out.cut)
            if name is None:
                bump(out.dropped, "invalid_metric_name")
                continue
            attributes = validate.newrelic_attributes(point.tags, out.cut, room=room)
            item: dict[str, Any]
            if isinstance(point, SummaryPoint):
                if point.count <= 0:
                    continue
                if any(validate.value_problem(v) for v in (point.count, point.sum, point.min, point.max)):
                    bump(out.dropped, "non_finite")
                    continue
                item = {
                    "name": name,
                    "type": "summary",
                    "value": {"count": point.count, "sum": point.sum, "min": point.min, "max": point.max},
                    "interval.ms": int(point.interval) * 1000,
                    "timestamp": int(point.timestamp) * 1000,
                    "attributes": attributes,
                }
            else:
                problem = validate.value_problem(point.value)
                if problem:
                    bump(out.dropped, problem)
                    continue
                item = {"name": name, "value": float(point.value), "timestamp": int(point.timestamp) * 1000}
                if point.type == "count":
                    # For counts (and summaries) the timestamp is the start of the interval: the window start.
                    item["type"] = "count"
                    item["interval.ms"] = max(1, int(point.interval)) * 1000
                item["attributes"] = attributes
            out.items.append(item)
            out.origin.append(index)
        return out

    @staticmethod
    def item_size(item: Any) -> int:
        """A cheap estimate of the item's JSON bytes (``plan_requests`` checks the exact size)."""
        attributes = item["attributes"]
        size = 80 + len(item["name"]) + sum(len(k) + len(str(v)) + 6 for k, v in attributes.items())
        return size + (60 if isinstance(item["value"], dict) else 0) + (30 if "interval.ms" in item else 0)

    def sizes(self, items: Sequence[Any]) -> tuple[int, int]:
        # The SDK's own encoding (Client._create_payload): compact JSON, gzip (wbits 31).
        payload: dict[str, Any] = {"metrics": list(items)}
        if self.common:
            payload["common"] = self.common
        raw = json.dumps([payload], separators=(",", ":")).encode("utf-8")
        return len(self.client._compress_payload(raw)), len(raw)

    def send_items(self, items: Sequence[Any]) -> None:
        import urllib3

        try:
            with scrubbed_loggers(SDK_LOGGERS, self.secrets):
                response = self.client.send_batch(list(items), common=self.common, timeout=self.timeout)
        except urllib3.exceptions.SSLError as exc:
            # A certificate that does not verify is a setting to fix, not a blip to retry.
            raise SinkError(self._clean(f"{self.name}: TLS to {self.host}:{self.port} failed: "
                                        f"{connection_problem(exc)}"),
                            retryable=False) from None
        except urllib3.exceptions.NewConnectionError as exc:
            # Checked first: urllib3 makes it a subclass of ConnectTimeoutError, but it is a refusal.
            raise SinkError(self._clean(f"{self.name}: cannot reach {self.host}:{self.port}: "
                                        f"{connection_problem(exc)}"), retryable=True) from None
        except (urllib3.exceptions.TimeoutError, TimeoutError):
            raise SinkError(f"{self.name}: request to {self.host}:{self.port} timed out after {self.timeout:g} s",
                            retryable=True) from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise SinkError(self._clean(f"{self.name}: cannot reach {self.host}:{self.port}: "
                                        f"{connection_problem(exc)}"), retryable=True) from None
        if response.ok:
            return
        detail = ""
        try:
            detail = response.data.decode("utf-8", "replace")[:300]
        except Exception:  # a reply we cannot read still has a status
            detail = ""
        retry_after = parse_retry_after(response.headers.get("Retry-After"), time.time())
        raise error_for_status(self.name, int(response.status), self._clean(detail), retry_after)

    def _clean(self, text: str) -> str:
        return scrub(text, self.secrets)

    def send(self, points: Sequence[MetricPoint]) -> SinkReport:
        from aggregator.sinks.chunking import send_planned

        return send_planned(self, points)

    def close(self) -> None:
        self.client.close()
