"""Slack through an incoming webhook: one Block Kit message per rule.

Limits kept (Slack's Block Kit reference): at most 50 blocks, a header's text at most 150 characters, a
section's text at most 3,000 and each of its (at most 10) fields at most 2,000. Strings from the logs are
mrkdwn-escaped (``&``, ``<``, ``>``: no injected links or ``<!channel>`` mentions) and text objects are
``verbatim`` (no auto-linking). The webhook URL is a secret: it appears in no error and no log.
"""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.request
from typing import Any

from alerting.notify.base import (
    KIND_WORD,
    RESOLVED_MARK,
    SEVERITY_MARK,
    AlertMessage,
    NotifyError,
    item_series,
    item_threshold,
    item_value,
    item_when,
    plain_text,
    utc,
    visible,
)
from alerting.rules import format_duration


def escape(text: str) -> str:
    """Slack's mrkdwn escaping: the three control characters (Slack decodes only these), and control
    characters from the logs made visible."""
    return visible(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def code(text: str) -> str:
    """Inline code for a log string: escaped, and a backtick in it cannot end the span."""
    return "`" + escape(text).replace("`", "\u02cb") + "`"


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _mrkdwn(text: str, limit: int = 3000) -> dict[str, Any]:
    return {"type": "mrkdwn", "text": _cut(text, limit), "verbatim": True}


def build_payload(message: AlertMessage) -> dict[str, Any]:
    """The webhook body: fallback ``text`` plus ``blocks``."""
    if message.test:
        return {
            "text": "logging-apm test message",
            "blocks": [
                {"type": "header", "text": {"type": "plain_text", "text": "logging-apm: test message"}},
                {"type": "section", "text": _mrkdwn(
                    "This is a test from `logapm alerts test`. If you can read it, alert notifications reach "
                    "this channel.")},
            ],
        }
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _cut(message.title(), 150), "emoji": True}},
    ]
    for item in message.shown():
        resolved = item["kind"] == "resolved"
        mark = RESOLVED_MARK if resolved else SEVERITY_MARK.get(str(item.get("severity")), "")
        head = f"{mark} *{KIND_WORD[item['kind']]}* {escape(str(item['message']))}"
        blocks.append({
            "type": "section",
            "text": _mrkdwn(head),
            "fields": [
                _mrkdwn(f"*Value*\n{escape(item_value(item))} (threshold {escape(item_threshold(item))})", 2000),
                _mrkdwn(f"*Series*\n{code(item_series(item))}", 2000),
                _mrkdwn(f"*{'Resolved' if resolved else 'Since'}*\n"
                        f"{escape(utc(item['at']) if resolved else utc(item.get('since')))}", 2000),
                _mrkdwn(f"*Severity*\n{escape(str(item.get('severity')))}", 2000),
            ],
        })
        blocks.append({"type": "context", "elements": [_mrkdwn(
            f"{code(str(item['metric']))} over {format_duration(int(item.get('span_seconds') or 0))}, "
            f"{int(item.get('samples') or 0)} samples \u00b7 {escape(item_when(item))}")]})
    if message.hidden:
        blocks.append({"type": "context", "elements": [_mrkdwn(f"\u2026 and {message.hidden} more")]})
    if message.link and len(message.link) <= 3000:
        blocks.append({"type": "actions", "elements": [{
            "type": "button", "text": {"type": "plain_text", "text": "Open dashboard"}, "url": message.link,
        }]})
    return {"text": _cut(plain_text(message).splitlines()[0], 3000), "blocks": blocks[:50]}


class SlackNotifier:
    name = "slack"

    def __init__(self, webhook_url: str, *, timeout: float = 10.0) -> None:
        if not webhook_url or not webhook_url.startswith(("https://", "http://")):
            raise ValueError("Slack is enabled but PERFORMANCE_ALERT_SLACK_WEBHOOK_URL is not an http(s) URL")
        self._url = webhook_url
        self.timeout = timeout

    @classmethod
    def from_config(cls, config: Any) -> SlackNotifier:
        return cls(config.get("alerting.slack.webhook_url") or "",
                   timeout=float(config.get("alerting.notify_timeout_seconds", 10.0)))

    def __repr__(self) -> str:  # the URL is the credential
        return "SlackNotifier(webhook=***)"

    def send(self, message: AlertMessage) -> None:
        body = json.dumps(build_payload(message)).encode("utf-8")
        request = urllib.request.Request(
            self._url, data=body, method="POST",
            headers={"Content-Type": "application/json; charset=utf-8", "User-Agent": "logging-apm"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                response.read(1024)
        except urllib.error.HTTPError as exc:
            detail = exc.read(200).decode("utf-8", "replace").strip() if exc.fp else ""
            retryable = exc.code == 429 or exc.code >= 500
            raise NotifyError(f"Slack webhook answered HTTP {exc.code} {detail!r}", retryable=retryable,
                              retry_after=_seconds(exc.headers.get("Retry-After"))) from None
        except urllib.error.URLError as exc:
            raise NotifyError(f"Slack webhook unreachable: {_reason(exc.reason)}") from None
        except TimeoutError:
            raise NotifyError(f"Slack webhook did not answer within {self.timeout:g}s") from None
        except OSError as exc:
            raise NotifyError(f"Slack webhook failed: {type(exc).__name__}") from None
        except (ValueError, http.client.InvalidURL):  # a malformed URL: its text would show the secret
            raise NotifyError("Slack webhook URL is malformed", retryable=False) from None
        except http.client.HTTPException as exc:  # a broken answer (not HTTP, cut short)
            raise NotifyError(f"Slack webhook answered badly: {type(exc).__name__}") from None


def _seconds(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


def _reason(reason: object) -> str:
    # URLError's reason is an exception or a string about the connection, never the URL itself.
    return f"{type(reason).__name__}: {reason}" if isinstance(reason, BaseException) else str(reason)
