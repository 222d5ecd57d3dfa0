"""``logapm demo`` end to end, as a user runs it: a subprocess (Django is configured once per process), in a
temporary directory, with a smaller traffic plan than the default to keep the suite quick.

One demo run (module fixture) feeds every test: what the console says, what the logs and the store hold,
and the report, opened in headless Chromium.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
from conftest import ROOT
from test_report_browser import _CHART_PROBE, ARTIFACTS, DevTools, Page

from aggregator.config import load_config
from aggregator.insights.findings import load_findings
from aggregator.store import Store
from aggregator.windows_store import WindowsStore

REQUESTS = 600


@dataclass(frozen=True)
class DemoRun:
    directory: Path
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    directory = tmp_path_factory.mktemp("demo") / "out"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("APM_", "DATADOG_", "NEW_RELIC_", "PERFORMANCE_ALERT_", "LOGAPM_"))}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.run(
        [sys.executable, "-m", "aggregator.cli", "demo", "--dir", str(directory), "--requests", str(REQUESTS)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=280,
    )
    return DemoRun(directory, proc.returncode, proc.stdout, proc.stderr)


def _ok(demo: DemoRun) -> None:
    assert demo.returncode == 0, f"demo failed:\n{demo.stdout[-4000:]}\n{demo.stderr[-4000:]}"


def test_demo_console_tells_the_story(demo: DemoRun) -> None:
    """The console walks through the steps, shows progress, the run summary, at least one fired alert (the
    slow search's p95 over 500 ms), the feed's N+1 finding and where the report is; nothing on stderr."""
    _ok(demo)
    out = demo.stdout
    for step in ("Starting the demo app", "Driving traffic", "Aggregating the logs", "Alerts", "N+1 queries",
                 "Writing the report"):
        assert step in out, step
    assert "100%" in out
    assert "read " in out and "events:" in out  # the run summary
    assert "FIRING" in out or "RESOLVED" in out
    assert "api_latency_p95  api/search/" in out
    assert "GET api/feed/" in out and "executions per request" in out
    assert (demo.directory / "report.html").as_uri() in out
    assert demo.stderr.strip() == ""


def test_demo_logs_and_store_agree_exactly(demo: DemoRun) -> None:
    """Every request the demo sent is one request event in the log and is counted once in the store's
    windows, spread over more than ten one-minute windows of event time; the error logs of the app are in
    the same file and are not counted as events."""
    _ok(demo)
    lines = (demo.directory / "app.log").read_bytes().splitlines()
    docs = [orjson.loads(line) for line in lines]
    requests = [d for d in docs if d.get("apm.kind") == "request"]
    plain = [d for d in docs if "apm.schema" not in d]
    assert len(requests) == REQUESTS
    # The run read every line the app wrote: the summary's count is the file's.
    read = re.search(r"read ([\d,]+) lines", demo.stdout)
    assert read is not None and int(read.group(1).replace(",", "")) == len(lines)
    assert plain and all(d["logger"] == "django.request" for d in plain)
    kinds = {d.get("apm.kind") for d in docs}
    assert {"request", "db", "cache", "external", "task", "metric"} <= kinds
    with Store(demo.directory / "state.db", readonly=True) as store:
        windows = list(WindowsStore(store).windows("request", 0, 2**40))
        assert sum(w.count for w in windows) == REQUESTS
        assert len({w.start for w in windows}) > 10
        errors = sum(w.errors for w in windows)
        assert errors == sum(1 for d in requests if d["http.response.status_code"] >= 500)
        findings = load_findings(store.conn)
    assert any(f.route == "api/feed/" and f.executions_per_request >= 20 for f in findings)


def test_demo_alert_fired_in_event_time(demo: DemoRun) -> None:
    """The p95 alert on the search fired at an event time inside the demo's span (during the incident),
    recorded in the store's alert history."""
    _ok(demo)
    from alerting.state import AlertStore

    with Store(demo.directory / "state.db", readonly=True) as store:
        history = AlertStore(store).history(limit=1000)
        latest = WindowsStore(store).latest_window_start()
    fired = [t for t in history if t.rule == "api_latency_p95" and t.to_state == "firing"
             and dict(t.key).get("route") == "api/search/"]
    assert fired
    assert latest is not None and latest - 20 * 60 < fired[-1].at <= latest + 60


def test_demo_report_renders_every_chart(demo: DemoRun, tmp_path: Path) -> None:
    """The demo's report, opened in headless Chromium: no console error, no network request, and every
    chart (tasks and queue depth included) draws data marks. The screenshot is kept."""
    _ok(demo)
    report = demo.directory / "report.html"
    devtools = DevTools(tmp_path / "profile")
    try:
        page = Page(devtools)
        page.open(report.as_uri())
        info = page.evaluate(_CHART_PROBE)
        page.screenshot(ARTIFACTS / "demo-report.png")
        problems = page.problems()
        requests = [u for u in page.requests() if u != report.as_uri()]
    finally:
        devtools.close()
    assert problems == []
    assert requests == []
    blank = [c for c in info["charts"] if c["marks"] == 0 or c["drawn"] == 0 or "empty" in c["cls"]]
    assert blank == []
    assert len(info["charts"]) >= 15
    assert "api/search/" in info["text"] and "api_latency_p95" in info["text"]


def test_demo_refuses_bad_arguments() -> None:
    """Arguments that cannot make a meaningful demo are refused with a message, before anything starts."""
    proc = subprocess.run([sys.executable, "-m", "aggregator.cli", "demo", "--requests", "3"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "--requests" in proc.stderr


def test_config_of_the_demo_never_sends_anything(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever the environment says, the demo's run has no sink and no notifier."""
    from aggregator.demo.runner import DemoResult, demo_config

    env = {"APM_PROVIDER": "datadog", "DATADOG_API_KEY": "k", "PERFORMANCE_ALERT_SLACK_ENABLED": "true",
           "PERFORMANCE_ALERT_EMAIL_ENABLED": "true"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    config = demo_config(DemoResult(Path("d"), Path("d/app.log"), Path("d/state.db"), Path("d/r.html")))
    assert config["sinks.provider"] == ""
    assert config["alerting.email.enabled"] is False and config["alerting.slack.enabled"] is False
    assert load_config(environ=env)["sinks.provider"] == "datadog"  # the override is what made the difference
