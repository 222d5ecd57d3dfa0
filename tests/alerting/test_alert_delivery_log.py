"""The notification log on its own: expiry of deliveries a channel never took, and a notifier that raises
something unexpected (a bug) being reported and retried like a failure, without taking the run down."""

from __future__ import annotations

from pathlib import Path

from alert_servers import SlackServer, block_kit_problem

from aggregator.store import Store
from alerting.notify.base import AlertMessage, NotifyError
from alerting.notify.slack import SlackNotifier
from alerting.stage import EXPIRE_AFTER_SECONDS, send_due
from alerting.state import AlertStore, Notification

BODY = {"rule": "r", "kind": "firing", "at": 600, "severity": "warning", "metric": "apm.request.count", "op": ">",
        "threshold": 1.0, "unit": "", "value": 5.0, "samples": 30, "series": {}, "since": 600,
        "resolved_at": None, "span_seconds": 300, "message": "m", "description": ""}


class Recorder:
    def __init__(self, name: str, error: BaseException | None = None) -> None:
        self.name, self.error, self.sent = name, error, []  # type: ignore[var-annotated]

    def send(self, message: AlertMessage) -> None:
        if self.error is not None:
            raise self.error
        self.sent.append(message)


def setup(tmp_path: Path, created: float) -> tuple[Store, AlertStore]:
    store = Store(tmp_path / "s.db")
    alerts = AlertStore(store)
    with store.transaction():
        alerts.enqueue(Notification("r", (), "firing", 600, BODY), ["email", "slack"], created)
        # the same notification again (a re-judged point) is logged once
        assert alerts.enqueue(Notification("r", (), "firing", 600, BODY), ["email", "slack"], created) is None
    return store, alerts


def test_undelivered_notifications_expire_after_a_day(tmp_path: Path) -> None:
    """A delivery still pending 24 hours after it was due is given up and counted, not sent stale."""
    store, alerts = setup(tmp_path, created=1000.0)
    email = Recorder("email")
    report = send_due(alerts, [email], now=1000.0 + EXPIRE_AFTER_SECONDS + 1)
    assert report.expired == 2 and email.sent == []
    assert {d["status"] for n in alerts.notifications() for d in n["deliveries"].values()} == {"expired"}
    store.close()


def test_a_notifier_bug_is_reported_and_retried(tmp_path: Path) -> None:
    """An unexpected exception in one notifier is recorded as a failure (retry later); the other channel
    still delivers; a later run delivers the retried one exactly once."""
    store, alerts = setup(tmp_path, created=1000.0)
    broken, slack = Recorder("email", KeyError("bug")), Recorder("slack")
    report = send_due(alerts, [broken, slack], now=1000.0)
    assert "email" in report.failed and report.sent == {"slack": 1} and report.pending == {"email": 1}
    fixed = Recorder("email")
    assert send_due(alerts, [fixed, slack], now=1030.0).sent == {}  # backoff: not yet due
    assert send_due(alerts, [fixed, slack], now=1061.0).sent == {"email": 1}
    assert len(fixed.sent) == 1 and len(slack.sent) == 1
    assert send_due(alerts, [fixed, slack], now=5000.0).sent == {}
    store.close()


def test_one_failing_message_stops_that_channel_for_the_run(tmp_path: Path) -> None:
    """With messages for two rules due, a channel that fails on the first is not tried again in the same
    run (one timeout per channel per run, not one per message)."""
    store = Store(tmp_path / "s.db")
    alerts = AlertStore(store)
    with store.transaction():
        for rule in ("a", "b"):
            alerts.enqueue(Notification(rule, (), "firing", 600, {**BODY, "rule": rule}), ["slack"], 1000.0)
    calls = []

    class Down:
        name = "slack"

        def send(self, message: AlertMessage) -> None:
            calls.append(message.rule)
            raise NotifyError("down")

    send_due(alerts, [Down()], now=1000.0)
    assert calls == ["a"]
    store.close()


def test_slack_retry_after_is_honoured(tmp_path: Path, slack_server: SlackServer) -> None:
    """Slack answering 429 with Retry-After: 300 is not tried again before five minutes, then delivered."""
    store, alerts = setup(tmp_path, created=1000.0)
    slack_server.script.append((429, "rate_limited", {"Retry-After": "300"}))
    notifier = SlackNotifier(slack_server.url)
    assert "slack" in send_due(alerts, [notifier], now=1000.0).failed
    assert send_due(alerts, [notifier], now=1000.0 + 120).sent == {}
    assert slack_server.requests == 1
    assert send_due(alerts, [notifier], now=1000.0 + 301).sent == {"slack": 1}
    assert len(slack_server.take()) == 1
    store.close()


def test_dashboard_link_only_for_web_addresses(slack_server: SlackServer) -> None:
    """A dashboard setting that is not an http(s) URL is shown as text, never made a button or a link
    (Slack would refuse the whole message; a javascript: href in an email is unsafe)."""
    from alerting.notify.email import render_html
    from alerting.notify.slack import build_payload

    for url, linked in (("https://grafana.example/d/1", True), ("javascript:alert(1)", False),
                        ("grafana.local/d/1", False)):
        msg = AlertMessage(rule="r", severity="warning", items=[BODY], dashboard_url=url)
        payload = build_payload(msg)
        assert block_kit_problem(payload) is None
        assert (payload["blocks"][-1]["type"] == "actions") is linked
        assert ("href=" in render_html(msg)) is linked


def test_a_failing_rule_leaves_no_partial_writes(tmp_path: Path) -> None:
    """A rule whose metric computation raises half-way is reported; its cluster's writes are rolled back
    (no history rows, no notifications, no progress), and the other rules are judged normally."""
    from alert_timeline_kit import request_window

    from aggregator import catalog
    from aggregator.config import load_config
    from aggregator.windows_store import WindowsStore
    from alerting.rules import default_rules
    from alerting.stage import evaluate_rules

    store = Store(tmp_path / "s.db")
    with store.transaction():
        WindowsStore(store).put([request_window(k, "api/a/", 30, 900) for k in range(10)], now=0.0)
    config = load_config(environ={"ALERT_FOR_SECONDS": "0"})
    rules = [r for r in default_rules(config) if r.name in ("api_latency_p95", "slow_queries")]

    class Flaky:
        calls = 0

        def family_of(self, metric: str, prefix: str | None = None) -> str:
            return catalog.family_of(metric, prefix)

        def merge(self, aggs):  # type: ignore[no-untyped-def]
            return catalog.merge(aggs)

        def value(self, metric: str, agg, prefix: str | None = None):  # type: ignore[no-untyped-def]
            Flaky.calls += 1
            if Flaky.calls == 5:
                raise RuntimeError("extension bug")
            return catalog.value(metric, agg, prefix)

    report = evaluate_rules(store, config, rules, now=0.0, catalog=Flaky())
    assert report.errors == ["rule api_latency_p95: RuntimeError: extension bug"]
    alerts = AlertStore(store)
    assert alerts.history() == [] and alerts.notifications() == [] and alerts.last_eval("api_latency_p95") is None
    assert alerts.last_eval("slow_queries") is not None  # the other cluster went on
    report = evaluate_rules(store, config, rules, now=0.0)  # fixed: judged from the start, once
    assert [n.kind for n in report.notifications] == ["firing"]
    store.close()


def test_stage_on_a_store_opened_before_alerting_was_imported(tmp_path: Path) -> None:
    """`logapm run` opens the store, then resolves the alerting stage lazily: in a fresh process, the
    stage still finds (creates) its tables and judges."""
    import json
    import os
    import subprocess
    import sys

    script = (
        "import sys, json\n"
        "from aggregator.store import Store\n"
        "from aggregator.config import load_config\n"
        "from aggregator.model import RunContext\n"
        "store = Store(sys.argv[1])\n"
        "import alerting.stage\n"
        "r = alerting.stage.evaluate(RunContext(store=store, config=load_config(environ={}), now=0.0))\n"
        "print(json.dumps({'ok': r.ok, 'lines': r.lines}))\n"
    )
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path / "fresh.db")], cwd=root, text=True,
                          capture_output=True, timeout=120, env={**os.environ, "PYTHONPATH": str(root)})
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["ok"], out
