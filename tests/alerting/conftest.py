"""Fixtures: a real SMTP server (aiosmtpd; plain, STARTTLS and implicit TLS with a certificate made for
the test) and a local Slack incoming webhook, both on loopback and free ports (see alert_servers.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alert_servers import SlackServer, SmtpServer, start_slack, start_smtp


@pytest.fixture
def smtp_server(tmp_path: Path) -> Iterator[SmtpServer]:
    controller, server = start_smtp("plain", tmp_path)
    try:
        yield server
    finally:
        controller.stop()


@pytest.fixture(params=["starttls", "tls"])
def smtp_tls_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, SmtpServer]]:
    controller, server = start_smtp(request.param, tmp_path)
    try:
        yield request.param, server
    finally:
        controller.stop()


@pytest.fixture
def slack_server() -> Iterator[SlackServer]:
    state, server, thread = start_slack()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
