"""The whole pipeline on loopback for the fault and security tests: both vendor intakes, a real SMTP server
and the Slack stand-in, and ``logapm run`` as a child process configured to deliver and alert to them."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alert_servers import SlackServer, SmtpServer, start_slack, start_smtp
from intakes import DatadogIntake, NewRelicIntake, make_cert
from intakes.kit import DD_APP, DD_KEY, NR_LICENSE, PROXY_VARS

ROOT = Path(__file__).resolve().parents[2]
SLOW_ROUTE = "api/fault/checkout/"


@dataclass
class Pipeline:
    """Everything a run talks to, and the environment that points it there."""

    tmp: Path
    dd: DatadogIntake
    nr: NewRelicIntake
    smtp: SmtpServer
    slack: SlackServer
    stoppers: list[Any] = field(default_factory=list)
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def state(self) -> Path:
        return self.tmp / "state.db"

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in PROXY_VARS and not k.startswith(
            ("DATADOG_", "NEW_RELIC_", "APM_", "DD_", "LOGAPM_", "PERFORMANCE_ALERT_", "ALERT_"))}
        env.update(
            PYTHONPATH=str(ROOT), LOGAPM_STATE=str(self.state), LOGAPM_WORKERS="2",
            APM_PROVIDER="both", DATADOG_API_KEY=DD_KEY, DATADOG_APP_KEY=DD_APP, DATADOG_HOST=self.dd.url,
            DD_HOSTNAME="agg", NEW_RELIC_LICENSE_KEY=NR_LICENSE, NEW_RELIC_METRIC_HOST=f"127.0.0.1:{self.nr.port}",
            LOGAPM_NEW_RELIC_CA_CERTS=str(self.nr.tls.cert_file) if self.nr.tls else "",
            LOGAPM_SINK_RETRY_BASE_SECONDS="0.01", LOGAPM_SINK_RETRY_CAP_SECONDS="0.05",
            LOGAPM_SINK_RETRY_LATER_SECONDS="0.3", LOGAPM_SINK_RETRY_LATER_CAP_SECONDS="0.6",
            LOGAPM_SINK_MAX_ATTEMPTS="2", LOGAPM_SINK_TIMEOUT_SECONDS="1", LOGAPM_SINK_TIME_BUDGET_SECONDS="6",
            PERFORMANCE_ALERT_EMAIL_ENABLED="true", PERFORMANCE_ALERT_EMAIL_HOST=self.smtp.host,
            PERFORMANCE_ALERT_EMAIL_PORT=str(self.smtp.port), PERFORMANCE_ALERT_EMAIL_RECIPIENTS="oncall@example.com",
            PERFORMANCE_ALERT_SLACK_ENABLED="true", PERFORMANCE_ALERT_SLACK_WEBHOOK_URL=self.slack.url,
            ALERT_NOTIFY_TIMEOUT_SECONDS="5", ALERT_FOR_SECONDS="60",
        )
        env.update(self.extra_env)
        env.update(extra)
        return env

    def cmd(self, *inputs: Path, extra: tuple[str, ...] = ()) -> list[str]:
        args = [sys.executable, "-m", "aggregator.cli", "run", "--state", str(self.state), "--no-progress", "-q"]
        for p in inputs:
            args += ["--input", str(p)]
        return [*args, *extra]

    def run(self, *inputs: Path, timeout: float = 180, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.cmd(*inputs), capture_output=True, text=True, env=self.env(**env),
                              timeout=timeout, cwd=self.tmp)

    def run_killed(self, *inputs: Path, after: float) -> bool:
        """Start a run and SIGKILL its process group after ``after`` seconds; True if it was killed."""
        proc = subprocess.Popen(self.cmd(*inputs), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                env=self.env(), cwd=self.tmp, start_new_session=True)
        try:
            proc.wait(timeout=after)
            return False
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return True
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def settle(self, *inputs: Path, runs: int = 15) -> list[subprocess.CompletedProcess[str]]:
        """Clean runs (vendors up) until one exits 0 with nothing left in the outbox or the alert queue."""
        out = []
        for _ in range(runs):
            proc = self.run(*inputs)
            out.append(proc)
            if proc.returncode == 0 and not self.backlog():
                return out
            time.sleep(0.7 if proc.returncode != 75 else 0.3)
        raise AssertionError(f"the pipeline did not settle: {self.backlog()}\n" + out[-1].stdout + out[-1].stderr)

    def backlog(self) -> dict[str, int]:
        with sqlite3.connect(self.state) as db:
            rows = db.execute("SELECT sink || ':' || status, count(*) FROM outbox WHERE status != 'delivered'"
                              " GROUP BY 1").fetchall()
            rows += db.execute("SELECT 'alert:' || notifier || ':' || status, count(*) FROM alert_deliveries"
                               " WHERE status != 'sent' GROUP BY 1").fetchall()
        return dict(rows)

    def stop(self) -> None:
        for stop in reversed(self.stoppers):
            stop()


def start_pipeline(tmp: Path) -> Pipeline:
    cert = make_cert(tmp)
    dd = DatadogIntake(DD_KEY, DD_APP).start()
    nr = NewRelicIntake(NR_LICENSE, tls=cert).start()
    controller, smtp = start_smtp("plain", tmp)
    slack, server, thread = start_slack()
    assert isinstance(dd, DatadogIntake) and isinstance(nr, NewRelicIntake)
    p = Pipeline(tmp, dd, nr, smtp, slack)

    def stop_slack() -> None:
        server.shutdown()
        server.server_close()
        thread.join(5)

    p.stoppers += [dd.stop, nr.stop, controller.stop, stop_slack]
    return p


# --- what arrived ------------------------------------------------------------------------------------------

def dd_counts(dd: DatadogIntake, metric: str) -> dict[tuple[int, tuple[str, ...]], list[float]]:
    """Every accepted value of ``metric`` per (window, tags), in arrival order."""
    out: dict[tuple[int, tuple[str, ...]], list[float]] = {}
    for s in list(dd.series):
        if s["metric"] == metric:
            out.setdefault((int(s["timestamp"]), tuple(sorted(s["tags"]))), []).append(float(s["value"]))
    return out


def nr_counts(nr: NewRelicIntake, metric: str) -> dict[tuple[int, tuple[tuple[str, Any], ...]], list[float]]:
    out: dict[tuple[int, tuple[tuple[str, Any], ...]], list[float]] = {}
    for m in list(nr.metrics):
        if m["name"] == metric:
            key = (int(m["timestamp"]) // 1000, tuple(sorted((k, str(v)) for k, v in m["attributes"].items())))
            out.setdefault(key, []).append(float(m["value"]))
    return out


def per_window(accepted: dict[Any, list[float]]) -> Counter[int]:
    """Window start -> the sum over series of the newest (largest: counts only grow) accepted value."""
    total: Counter[int] = Counter()
    for (start, _), values in accepted.items():
        total[start] += int(max(values))
    return total


def repeats(accepted: dict[Any, list[float]]) -> int:
    """Copies of a point accepted again with the same value (a send repeated, not a window updated)."""
    return sum(len(v) - len(set(v)) for v in accepted.values())


def stored_notifications(state: Path) -> list[tuple[str, str, str, int]]:
    with sqlite3.connect(state) as db:
        return sorted(db.execute("SELECT rule, group_key, kind, at FROM alert_notifications").fetchall())


def notification_items(state: Path) -> Counter[tuple[str, str]]:
    """(rule, kind) of every notification in the store's log."""
    return Counter((r, k) for r, _, k, _ in stored_notifications(state))


KINDS = {"FIRING": "firing", "STILL FIRING": "repeat", "RESOLVED": "resolved"}


def title_counts(title: str) -> Counter[tuple[str, str]]:
    """``[FIRING 2, RESOLVED 1] rule (severity)`` -> {(rule, firing): 2, (rule, resolved): 1}."""
    head, _, rest = title.partition("] ")
    rule = rest.rsplit(" (", 1)[0]
    out: Counter[tuple[str, str]] = Counter()
    for part in head.lstrip("[").split(", "):
        word, _, n = part.rpartition(" ")
        out[(rule, KINDS[word])] += int(n)
    return out


def received(p: Pipeline) -> tuple[Counter[tuple[str, str]], Counter[tuple[str, str]]]:
    """(rule, kind) items received by email and by Slack, from the messages' titles."""
    mail: Counter[tuple[str, str]] = Counter()
    for m in p.smtp.box:
        mail += title_counts(str(m.message["Subject"]))
    slack: Counter[tuple[str, str]] = Counter()
    for payload in p.slack.payloads:
        slack += title_counts(payload["blocks"][0]["text"]["text"])
    return mail, slack


def request_event(ts: float, route: str, ms: float, status: int = 200) -> dict[str, Any]:
    from aggregator.loggen import rfc3339

    return {"timestamp": rfc3339(ts), "apm.schema": 1, "apm.kind": "request", "duration_ms": ms,
            "outcome": "success", "service.name": "muejam-backend", "deployment.environment": "production",
            "http.request.method": "POST", "http.route": route, "http.response.status_code": status}


def slow_episodes(start: float, minutes: int, slow: set[int], per_minute: int = 12) -> list[dict[str, Any]]:
    """Requests on one route, slow (900 ms) in the ``slow`` minutes: alerts that fire and resolve."""
    out = []
    for m in range(minutes):
        for i in range(per_minute):
            out.append(request_event(start + m * 60 + (i + 0.5) * 60 / per_minute, SLOW_ROUTE,
                                     (900.0 if m in slow else 40.0) + i))
    return out


def dump(obj: Any) -> str:
    return json.dumps(obj, indent=1, default=str)[:4000]
