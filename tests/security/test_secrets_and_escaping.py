"""Secrets and hostile strings through the whole pipeline. Vendor keys, the SMTP password and the Slack
webhook URL are set while every destination fails (and echoes what it was sent): no secret appears in any
artefact - run output, the state store, the dead-letter file, the OpenMetrics file, the HTML report,
``logapm alerts``/``metrics`` output. Route names full of markup and mentions come out escaped in the
report, the Slack message and the email."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pipeline_kit as kit
from alert_servers import SLACK_PATH, start_smtp
from intakes import Fail
from intakes.kit import DD_APP, DD_KEY, NR_LICENSE

PipelineT = kit.Pipeline
HOSTILE_ROUTES = ["api/<script>alert(1)</script>/", "api/<!channel>/<@U123>/", 'api/"><img src=x onerror=alert(2)>/',
                  "api/*bold*_x_`code`/&amp;/", "api/\x1b[31mred/"]
RAW_MARKUP = ["<script>alert(1)</script>", "<img src=x onerror", "<!channel>", "<@U123>"]
SMTP_PASSWORD = "smtp-Pa55w0rd-SECRET-7f3a"
SLACK_TOKEN = SLACK_PATH.rsplit("/", 1)[1]


def _hostile_log(log: Path, start: float) -> None:
    events = []
    for m in range(10):
        for i, route in enumerate(HOSTILE_ROUTES):
            for j in range(6):
                events.append(kit.request_event(start + m * 60 + j * 9 + i, route, 1500.0 + j))
    events.sort(key=lambda e: e["timestamp"])
    from aggregator.loggen import write_log

    write_log(log, events)
    with log.open("ab") as f:  # invalid lines for the dead-letter file
        f.write(b'{"apm.schema":1,"apm.kind":"request","duration_ms":-1,"timestamp":"x"}\n' * 3)


def _logapm(p: PipelineT, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "aggregator.cli", *args], capture_output=True, text=True,
                          env=p.env(**env), timeout=120, cwd=p.tmp)


def test_no_secret_in_any_artefact_while_everything_fails(tmp_path: Path) -> None:
    """Both vendors answer errors that echo their key back, Slack answers 500 echoing its URL, the SMTP
    server refuses the password over STARTTLS: three runs, then every file and output is searched for
    every secret (and its URL-encoded form)."""
    p = kit.start_pipeline(tmp_path)
    controller, smtp = start_smtp("starttls", tmp_path)
    p.stoppers.append(controller.stop)
    assert smtp.cert is not None
    p.extra_env.update(
        PERFORMANCE_ALERT_EMAIL_PORT=str(smtp.port), PERFORMANCE_ALERT_EMAIL_SECURITY="starttls",
        PERFORMANCE_ALERT_EMAIL_USERNAME="alerts", PERFORMANCE_ALERT_EMAIL_PASSWORD=SMTP_PASSWORD,
        PERFORMANCE_ALERT_EMAIL_CA_FILE=str(smtp.cert), LOGAPM_OPENMETRICS_PATH=str(tmp_path / "metrics.prom"),
        ALERT_MIN_SAMPLES="5",
    )
    log = tmp_path / "app.log"
    _hostile_log(log, time.time() // 60 * 60 - 30 * 60)
    outputs: list[str] = []
    try:
        for _ in range(3):
            p.dd.script("/api/v1/series", Fail(403, body={"errors": [f"Forbidden: key {DD_KEY} app {DD_APP}"]}),
                        Fail(500, body={"errors": [f"echo DD-API-KEY: {DD_KEY}"]}))
            p.nr.script("/metric/v1", *[Fail(400, body={"error": f"bad Api-Key {NR_LICENSE}"})] * 4)
            p.slack.script = [(500, f"internal error at {p.slack.url}")] * 3
            proc = p.run(log)
            assert proc.returncode == 3, proc.stdout + proc.stderr
            outputs += [proc.stdout, proc.stderr]
            time.sleep(0.7)
        for args in (["alerts", "--state", str(p.state)], ["metrics", "--state", str(p.state), "--format", "json"],
                     ["report", "--state", str(p.state), "--out", str(tmp_path / "report.html")],
                     ["config", "show"], ["alerts", "--state", str(p.state), "check"]):
            proc = _logapm(p, *args)
            outputs += [proc.stdout, proc.stderr]
        assert (tmp_path / "report.html").exists()
        # The failures really happened and were reported (scrubbed).
        joined = "\n".join(outputs)
        assert "403" in joined or "forbidden" in joined.lower(), joined[-3000:]
    finally:
        p.stop()
    secrets = [DD_KEY, DD_APP, NR_LICENSE, SMTP_PASSWORD, SLACK_TOKEN, SLACK_PATH]
    forms = {s for secret in secrets for s in (secret, secret.replace("/", "%2F"))}
    artefacts = {f"output {i}": o.encode() for i, o in enumerate(outputs)}
    for path in tmp_path.rglob("*"):
        if path.is_file() and not path.name.endswith((".pem", ".key")):
            artefacts[str(path.relative_to(tmp_path))] = path.read_bytes()
    assert any(name.startswith("state.db") for name in artefacts) and "report.html" in artefacts
    assert any("dead-letters" in name for name in artefacts) and "metrics.prom" in artefacts
    leaks = [(name, s) for name, data in artefacts.items() for s in forms if s.encode() in data]
    assert leaks == []


def test_report_slack_and_email_escape_what_came_from_the_logs(tmp_path: Path) -> None:
    """Routes holding <script>, an <img onerror>, Slack's <!channel> and <@user>, mrkdwn and ANSI: the
    alert reaches Slack and email, and neither they nor the HTML report carry the markup raw."""
    p = kit.start_pipeline(tmp_path)
    p.extra_env.update(ALERT_MIN_SAMPLES="5")
    log = tmp_path / "app.log"
    _hostile_log(log, time.time() // 60 * 60 - 30 * 60)
    try:
        p.settle(log)
        report = _logapm(p, "report", "--state", str(p.state), "--out", str(tmp_path / "report.html"))
        assert report.returncode == 0, report.stderr
        # The terminal views: the run's summary (slowest routes), the alert list, the metrics table.
        views = [_logapm(p, "run", "--input", str(log), "--state", str(tmp_path / "view.db"), "--no-progress"),
                 _logapm(p, "alerts", "--state", str(p.state)),
                 _logapm(p, "metrics", "--state", str(p.state), "--metric", "apm.request")]
        for view in views:
            assert "api/" in view.stdout, view.stdout
            assert "\x1b" not in view.stdout + view.stderr, view.args
    finally:
        p.stop()
    assert p.slack.payloads and p.smtp.box, "no alert was sent: nothing was checked"
    html = (tmp_path / "report.html").read_text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html or "\\u003cscript" in html
    for raw in RAW_MARKUP:
        assert raw not in html, raw
        for payload in p.slack.payloads:
            import json

            assert raw not in json.dumps(payload, ensure_ascii=False), raw
    assert any("&lt;script&gt;" in json.dumps(payload) for payload in p.slack.payloads)
    for mail in p.smtp.box:
        body = mail.message.get_body(("html",))
        assert body is not None
        content = body.get_content()
        for raw in RAW_MARKUP:
            assert raw not in content, raw
        assert "\x1b" not in content and "\x1b" not in str(mail.message["Subject"])
    assert os.path.getsize(tmp_path / "report.html") > 0
