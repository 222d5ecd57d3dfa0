"""Email through a real SMTP server on loopback, Slack through a local webhook enforcing Block Kit."""

from __future__ import annotations

from typing import Any

import pytest
from alert_servers import PASSWORD, USER, SlackServer, SmtpServer, block_kit_problem

from alerting.notify.base import AlertMessage, NotifyError
from alerting.notify.email import EmailNotifier
from alerting.notify.slack import SlackNotifier, build_payload, escape

EVIL_ROUTE = "api/<script>alert('x')</script>/&<!channel>`*bold*`"


def item(kind: str = "firing", route: str = "api/stories/<int:story_id>/", **kw: Any) -> dict[str, Any]:
    body = {
        "rule": "api_latency_p95", "kind": kind, "at": 1_795_000_000, "severity": "warning",
        "metric": "apm.request.duration.p95", "op": ">", "threshold": 500.0, "unit": "ms", "value": 812.4,
        "samples": 240, "series": {"route": route}, "since": 1_794_999_700, "resolved_at": None,
        "span_seconds": 300, "message": f"p95 latency of {route} is 812 ms (threshold 500 ms)",
        "description": "API p95 latency per route",
    }
    body.update(kw)
    return body


def message(*items: dict[str, Any], dashboard: str | None = "https://grafana.example/d/apm?a=1&b=2") -> AlertMessage:
    return AlertMessage(rule="api_latency_p95", severity="warning", items=list(items), dashboard_url=dashboard)


def parts(received: Any) -> tuple[str, str]:
    msg = received.message
    assert msg.is_multipart()
    plain = msg.get_body(preferencelist=("plain",)).get_content()
    html = msg.get_body(preferencelist=("html",)).get_content()
    return plain, html


def test_email_plain_smtp_has_both_parts_escaped(smtp_server: SmtpServer) -> None:
    """A real SMTP server receives one message with a text and an HTML part; log strings are
    HTML-escaped in the HTML part (no markup from a route survives), recipients are the configured ones."""
    n = EmailNotifier(host=smtp_server.host, port=smtp_server.port, sender="apm@example.com",
                      recipients=["oncall@example.com", "lead@example.com"])
    n.send(message(item(route=EVIL_ROUTE), item("resolved", route="api/health/", value=120.0)))
    [got] = smtp_server.take()
    assert got.rcpt_tos == ["oncall@example.com", "lead@example.com"]
    assert got.mail_from == "apm@example.com"
    plain, html = parts(got)
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "&lt;!channel&gt;" in html
    assert EVIL_ROUTE in plain  # the text part is text: shown as is
    assert "812 ms" in plain and "> 500 ms" in plain and "RESOLVED" in plain
    assert 'href="https://grafana.example/d/apm?a=1&amp;b=2"' in html
    assert got.message["Subject"] == "[FIRING 1, RESOLVED 1] api_latency_p95 (warning)"


def test_email_tls_variants_with_login(smtp_tls_server: tuple[str, SmtpServer]) -> None:
    """STARTTLS and implicit TLS against a server with a certificate made in the test (verified through
    the configured CA file), with a login; the server saw an encrypted session and the right user."""
    mode, server = smtp_tls_server
    n = EmailNotifier(host=server.host, port=server.port, sender="apm@example.com", recipients=["a@example.com"],
                      security=mode, username=USER, password=PASSWORD, ca_file=str(server.cert))
    n.send(message(item()))
    [got] = server.take()
    assert got.tls and got.login == USER
    plain, html = parts(got)
    assert "api/stories/&lt;int:story_id&gt;/" in html and "api/stories/<int:story_id>/" in plain


def test_email_failures_are_retryable_errors_without_secrets(smtp_tls_server: tuple[str, SmtpServer]) -> None:
    """A wrong password or an untrusted certificate is a NotifyError naming the server, never the password."""
    mode, server = smtp_tls_server
    wrong = EmailNotifier(host=server.host, port=server.port, sender="a@example.com", recipients=["b@example.com"],
                          security=mode, username=USER, password="hunter2-wrong", ca_file=str(server.cert))
    with pytest.raises(NotifyError) as err:
        wrong.send(message(item()))
    assert "hunter2-wrong" not in str(err.value) and f"{server.port}" in str(err.value)
    untrusted = EmailNotifier(host=server.host, port=server.port, sender="a@example.com",
                              recipients=["b@example.com"], security=mode, username=USER, password=PASSWORD)
    with pytest.raises(NotifyError, match=r"TLS|certificate|SSL"):
        untrusted.send(message(item()))
    assert server.take() == []


def test_email_server_down_is_a_bounded_failure() -> None:
    """Nothing listening: a NotifyError within the timeout, not a hang or a crash."""
    from alert_servers import free_port

    n = EmailNotifier(host="127.0.0.1", port=free_port(), sender="a@example.com", recipients=["b@example.com"],
                      timeout=2.0)
    with pytest.raises(NotifyError) as err:
        n.send(message(item()))
    assert err.value.retryable


def test_slack_block_kit_message(slack_server: SlackServer) -> None:
    """The webhook gets valid Block Kit: header, per alert the value against the threshold, the series,
    since when and the severity, and a dashboard button; log strings are mrkdwn-escaped."""
    SlackNotifier(slack_server.url).send(message(item(route=EVIL_ROUTE), item("resolved", value=90.0)))
    [payload] = slack_server.take()
    assert block_kit_problem(payload) is None
    text = str(payload)
    assert "<!channel>" not in text and "&lt;!channel&gt;" in text and "<script>" not in text
    header = payload["blocks"][0]
    assert header["type"] == "header" and "api_latency_p95" in header["text"]["text"]
    section = payload["blocks"][1]
    fields = " ".join(f["text"] for f in section["fields"])
    assert "812 ms" in fields and "threshold &gt; 500 ms" in fields
    assert "*Since*" in fields and "*Severity*\nwarning" in fields
    assert "route=api/&lt;script&gt;" in fields and "ˋ*bold*ˋ" in fields  # a backtick cannot end the code span
    assert payload["blocks"][-1]["type"] == "actions"
    assert payload["blocks"][-1]["elements"][0]["url"] == "https://grafana.example/d/apm?a=1&b=2"
    assert payload["text"].startswith("[FIRING 1, RESOLVED 1]")


def test_slack_many_alerts_stay_within_limits(slack_server: SlackServer) -> None:
    """A rule breaching on 80 routes with long names is still one valid message (50 blocks max)."""
    items = [item(route="r/" + "x" * 4000 + str(i)) for i in range(80)]
    SlackNotifier(slack_server.url).send(message(*items))
    [payload] = slack_server.take()
    assert block_kit_problem(payload) is None
    assert "and 60 more" in str(payload)


@pytest.mark.parametrize("status,retryable", [(500, True), (429, True), (404, False), (400, False)])
def test_slack_errors_never_show_the_webhook(slack_server: SlackServer, status: int, retryable: bool) -> None:
    """An HTTP error becomes a NotifyError with Slack's reason; the secret URL is in no message."""
    slack_server.script.append((status, "rollup_error" if status >= 500 else "invalid_token"))
    with pytest.raises(NotifyError) as err:
        SlackNotifier(slack_server.url).send(message(item()))
    assert err.value.retryable is retryable
    assert str(status) in str(err.value)
    assert "secret" not in str(err.value) and slack_server.url not in str(err.value)
    assert "secret" not in repr(SlackNotifier(slack_server.url))


def test_slack_timeout_is_bounded(slack_server: SlackServer) -> None:
    """A webhook that hangs fails after the timeout (a retryable error), it does not hold the run."""
    slack_server.script.append(3.0)
    with pytest.raises(NotifyError) as err:
        SlackNotifier(slack_server.url, timeout=0.5).send(message(item()))
    assert err.value.retryable and "secret" not in str(err.value)


def test_mrkdwn_escape_and_test_message() -> None:
    """Only &, < and > are escaped (what Slack decodes); the test message is valid Block Kit."""
    assert escape("a & <b> c") == "a &amp; &lt;b&gt; c"
    test = AlertMessage(rule="test", severity="info", items=[], test=True)
    assert block_kit_problem(build_payload(test)) is None


def test_slack_malformed_url_error_has_no_secret() -> None:
    """A webhook URL with a bad port is refused without echoing the URL (its path is the credential)."""
    with pytest.raises(NotifyError) as err:
        SlackNotifier("http://127.0.0.1:notaport/services/T0/B0/SECRETTOKEN").send(message(item()))
    assert "SECRETTOKEN" not in str(err.value) and not err.value.retryable
