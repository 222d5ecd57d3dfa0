"""End to end: JSON log lines -> ``logapm run`` (a real child process per minute) -> windows -> alert
rules -> a real SMTP server and the local Slack webhook."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from alert_servers import SlackServer, SmtpServer
from alert_timeline_kit import notifier_env

ROOT = Path(__file__).resolve().parents[2]


def lines_for_minute(base: int, k: int, slow: bool) -> str:
    out = []
    for i in range(30):
        ts = base + k * 60 + i * 2
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{i * 7 % 1000:03d}Z"
        out.append(json.dumps({
            "timestamp": stamp, "apm.schema": 1, "apm.kind": "request",
            "duration_ms": (900.0 if slow else 100.0) + i, "outcome": "success", "service.name": "shop",
            "deployment.environment": "prod", "http.request.method": "GET",
            "http.route": "api/orders/<int:order_id>/", "http.response.status_code": 200,
        }))
    return "\n".join(out) + "\n"


def test_logapm_run_alerts_by_email_and_slack(tmp_path: Path, smtp_server: SmtpServer,
                                              slack_server: SlackServer) -> None:
    """Requests slow in minutes 3-8 of the log: the run that reads minute 5 sends the firing message, the
    run that reads minute 14 the resolved one, by both channels, and no other run sends anything; the run
    exits 0 throughout (alerting never fails the run when its channels work)."""
    base = int(time.time()) - 3 * 3600
    base -= base % 3600
    log = tmp_path / "app.log"
    log.write_text("")
    env = {**os.environ, **notifier_env(smtp_server.host, smtp_server.port, slack_server.url),
           "ALERT_FOR_SECONDS": "60", "LOGAPM_WORKERS": "1", "PYTHONPATH": str(ROOT)}
    env.pop("LOGAPM_CONFIG", None)
    sent: dict[int, list[str]] = {}
    for k in range(16):
        with log.open("a") as f:
            f.write(lines_for_minute(base, k, slow=3 <= k <= 8))
        proc = subprocess.run(
            [sys.executable, "-m", "aggregator.cli", "run", "--input", str(log), "--state",
             str(tmp_path / "state.db"), "--quiet"],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        mails = [str(m.message["Subject"]) for m in smtp_server.take()]
        slack = [p["blocks"][0]["text"]["text"] for p in slack_server.take()]
        assert mails == slack, f"run {k}"
        if mails:
            sent[k] = mails
    assert sent == {5: ["[FIRING 1] api_latency_p95 (warning)"], 14: ["[RESOLVED 1] api_latency_p95 (warning)"]}
