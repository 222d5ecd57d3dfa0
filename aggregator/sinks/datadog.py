"""The Datadog sink: ``api.Metric.send`` of the ``datadog`` package, one v1 series request at a time.

The SDK keeps its settings in module globals and its timeout backoff on the ``APIClient`` class, so the sink
sets what it needs before every request: its own key, endpoint and host name, ``mute=False`` (errors
raise), no transport retries (the delivery stage retries, with backoff and jitter), and a cleared backoff
state (a process that once saw three timeouts would otherwise refuse to send for five minutes).

The SDK raises without the response; ``_RecordingClient`` (the SDK's own requests client with a response
hook) keeps the last response so that the status and ``Retry-After`` are known.
"""

from __future__ import annotations

import json
import threading
import time
import zlib
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

DD_MAX_WIRE = 3_200_000  # compressed payload (doc)
DD_MAX_RAW = 62_914_560  # decompressed payload, exclusive (doc)
DD_AGE = AgeLimits(max_age=3600.0, max_future=600.0)
SDK_LOGGERS = ("datadog", "datadog.api", "urllib3", "urllib3.connectionpool")


def api_host_for(site: str | None, host: str | None) -> str:
    """``DATADOG_HOST`` (a full URL, as the SDK itself reads it) wins; else ``https://api.<DD_SITE>``."""
    if host:
        return host.rstrip("/")
    site = (site or "datadoghq.com").strip().strip("/")
    if site.startswith(("http://", "https://")):
        return site
    if site.startswith("api."):
        site = site[4:]
    return f"https://api.{site}"


def _recording_client() -> Any:
    import requests
    import requests.adapters
    from datadog.api.http_client import RequestClient, _get_user_agent_header

    class RecordingClient(RequestClient):  # type: ignore[misc]
        """The SDK's requests client, plus a record of the last response (status, headers)."""

        _session = None
        _local = threading.local()

        @classmethod
        def _record(cls, response: Any, *args: Any, **kwargs: Any) -> Any:
            cls._local.response = response
            return response

        @classmethod
        def last_response(cls) -> Any:
            return getattr(cls._local, "response", None)

        @classmethod
        def request(cls, method, url, headers, params, data, timeout, proxies, verify, max_retries):  # type: ignore[no-untyped-def]
            with cls._session_lock:
                if cls._session is None:
                    session = requests.Session()
                    session.mount("https://", requests.adapters.HTTPAdapter(max_retries=max_retries))
                    session.headers.update({"User-Agent": _get_user_agent_header()})
                    session.hooks["response"].append(cls._record)
                    cls._session = session
            cls._local.response = None
            return super().request(method, url, headers, params, data, timeout, proxies, verify, max_retries)

    return RecordingClient


_CLIENT: Any = None
_CLIENT_LOCK = threading.Lock()


def recording_client() -> Any:
    global _CLIENT
    with _CLIENT_LOCK:
        if _CLIENT is None:
            _CLIENT = _recording_client()
        return _CLIENT


def reset_sdk_backoff() -> None:
    """Clear the SDK's process-global timeout backoff (``APIClient`` class state)."""
    from datadog.api.api_client import APIClient

    APIClient._timeout_counter = 0
    APIClient._backoff_timestamp = None


class DatadogSink:
    """Series to Datadog's v1 API through the official SDK."""

    age_limits = DD_AGE
    wants_summaries = False  # Datadog has no summary type; the catalog's gauges carry the distribution

    def __init__(
        self,
        *,
        api_key: str,
        app_key: str | None = None,
        api_host: str,
        host_name: str,
        service: str | None = None,
        env: str | None = None,
        timeout: float = 10.0,
        max_items: int = 0,
        secrets: Sequence[str] = (),
        name: str = "datadog",
    ) -> None:
        import datadog

        self.name = name
        self.api_key = api_key
        self.app_key = app_key
        self.api_host = api_host
        self.host_name = host_name
        self.service = service
        self.env = env
        self.timeout = timeout
        self.request_limits = RequestLimits(DD_MAX_WIRE, DD_MAX_RAW, max_items)
        self.secrets = [s for s in (*secrets, api_key, app_key or "") if s]
        with scrubbed_loggers(SDK_LOGGERS, self.secrets):
            # host_name given: the SDK would otherwise run ``hostname -f`` and ask a cloud metadata address.
            datadog.initialize(
                api_key=api_key, app_key=app_key, host_name=host_name, api_host=api_host,
                mute=False, timeout=timeout, max_retries=0,
            )

    # --- what the delivery stage composes ------------------------------------------------------------

    def prepare(self, points: Sequence[AnyPoint]) -> Prepared:
        out = Prepared()
        extra: list[tuple[str, str]] = []
        if self.service:
            extra.append(("service", self.service))
        if self.env:
            extra.append(("env", self.env))
        # A window repeats each tag set for every metric of its family and each name for every series:
        # normalise each once, and replay its cut counts for every point that uses it.
        names: dict[str, tuple[str | None, dict[str, int]]] = {}
        tag_sets: dict[tuple[tuple[str, str], ...], tuple[list[str], dict[str, int]]] = {}
        for index, point in enumerate(points):
            if isinstance(point, SummaryPoint):  # never given (wants_summaries is False); no such type here
                bump(out.dropped, "summary_not_supported")
                continue
            problem = validate.value_problem(point.value, float32=True)
            if problem:
                bump(out.dropped, problem)
                continue
            named = names.get(point.metric)
            if named is None:
                cut: dict[str, int] = {}
                named = names[point.metric] = (validate.datadog_metric_name(point.metric, cut), cut)
            name, cut = named
            if name is None:
                bump(out.dropped, "invalid_metric_name")
                continue
            for reason, n in cut.items():
                bump(out.cut, reason, n)
            tagged = tag_sets.get(point.tags)
            if tagged is None:
                cut = {}
                present = {k for k, _ in point.tags}
                full = point.tags + tuple(kv for kv in extra if kv[0] not in present)
                tagged = tag_sets[point.tags] = (validate.datadog_tags(full, cut), cut)
            tags, cut = tagged
            for reason, n in cut.items():
                bump(out.cut, reason, n)
            item: dict[str, Any] = {
                "metric": name,
                "points": [[int(point.timestamp), float(point.value)]],
                "type": point.type,
            }
            if point.type == "count":
                item["interval"] = int(point.interval)
            item["tags"] = tags
            item["host"] = self.host_name
            out.items.append(item)
            out.origin.append(index)
        return out

    @staticmethod
    def item_size(item: Any) -> int:
        """A cheap estimate of the item's JSON bytes (``plan_requests`` checks the exact size)."""
        return (100 + len(item["metric"]) + len(item["host"]) + sum(len(t) + 4 for t in item["tags"])
                + (14 if "interval" in item else 0))

    def sizes(self, items: Sequence[Any]) -> tuple[int, int]:
        # The SDK's own encoding: json.dumps of {"series": [...]}, zlib-compressed with compress_payload.
        raw = json.dumps({"series": list(items)}).encode("utf-8")
        return len(zlib.compress(raw)), len(raw)

    def _configure(self) -> None:
        from datadog import api
        from datadog.api.api_client import APIClient

        api._api_key = self.api_key
        api._application_key = self.app_key
        api._api_host = self.api_host
        api._host_name = self.host_name
        api._mute = False
        api._timeout = self.timeout  # type: ignore[assignment]
        api._max_retries = 0
        api._return_raw_response = False
        APIClient._http_client = recording_client()
        reset_sdk_backoff()

    def send_items(self, items: Sequence[Any]) -> None:
        from datadog import api
        from datadog.api.exceptions import (
            ApiError,
            ClientError,
            DatadogException,
            HttpBackoff,
            HTTPError,
            HttpTimeout,
        )

        self._configure()
        client = recording_client()
        series = [dict(item) for item in items]  # the SDK rewrites "points" in place
        try:
            with scrubbed_loggers(SDK_LOGGERS, self.secrets):
                api.Metric.send(metrics=series, attach_host_name=True, compress_payload=True)
        except HttpTimeout:
            raise SinkError(f"{self.name}: request to {self.api_host} timed out after {self.timeout:g} s",
                            retryable=True) from None
        except (ClientError, HttpBackoff) as exc:
            raise SinkError(self._clean(f"{self.name}: cannot reach {self.api_host}: {connection_problem(exc)}"),
                            retryable=True) from None
        except (HTTPError, ApiError, ValueError) as exc:
            response = client.last_response()
            if response is None:
                raise SinkError(self._clean(f"{self.name}: {_short(exc)}"), retryable=True) from None
            if 200 <= response.status_code < 300:
                return  # accepted; only the reply body was not what the SDK expected
            raise self._status_error(response, exc) from None
        except DatadogException as exc:
            raise SinkError(self._clean(f"{self.name}: {_short(exc)}"), retryable=True) from None

    def _status_error(self, response: Any, exc: BaseException) -> SinkError:
        detail = ""
        try:
            body = response.json()
            errors = body.get("errors") if isinstance(body, dict) else None
            if errors:
                detail = "; ".join(str(e) for e in errors)[:300]
        except ValueError:
            detail = (response.text or "")[:200]
        retry_after = parse_retry_after(response.headers.get("Retry-After"), time.time())
        return error_for_status(self.name, response.status_code, self._clean(detail), retry_after)

    def _clean(self, text: str) -> str:
        return scrub(text, self.secrets)

    # --- the plain Sink protocol ----------------------------------------------------------------------

    def send(self, points: Sequence[MetricPoint]) -> SinkReport:
        from aggregator.sinks.chunking import send_planned

        return send_planned(self, points)

    def close(self) -> None:
        pass


def _short(exc: BaseException) -> str:
    text = str(exc)
    cut = text.find(". Please")
    return text[:cut] if cut > 0 else text
