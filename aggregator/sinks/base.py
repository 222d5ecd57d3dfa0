"""What every vendor sink shares: the errors the delivery stage acts on, the size limits of one request,
and the scrubbing of secrets from anything a sink says.

A vendor sink (``DatadogSink``, ``NewRelicSink``) does three things the delivery stage composes:
``prepare`` (check and normalise points into the vendor's items, counting what was cut or dropped),
``sizes`` (the exact bytes one request of these items would put on the wire, and decompressed), and
``send_items`` (exactly one request: no retry, no split; a failure raises). ``send`` strings them together
without retries, for callers that want the plain ``model.Sink`` protocol.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from aggregator.model import MetricPoint, SinkError, SinkReport, Tags

SCRUBBED = "***"


class PayloadTooLarge(SinkError):
    """The vendor answered 413: the same items may go through in smaller requests."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=False)


class PayloadRejected(SinkError):
    """The vendor refused the content (400/422): smaller requests isolate the items it refuses."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=False)


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret replaced by ``***`` (longest first, so a key containing another is gone)."""
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, SCRUBBED)
    return text


class ScrubFilter(logging.Filter):
    """Rewrites log records of a third-party logger so that no secret reaches a handler."""

    def __init__(self, secrets: Sequence[str]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            message = record.getMessage()
            cleaned = scrub(message, self.secrets)
            if cleaned != message or record.exc_info:
                record.msg, record.args = cleaned, None
                if record.exc_info and record.exc_info[1] is not None:
                    # The formatted traceback would repeat the exception text: keep only a scrubbed line.
                    exc = record.exc_info[1]
                    record.msg = f"{cleaned} ({type(exc).__name__}: {scrub(str(exc), self.secrets)})"
                    record.exc_info = None
                    record.exc_text = None
        return True


@contextmanager
def scrubbed_loggers(names: Sequence[str], secrets: Sequence[str]) -> Iterator[None]:
    """Attach a ``ScrubFilter`` to the SDK's loggers (and their handlers) for the duration of a send."""
    flt = ScrubFilter(secrets)
    loggers = [logging.getLogger(n) for n in names]
    for lg in loggers:
        lg.addFilter(flt)
    try:
        yield
    finally:
        for lg in loggers:
            lg.removeFilter(flt)


@dataclass(frozen=True, slots=True)
class SummaryPoint:
    """The distribution of one duration series in one window, for vendors with a summary type (New Relic):
    exact count, sum, min and max, so that the vendor's averages over any span are exact."""

    metric: str
    tags: Tags
    timestamp: int
    count: float
    sum: float
    min: float
    max: float
    interval: int = 60


AnyPoint = MetricPoint | SummaryPoint


@dataclass(frozen=True, slots=True)
class RequestLimits:
    """What one request of a vendor may carry. ``max_items`` 0 means no count limit of our own."""

    max_wire_bytes: int
    max_raw_bytes: int
    max_items: int = 0


@dataclass(frozen=True, slots=True)
class AgeLimits:
    """Points older than ``max_age`` or further ahead than ``max_future`` (seconds) are dropped by the vendor.

    ``margin`` is taken off ``max_age``: a point that is barely young enough when chosen may be too old when
    the vendor reads it, and a point not sent is counted while a point dropped by the vendor is silent.
    """

    max_age: float
    max_future: float
    margin: float = 60.0

    def verdict(self, timestamp: float, now: float) -> str | None:
        if timestamp < now - (self.max_age - self.margin):
            return "too_old"
        if timestamp > now + self.max_future:
            return "too_far_in_future"
        return None


@dataclass(slots=True)
class Prepared:
    """Points turned into a vendor's items: ``items[i]`` came from ``origin[i]`` (an index into the input).

    ``cut`` counts normalisations that changed what is sent (renamed, truncated, attributes removed);
    ``dropped`` counts points that will not be sent at all, by reason.
    """

    items: list[Any] = field(default_factory=list)
    origin: list[int] = field(default_factory=list)
    cut: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)


@runtime_checkable
class VendorSink(Protocol):
    """A sink whose requests the delivery stage sizes, splits and retries itself."""

    name: str
    request_limits: RequestLimits
    age_limits: AgeLimits

    wants_summaries: bool

    def prepare(self, points: Sequence[AnyPoint]) -> Prepared: ...

    def sizes(self, items: Sequence[Any]) -> tuple[int, int]:
        """(bytes on the wire, bytes decompressed) of one request carrying ``items``."""
        ...

    def send_items(self, items: Sequence[Any]) -> None:
        """One request. Raises ``PayloadTooLarge``, ``PayloadRejected`` or ``SinkError``."""
        ...

    def send(self, points: Sequence[MetricPoint]) -> SinkReport: ...

    def close(self) -> None: ...


def connection_problem(exc: BaseException) -> str:
    """A short reason for a failed connection (the libraries' texts run to several nested reprs)."""
    text = str(exc)
    for needle, reason in (("Connection refused", "connection refused"), ("Connection reset", "connection reset"),
                           ("Name or service not known", "host name not resolved"),
                           ("Temporary failure in name resolution", "host name not resolved"),
                           ("timed out", "timed out"), ("CERTIFICATE_VERIFY_FAILED", "certificate not trusted"),
                           ("RemoteDisconnected", "connection closed by the server"),
                           ("Connection aborted", "connection closed by the server")):
        if needle in text:
            return reason
    return text[:200]


def bump(counter: dict[str, int], key: str, n: int = 1) -> None:
    counter[key] = counter.get(key, 0) + n


RETRYABLE_STATUS = frozenset({408, 425, 429})


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - now)


def error_for_status(vendor: str, status: int, detail: str, retry_after: float | None) -> SinkError:
    """The ``SinkError`` the delivery stage should see for an HTTP status that is not a success."""
    message = f"{vendor}: HTTP {status}" + (f" ({detail})" if detail else "")
    if status == 413:
        return PayloadTooLarge(message)
    if status in (400, 422):
        return PayloadRejected(message)
    if status in RETRYABLE_STATUS or status >= 500:
        return SinkError(message, retryable=True, retry_after=retry_after)
    # 401/403/404 and the like: a setting is wrong. Not retried in this run, and not dropped either: the
    # entries stay pending until the key or the endpoint is fixed.
    return SinkError(message, retryable=False, retry_after=retry_after)
