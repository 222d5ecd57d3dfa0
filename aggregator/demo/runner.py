"""``logapm demo`` from start to finish: app, traffic, logs, aggregator run, alerts, N+1 findings, report.

Every stage is the real one: the Django app is instrumented by ``logging_apm`` exactly as a project would
do it, its JSON lines are read by ``logapm run``'s own code path (``aggregator.run.execute``) into the
embedded SQLite store, the default alert rules are judged by the alerting stage of that run, and the
report is ``logapm report``'s. Nothing leaves the machine: sinks and notifiers are switched off for the
demo whatever the environment says.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aggregator.demo.console import Console

DEFAULT_REQUESTS = 1500
MINUTES = 15
THREADS = 8
# The scenario, in minutes from the start of the span: the search index goes cold for five minutes
# (the p95 alert fires, and resolves once a whole 5-minute span is healthy again).
INCIDENT = (3.0, 8.0)


@dataclass(slots=True)
class DemoResult:
    """What a demo run produced (the tests read it; the console shows it)."""

    directory: Path
    log_path: Path
    state_path: Path
    report_path: Path
    requests: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    events: int = 0
    fired: list[str] = field(default_factory=list)  # "rule group" of every alert that fired
    findings: int = 0
    charts: int = 0
    ok: bool = True


def _clean(directory: Path) -> list[str]:
    """Remove the previous demo's files (only those this demo writes)."""
    removed = []
    for name in ("app.log", "state.db", "state.db-wal", "state.db-shm", "state.db.lock",
                 "state.db.dead-letters.jsonl", "report.html"):
        path = directory / name
        if path.exists():
            path.unlink()
            removed.append(name)
    return removed


def _hhmm(ts: float) -> str:
    return time.strftime("%H:%M", time.gmtime(ts))


def run_demo(directory: str | os.PathLike[str] = "logapm-demo", *, requests: int = DEFAULT_REQUESTS,
             minutes: int = MINUTES, threads: int = THREADS, seed: int = 7,
             console: Console | None = None) -> DemoResult:
    out = console or Console()
    base = Path(directory).resolve()
    base.mkdir(parents=True, exist_ok=True)
    result = DemoResult(base, base / "app.log", base / "state.db", base / "report.html")
    removed = _clean(base)
    random.seed(seed)
    started = time.perf_counter()

    out.title(
        "logging-apm demo",
        "A Django app instrumented with logging_apm gets realistic traffic; its JSON logs are aggregated\n"
        "into percentiles, checked against the default alert rules and written up as an HTML report.",
    )
    out.kv("directory", str(base) + (" (previous demo files replaced)" if removed else ""))
    out.kv("app logs", f"{result.log_path.name}  (JSON lines: the app's timing events and its error logs)")
    out.kv("state", f"{result.state_path.name}  (the aggregator's SQLite store)")
    out.print()

    end = time.time() - 30.0  # the span ends just before now: every event is in the past, none is "future"
    start = end - minutes * 60.0
    incident = (start + INCIDENT[0] * 60.0 * minutes / MINUTES, start + INCIDENT[1] * 60.0 * minutes / MINUTES)

    with tempfile.TemporaryDirectory(prefix="logapm-demo-db-") as tmp:
        _run_app(out, result, tmp=Path(tmp), start=start, end=end, incident=incident, requests=requests,
                 threads=threads, seed=seed)
    _aggregate(out, result)
    _report(out, result)
    out.print()
    took = time.perf_counter() - started
    out.print(out.style(f"Done in {took:.1f} s.", "bold") + " Open the report in a browser:")
    out.print("  " + out.style(result.report_path.as_uri(), "cyan"))
    out.print()
    out.print(out.style("Try next:", "dim"))
    out.print(f"  logapm report --state {result.state_path} --out report.html")
    out.print(f"  logapm metrics --state {result.state_path}")
    out.print(f"  logapm run --input {result.log_path} --state {result.state_path}   # new lines only, exactly once")
    return result


def _run_app(out: Console, result: DemoResult, *, tmp: Path, start: float, end: float,
             incident: tuple[float, float], requests: int, threads: int, seed: int) -> None:
    from aggregator.demo import app as demo_app
    from aggregator.demo import clock, traffic

    try:
        from aggregator.demo import tasks
    except ModuleNotFoundError as exc:  # the celery extra is not installed: the demo runs without tasks
        if exc.name not in ("celery", "kombu"):
            raise
        tasks = None  # type: ignore[assignment]
    from aggregator.demo.standin import PaymentsStandIn

    out.step("Starting the demo app")
    payments = PaymentsStandIn(seed=seed).start()
    try:
        scenario = {
            "incident": incident, "search_ms": 90.0, "search_incident_ms": 650.0,
            "payments_url": payments.url, "export_failure_rate": 0.3, "cache_seconds": 600,
            "celery": tasks is not None,
        }
        app = demo_app.start_app(log_path=result.log_path, db_path=tmp / "demo.sqlite3", scenario=scenario,
                                 seed=seed)
        from logging_apm import http

        # As a project would in its settings or AppConfig: name the outside service behind a host.
        http.install(services={payments.host_port: "payments"})
        out.detail(f"Django {_django_version()}, SQLite in {tmp}, local-memory cache, logging_apm middleware")
        if tasks is not None:
            out.detail("Celery worker in this process (in-memory broker) for receipts and recommendations")
        else:
            out.detail("Celery is not installed (pip install 'logging-apm[celery]'): no tasks in this demo", "yellow")
        out.detail(f"payments API stand-in on {payments.url}   {app.stories} stories seeded")
        out.detail("endpoints: story page (cached), like, feed (N+1), search, checkout (payments API), export")
        out.print()

        calls = traffic.plan(requests, start, end, stories=app.stories, seed=seed)
        out.step(f"Driving traffic: {len(calls):,} requests over {(end - start) / 60:.0f} minutes of event time "
                 f"({_hhmm(start)}–{_hhmm(end)} UTC)")
        out.detail(f"scenario: the search index goes cold from {_hhmm(incident[0])} to {_hhmm(incident[1])}; "
                   "the feed has an N+1; exports fail 30% of the time", "dim")

        next_sample = start
        samples = 0
        clock_at = start  # the event time reached: requests finish out of order, the clock only advances

        def progress(done: int, total: int, call: Any, res: Any) -> None:
            nonlocal next_sample, samples, clock_at
            clock_at = max(clock_at, call.at)
            if tasks is not None and call.at >= next_sample:  # the queue-depth sampler, every 30 s
                samples += tasks.sample_queue(call.at)
                next_sample = call.at + 30.0
            errors = sum(n for s, n in res.statuses.items() if s >= 500)
            published = f"  {tasks.tally.published:,} tasks" if tasks is not None else ""
            out.bar(done, total, f"{done:,}/{total:,} requests  event time {_hhmm(clock_at)}  "
                                 f"{errors:,} errors (5xx){published}")

        with clock.shifted_clock(), (tasks.running_worker() if tasks is not None else nullcontext()):
            drive = traffic.drive(calls, threads=threads, on_progress=progress)
            drained = tasks.wait_idle() if tasks is not None else True
        demo_app.flush_logs()
        result.requests = drive.sent
        result.statuses = dict(drive.statuses)
        size = result.log_path.stat().st_size if result.log_path.exists() else 0
        lines = _count_lines(result.log_path)
        statuses = ", ".join(f"{s}: {n:,}" for s, n in sorted(drive.statuses.items()))
        out.detail(f"sent {drive.sent:,} requests in {drive.elapsed:.1f} s ({drive.sent / max(drive.elapsed, 1e-9):,.0f}"
                   f"/s) -> {statuses}")
        if tasks is not None:
            out.detail(f"Celery worker ran {tasks.tally.finished:,} of {tasks.tally.published:,} tasks"
                       + ("" if drained else " (gave up waiting for the rest)") + f"; {samples} queue-depth samples")
        out.detail(f"the app wrote {lines:,} log lines ({size / 1e6:.1f} MB) to {result.log_path.name}; "
                   f"payments stand-in answered {payments.calls:,} calls")
        for failure in drive.failures[:5]:
            out.detail(f"client error: {failure}", "red")
            result.ok = False
        out.print()
    finally:
        payments.stop()


def _django_version() -> str:
    import django

    return django.get_version()


def _count_lines(path: Path) -> int:
    if not path.exists():
        return 0
    with path.open("rb") as fh:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b""))


def demo_config(result: DemoResult) -> Any:
    """The run's configuration: the environment's thresholds, but never a vendor, email or Slack."""
    from aggregator.config import load_config

    return load_config(overrides={
        "run.state": str(result.state_path), "run.inputs": [str(result.log_path)], "run.workers": 1,
        "sinks.provider": "", "alerting.email.enabled": False, "alerting.slack.enabled": False,
    }, environ={k: v for k, v in os.environ.items() if k != "LOGAPM_CONFIG"})


def _aggregate(out: Console, result: DemoResult) -> None:
    from aggregator.run import execute
    from aggregator.summary import summary_lines

    config = demo_config(result)
    out.step("Aggregating the logs (logapm run on the embedded SQLite store)")
    warnings: list[str] = []
    report = execute(config, inputs=[str(result.log_path)], state_path=result.state_path, warn=warnings.append)
    result.events = report.events
    for line in summary_lines(report):
        out.detail(line)
    for warning in warnings:
        out.detail(f"warning: {warning}", "yellow")
    if not report.ok:
        result.ok = False
    out.print()
    _show_alerts(out, result, config)
    _show_findings(out, result)


def _show_alerts(out: Console, result: DemoResult, config: Any) -> None:
    from aggregator.store import Store

    try:
        from alerting.rules import default_rules, format_value
        from alerting.state import AlertStore
    except ModuleNotFoundError:
        out.step("Alerts")
        out.detail("alerting is not installed: no rule was judged", "yellow")
        out.print()
        return
    rules = {r.name: r for r in default_rules(config)}
    span = int(config["alerting.span_seconds"]) // 60
    pending = int(config["alerting.for_seconds"]) // 60
    out.step(f"Alerts: the default rules, judged in event time over {span}-minute spans "
             f"(firing after {pending} minutes in breach)")
    with Store(result.state_path, readonly=True) as store:
        alerts = AlertStore(store)
        history = sorted(alerts.history(limit=100_000), key=lambda t: (t.at, t.rule))
        states = {(g.rule, g.key): g for g in alerts.all_groups()}
    fired: dict[tuple[str, Any], int] = {}
    for t in history:
        if t.to_state == "firing":
            fired.setdefault((t.rule, t.key), t.at)
    if not fired:
        out.detail("no alert fired (thresholds come from the environment: API_P95_THRESHOLD_MS, ...)", "yellow")
    for (rule_name, key), since in sorted(fired.items(), key=lambda kv: kv[1]):
        rule = rules.get(rule_name)
        group = " ".join(v for _, v in key) or "(overall)"
        state = states.get((rule_name, key))
        now_state = state.state if state is not None else "firing"
        shown_value = format_value(state.last_value, rule.unit) if state is not None and rule else "?"
        threshold = f" {rule.op} {format_value(rule.threshold, rule.unit)}" if rule else ""
        if now_state == "firing":
            tag = out.style("FIRING  ", "bold", "red")
        else:
            tag = out.style("RESOLVED", "bold", "green")
        resolved = [h.at for h in history if h.rule == rule_name and h.key == key and h.to_state == "resolved"]
        ended = f", resolved {_hhmm(resolved[-1])}" if now_state != "firing" and resolved else ""
        out.detail(f"{tag} {rule_name}  {group}  fired {_hhmm(since)} UTC{ended}  "
                   f"(last value {shown_value}, threshold{threshold or ' ?'})")
        result.fired.append(f"{rule_name} {group}")
    out.print()


def _show_findings(out: Console, result: DemoResult) -> None:
    from aggregator.insights.findings import load_findings
    from aggregator.store import Store

    out.step("N+1 queries found in the traces")
    with Store(result.state_path, readonly=True) as store:
        findings = load_findings(store.conn)
    result.findings = len(findings)
    if not findings:
        out.detail("none")
    for f in findings[:3]:
        text = f.query_text if len(f.query_text) <= 100 else f.query_text[:99] + "…"
        out.detail(f"{f.method} {f.route}: {f.executions_per_request:.0f} executions per request in "
                   f"{f.requests:,} requests ({f.time_per_request_ms:.1f} ms each)")
        out.detail(f"  {text}", "dim")
        out.detail(f"  example: logapm trace {f.example_trace_id} --input {result.log_path}", "dim")
    out.print()


def _report(out: Console, result: DemoResult) -> None:
    from aggregator.commands.report import alert_changes
    from aggregator.report import write_report

    out.step("Writing the report")
    written = write_report(result.state_path, result.report_path, config=demo_config(result),
                           alerts=alert_changes, title="logging-apm demo: demo-stories")
    result.charts = written.charts
    out.detail(f"{result.report_path}  ({written.bytes / 1024:,.0f} KiB, {written.charts} charts, "
               "self-contained: open it offline)")


def remove_demo(directory: str | os.PathLike[str]) -> None:  # pragma: no cover - a convenience for users
    shutil.rmtree(directory, ignore_errors=True)
