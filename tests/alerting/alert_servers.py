"""Local stand-ins (helpers; the fixtures are in conftest.py) for the notification channels: a real SMTP server (aiosmtpd) and a Slack incoming
webhook that enforces Block Kit's documented limits, both on loopback, on free ports."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import ipaddress
import json
import socket
import ssl
import threading
import time
import warnings
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

SLACK_PATH = "/services/T0SECRET/B0SECRET/xoxsecrettoken123"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- SMTP ---------------------------------------------------------------------------------------------------


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    tls: bool
    login: str | None


class _Handler:
    def __init__(self, box: list[Received]) -> None:
        self.box = box

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        msg = email.message_from_bytes(envelope.original_content or envelope.content, policy=email.policy.default)
        auth = getattr(session, "auth_data", None)
        login = auth.login.decode() if isinstance(auth, LoginPassword) else None
        self.box.append(Received(envelope.mail_from, list(envelope.rcpt_tos), msg,  # type: ignore[arg-type]
                                 tls=session.ssl is not None or server.transport.get_extra_info("ssl_object") is not None,
                                 login=login))
        return "250 OK"


@dataclass
class SmtpServer:
    host: str
    port: int
    box: list[Received] = field(default_factory=list)
    cert: Path | None = None

    def take(self) -> list[Received]:
        out, self.box[:] = list(self.box), []
        return out


def self_signed(tmp: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost, made for this test run."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "logapm test smtp")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "smtp-cert.pem", tmp / "smtp-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


USER, PASSWORD = "alerts", "s3cret-pa55"


def _authenticator(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and auth_data.login == USER.encode() and \
        auth_data.password == PASSWORD.encode()
    return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)


def start_smtp(mode: str, tmp: Path) -> tuple[Controller, SmtpServer]:
    box: list[Received] = []
    kwargs: dict[str, Any] = {}
    cert = None
    if mode in ("starttls", "tls"):
        cert, key = self_signed(tmp)
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(cert, key)
        if mode == "starttls":
            kwargs.update(tls_context=ctx, require_starttls=True, auth_required=True, authenticator=_authenticator)
        else:
            kwargs.update(ssl_context=ctx, auth_required=True, authenticator=_authenticator,
                          auth_require_tls=False)
    last: Exception | None = None
    for _ in range(5):  # a free port can be taken between probing and binding
        port = free_port()
        with warnings.catch_warnings():  # implicit TLS: aiosmtpd cannot tell that AUTH is encrypted
            warnings.simplefilter("ignore")
            controller = Controller(_Handler(box), hostname="127.0.0.1", port=port, **kwargs)
        try:
            controller.start()
        except Exception as exc:
            last = exc
            continue
        return controller, SmtpServer("127.0.0.1", port, box, cert)
    raise RuntimeError(f"could not start the SMTP server: {last}")


# --- Slack webhook -----------------------------------------------------------------------------------------------

_TEXT_TYPES = {"plain_text", "mrkdwn"}


def block_kit_problem(payload: Any) -> str | None:
    """What Slack would refuse in a webhook payload (documented Block Kit limits), or None."""
    if not isinstance(payload, dict):
        return "invalid_payload"
    blocks = payload.get("blocks")
    if not payload.get("text") and not blocks:
        return "no_text"
    if blocks is None:
        return None
    if not isinstance(blocks, list) or len(blocks) > 50:
        return "invalid_blocks: more than 50 blocks"

    def text_obj(t: Any, limit: int, plain_only: bool = False) -> str | None:
        if not isinstance(t, dict) or t.get("type") not in _TEXT_TYPES:
            return "text object without a valid type"
        if plain_only and t["type"] != "plain_text":
            return "must be plain_text"
        if not isinstance(t.get("text"), str) or not t["text"] or len(t["text"]) > limit:
            return f"text empty or longer than {limit}"
        if "verbatim" in t and t["type"] != "mrkdwn":
            return "verbatim only on mrkdwn"
        if "emoji" in t and t["type"] != "plain_text":
            return "emoji only on plain_text"
        extra = set(t) - {"type", "text", "verbatim", "emoji"}
        return f"unknown text field {extra}" if extra else None

    for b in blocks:
        kind = b.get("type") if isinstance(b, dict) else None
        problem: str | None
        if kind == "header":
            problem = text_obj(b.get("text"), 150, plain_only=True)
        elif kind == "section":
            problem = None
            if "text" not in b and "fields" not in b:
                problem = "section needs text or fields"
            if "text" in b:
                problem = problem or text_obj(b["text"], 3000)
            fields = b.get("fields", [])
            if not isinstance(fields, list) or len(fields) > 10:
                problem = problem or "more than 10 fields"
            for f in fields:
                problem = problem or text_obj(f, 2000)
        elif kind == "divider":
            problem = None
        elif kind == "context":
            els = b.get("elements")
            problem = None if isinstance(els, list) and 0 < len(els) <= 10 else "context needs 1-10 elements"
            for e in els or []:
                problem = problem or text_obj(e, 3000)
        elif kind == "actions":
            els = b.get("elements")
            problem = None if isinstance(els, list) and 0 < len(els) <= 25 else "actions needs 1-25 elements"
            for e in els or []:
                if e.get("type") != "button":
                    problem = problem or "only buttons here"
                problem = problem or text_obj(e.get("text"), 75, plain_only=True)
                url = e.get("url", "")
                if not isinstance(url, str) or len(url) > 3000 or not url.startswith(("http://", "https://")):
                    problem = problem or "button url"
        else:
            problem = f"unknown block type {kind!r}"
        if problem:
            return f"invalid_blocks: {problem}"
    return None


@dataclass
class SlackServer:
    url: str
    payloads: list[dict[str, Any]] = field(default_factory=list)
    # next answers: (status, body) or (status, body, headers); a float hangs that many seconds, then 200
    script: list[Any] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    requests: int = 0

    def take(self) -> list[dict[str, Any]]:
        out, self.payloads[:] = list(self.payloads), []
        return out


def start_slack() -> tuple[SlackServer, ThreadingHTTPServer, threading.Thread]:
    """A local Slack incoming webhook: records valid payloads, answers as scripted, refuses bad Block Kit."""
    state = SlackServer(url="")

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            state.requests += 1
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if self.path != SLACK_PATH:
                return self._answer(404, "no_service")
            if not self.headers.get("Content-Type", "").startswith("application/json"):
                return self._answer(400, "invalid_payload")
            if state.script:
                step = state.script.pop(0)
                if isinstance(step, float):
                    time.sleep(step)
                    return self._answer(200, "ok")
                if step[0] != 200:
                    return self._answer(*step)
            try:
                payload = json.loads(body)
            except ValueError:
                return self._answer(400, "invalid_payload")
            problem = block_kit_problem(payload)
            if problem:
                state.refused.append(problem)
                return self._answer(400, problem)
            state.payloads.append(payload)
            self._answer(200, "ok")

        def _answer(self, status: int, text: str, headers: dict[str, str] | None = None) -> None:
            data = text.encode()
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            try:
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up waiting (the timeout test)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}{SLACK_PATH}"
    return state, server, thread
