"""What every notifier shares: the message (all due alerts of one rule), its wording, and the protocol.

One ``AlertMessage`` per rule per send: Alertmanager's grouping by alert name, so a p95 rule breaching on
twelve routes is one email, not twelve.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from alerting.rules import format_duration, format_value

SEVERITY_MARK = {"critical": "\N{LARGE RED CIRCLE}", "warning": "\N{LARGE ORANGE CIRCLE}", "info": "\N{LARGE BLUE CIRCLE}"}
RESOLVED_MARK = "\N{LARGE GREEN CIRCLE}"
KIND_WORD = {"firing": "FIRING", "repeat": "STILL FIRING", "resolved": "RESOLVED"}
MAX_ITEMS = 20  # listed per message; the rest are counted ("and 7 more")


class NotifyError(Exception):
    """A notifier could not deliver. The message never contains a secret (URL, password)."""

    def __init__(self, message: str, *, retryable: bool = True, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after  # seconds the channel asked us to wait (HTTP 429 Retry-After)


@dataclass(frozen=True, slots=True)
class AlertMessage:
    """The due notifications of one rule (``items`` are the log's alert snapshots, oldest first)."""

    rule: str
    severity: str
    items: Sequence[dict[str, Any]]
    dashboard_url: str | None = None
    test: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def counts(self) -> dict[str, int]:
        """Alerts per kind: firing (new), repeat (still firing, a reminder), resolved."""
        out: dict[str, int] = {}
        for item in self.items:
            out[item["kind"]] = out.get(item["kind"], 0) + 1
        return out

    def title(self) -> str:
        if self.test:
            return "[TEST] logging-apm alert notifications work"
        counts = self.counts
        parts = [f"{KIND_WORD[k]} {counts[k]}" for k in ("firing", "repeat", "resolved") if k in counts]
        return f"[{', '.join(parts)}] {self.rule} ({self.severity})"

    @property
    def link(self) -> str | None:
        """The dashboard URL when it is a web address (a button or href with another scheme is refused
        by Slack, or unsafe in an email)."""
        url = (self.dashboard_url or "").strip()
        return url if url.lower().startswith(("https://", "http://")) else None

    def shown(self) -> list[dict[str, Any]]:
        return list(self.items[:MAX_ITEMS])

    @property
    def hidden(self) -> int:
        return max(0, len(self.items) - MAX_ITEMS)


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def visible(text: str) -> str:
    """Control characters from the logs (ANSI escapes, NUL, CR) written as ``\\xNN``: a terminal or mail
    client showing the message cannot act on them."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def utc(ts: float | int | None) -> str:
    if ts is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ts))


def item_value(item: dict[str, Any]) -> str:
    return format_value(item.get("value"), item.get("unit", ""))


def item_threshold(item: dict[str, Any]) -> str:
    return f"{item['op']} {format_value(item['threshold'], item.get('unit', ''))}"


def item_series(item: dict[str, Any]) -> str:
    series = item.get("series") or {}
    return ", ".join(f"{k}={v or '(none)'}" for k, v in sorted(series.items())) if series else "overall"


def item_when(item: dict[str, Any]) -> str:
    if item["kind"] == "resolved":
        since = item.get("since")
        lasted = f" after {format_duration(int(item['at'] - since))}" if since is not None else ""
        return f"resolved {utc(item['at'])}{lasted}"
    return f"since {utc(item.get('since'))}"


def plain_text(message: AlertMessage) -> str:
    """The message as plain text (email's text part, Slack's fallback ``text``)."""
    if message.test:
        return ("This is a test message from logging-apm (`logapm alerts test`).\n"
                "If you can read it, alert notifications reach you through this channel.\n")
    lines = [message.title(), ""]
    for item in message.shown():
        lines.append(f"{KIND_WORD[item['kind']]}: {item['message']}")
        lines.append(f"  value {item_value(item)} (threshold {item_threshold(item)}) over "
                     f"{format_duration(int(item.get('span_seconds') or 0))}, {item.get('samples', 0)} samples")
        lines.append(f"  series: {item_series(item)}")
        lines.append(f"  {item_when(item)}; metric {item['metric']}")
        lines.append("")
    if message.hidden:
        lines.append(f"... and {message.hidden} more")
    description = message.items[0].get("description") if message.items else ""
    if description:
        lines.append(str(description))
    if message.dashboard_url:
        lines.append(f"Dashboard: {message.dashboard_url}")
    return visible("\n".join(lines).rstrip()) + "\n"


@runtime_checkable
class Notifier(Protocol):
    """A channel for alert messages. ``send`` raises ``NotifyError``; it never swallows a failure, and
    never blocks longer than its configured timeout."""

    name: str

    def send(self, message: AlertMessage) -> None: ...
