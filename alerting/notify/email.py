"""Email through SMTP (``smtplib``): plain-text and HTML parts, STARTTLS or implicit TLS, bounded timeout.

Everything that came from the logs (routes, table names, tag values) is HTML-escaped in the HTML part; the
subject is one line. Errors name the server, never the password.
"""

from __future__ import annotations

import html
import smtplib
import ssl
from collections.abc import Sequence
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
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
    visible,
)
from alerting.rules import format_duration

SECURITIES = ("none", "starttls", "tls")
_COLOR = {"critical": "#c62828", "warning": "#ef6c00", "info": "#1565c0", "resolved": "#2e7d32"}


class EmailNotifier:
    name = "email"

    def __init__(
        self,
        *,
        host: str,
        port: int,
        sender: str,
        recipients: Sequence[str],
        security: str = "none",
        username: str | None = None,
        password: str | None = None,
        timeout: float = 10.0,
        ca_file: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if security not in SECURITIES:
            raise ValueError(f"email security {security!r} is not one of {', '.join(SECURITIES)}")
        if not recipients:
            raise ValueError("email is enabled but PERFORMANCE_ALERT_EMAIL_RECIPIENTS is empty")
        self.host, self.port, self.sender = host, port, sender
        self.recipients = list(recipients)
        self.security = security
        self.username, self._password = username, password
        self.timeout = timeout
        self._context = ssl_context or (ssl.create_default_context(cafile=ca_file) if security != "none" else None)

    @classmethod
    def from_config(cls, config: Any) -> EmailNotifier:
        s = config.section("alerting.email")
        return cls(
            host=s["host"], port=int(s["port"]), sender=s["sender"], recipients=s["recipients"],
            security=str(s["security"]).lower(), username=s.get("username"), password=s.get("password"),
            timeout=float(config.get("alerting.notify_timeout_seconds", 10.0)), ca_file=s.get("ca_file"),
        )

    def __repr__(self) -> str:  # no password, ever
        return f"EmailNotifier({self.host}:{self.port}, {self.security}, to {len(self.recipients)})"

    # --- composing -----------------------------------------------------------------------------------------

    def compose(self, message: AlertMessage) -> EmailMessage:
        msg = EmailMessage()
        msg["Subject"] = " ".join(message.title().split())  # one line, whatever the logs held
        msg["From"] = self.sender
        msg["To"] = ", ".join(self.recipients)
        msg["Date"] = formatdate(localtime=False, usegmt=True)
        msg["Message-ID"] = make_msgid(domain=self.sender.rpartition("@")[2] or "localhost")
        msg["X-Logapm-Rule"] = " ".join(message.rule.split()) or "test"
        msg.set_content(plain_text(message))
        msg.add_alternative(render_html(message), subtype="html")
        return msg

    # --- sending -------------------------------------------------------------------------------------------

    def send(self, message: AlertMessage) -> None:
        msg = self.compose(message)
        where = f"SMTP {self.host}:{self.port}"
        try:
            if self.security == "tls":
                client: smtplib.SMTP = smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout,
                                                        context=self._context)
            else:
                client = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
            with client:
                if self.security == "starttls":
                    client.starttls(context=self._context)
                    client.ehlo()
                if self.username:
                    client.login(self.username, self._password or "")
                refused = client.send_message(msg, from_addr=self.sender, to_addrs=self.recipients)
        except smtplib.SMTPAuthenticationError as exc:
            raise NotifyError(f"{where}: login as {self.username!r} refused ({exc.smtp_code})",
                              retryable=False) from None
        except smtplib.SMTPRecipientsRefused as exc:
            raise NotifyError(f"{where}: every recipient refused: {', '.join(exc.recipients)}",
                              retryable=False) from None
        except smtplib.SMTPNotSupportedError as exc:
            raise NotifyError(f"{where}: {self.security} not supported by the server: {exc}",
                              retryable=False) from None
        except ssl.SSLError as exc:
            raise NotifyError(f"{where}: TLS failed: {exc.reason or exc}", retryable=False) from None
        except smtplib.SMTPResponseException as exc:
            retry = 400 <= exc.smtp_code < 500
            text = exc.smtp_error.decode("utf-8", "replace") if isinstance(exc.smtp_error, bytes) else str(exc.smtp_error)
            raise NotifyError(f"{where}: server answered {exc.smtp_code} {text[:200]}", retryable=retry) from None
        except (smtplib.SMTPException, OSError) as exc:
            raise NotifyError(f"{where}: {type(exc).__name__}: {exc}"[:300], retryable=True) from None
        if refused:
            # Some recipients took it: a retry would duplicate it for them, so this counts as sent.
            return


def render_html(message: AlertMessage) -> str:
    """The HTML part; every value that came from the logs or the config goes through ``html.escape``."""
    def e(text: str, quote: bool = True) -> str:
        return html.escape(visible(text), quote)

    if message.test:
        return ("<html><body><p>This is a <b>test message</b> from logging-apm "
                "(<code>logapm alerts test</code>).</p><p>If you can read it, alert notifications reach you "
                "through this channel.</p></body></html>")
    rows = []
    for item in message.shown():
        resolved = item["kind"] == "resolved"
        color = _COLOR["resolved"] if resolved else _COLOR.get(item.get("severity", ""), "#555")
        mark = RESOLVED_MARK if resolved else SEVERITY_MARK.get(item.get("severity", ""), "")
        rows.append(
            "<tr>"
            f"<td style=\"color:{color};font-weight:bold;white-space:nowrap\">{mark} {e(KIND_WORD[item['kind']])}</td>"
            f"<td>{e(str(item['message']))}<br><small>series: <code>{e(item_series(item))}</code> &middot; "
            f"metric <code>{e(str(item['metric']))}</code> over "
            f"{e(format_duration(int(item.get('span_seconds') or 0)))}, {int(item.get('samples') or 0)} samples</small></td>"
            f"<td style=\"white-space:nowrap\"><b>{e(item_value(item))}</b><br><small>threshold "
            f"{e(item_threshold(item))}</small></td>"
            f"<td style=\"white-space:nowrap\">{e(item_when(item))}</td>"
            "</tr>"
        )
    more = f"<p>&hellip; and {message.hidden} more</p>" if message.hidden else ""
    description = message.items[0].get("description") if message.items else ""
    desc = f"<p>{e(str(description))}</p>" if description else ""
    link = (f"<p><a href=\"{e(message.link, quote=True)}\">Open the dashboard</a></p>" if message.link
            else f"<p>Dashboard: {e(message.dashboard_url)}</p>" if message.dashboard_url else "")
    return (
        "<html><body style=\"font-family:sans-serif\">"
        f"<h2>{e(message.title())}</h2>"
        "<table cellpadding=\"6\" style=\"border-collapse:collapse\">"
        "<tr><th align=\"left\">state</th><th align=\"left\">alert</th><th align=\"left\">value</th>"
        "<th align=\"left\">when</th></tr>"
        + "".join(rows) + "</table>" + more + desc + link + "</body></html>"
    )
