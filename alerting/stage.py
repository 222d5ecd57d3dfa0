"""The alerting stage of a run (after the run's commit): judge the rules, then send what is due.

1. Evaluation, in one store transaction: new group states, their history, and the notifications they make
   due (one delivery row per enabled notifier). Killed before the commit: the next run judges the same
   points again and makes the same notifications due. Nothing is sent inside the transaction.
2. Sending, per notifier: the pending deliveries, one message per rule. Each message is marked sent in its
   own commit as soon as the notifier accepted it. A notifier that fails keeps its deliveries pending for
   a later run (backoff, never more than one failed attempt per notifier per run, each attempt bounded by
   ``alerting.notify_timeout_seconds``), and is reported, never raised: the stage never blocks metric
   delivery or the next run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aggregator.model import RunContext, StageResult, WindowReader
from alerting.evaluate import EvaluationReport, Evaluator, MetricCatalog
from alerting.notify import AlertMessage, Notifier, NotifyError, build_notifiers, enabled_names
from alerting.rules import Rule, RuleError, load_rules
from alerting.state import AlertStore, PendingDelivery

log = logging.getLogger("alerting")

EXPIRE_AFTER_SECONDS = 24 * 3600  # a delivery still failing after a day is given up (and reported)
HISTORY_DAYS = 30
MAX_BACKOFF_SECONDS = 3600
SEND_BUDGET_FACTOR = 3  # at most this many timeouts' worth of sending per notifier per run


@dataclass(slots=True)
class SendReport:
    sent: dict[str, int] = field(default_factory=dict)  # notifier -> messages
    notifications: dict[str, int] = field(default_factory=dict)  # notifier -> notifications delivered
    failed: dict[str, str] = field(default_factory=dict)  # notifier -> error (secrets scrubbed)
    expired: int = 0
    pending: dict[str, int] = field(default_factory=dict)  # notifier -> still waiting


def backoff(attempts: int) -> float:
    """Seconds until a failed delivery is due again: 1, 2, 4, ... minutes, at most an hour."""
    return float(min(MAX_BACKOFF_SECONDS, 60 * 2 ** max(0, attempts - 1)))


def scrub(text: str, secrets: Sequence[str]) -> str:
    for s in secrets:
        if s:
            text = text.replace(s, "***")
    return text


def group_by_rule(deliveries: Sequence[PendingDelivery]) -> dict[str, list[PendingDelivery]]:
    out: dict[str, list[PendingDelivery]] = {}
    for d in deliveries:
        out.setdefault(d.rule, []).append(d)
    return out


def message_for(rule: str, deliveries: Sequence[PendingDelivery], dashboard_url: str | None) -> AlertMessage:
    items = [d.body for d in deliveries]
    order = {"critical": 0, "warning": 1, "info": 2}
    severity = min((str(i.get("severity", "warning")) for i in items), key=lambda s: order.get(s, 3))
    return AlertMessage(rule=rule, severity=severity, items=items, dashboard_url=dashboard_url)


def send_due(
    alerts: AlertStore,
    notifiers: Sequence[Notifier],
    *,
    now: float,
    dashboard_url: str | None = None,
    secrets: Sequence[str] = (),
    timeout: float = 10.0,
    clock: Any = time.monotonic,
) -> SendReport:
    """Send every due delivery, one message per (notifier, rule), recording each outcome at once."""
    report = SendReport()
    with alerts.store.transaction():
        report.expired = alerts.expire(now - EXPIRE_AFTER_SECONDS)
    for notifier in notifiers:
        name = notifier.name
        due = alerts.due(name, now)
        started = clock()
        for rule, deliveries in group_by_rule(due).items():
            if name in report.failed or clock() - started > SEND_BUDGET_FACTOR * timeout:
                break  # the rest waits for the next run; one slow channel cannot hold up the run
            ids = [d.notification_id for d in deliveries]
            with alerts.store.transaction():
                alerts.mark_attempt(name, ids)
            try:
                notifier.send(message_for(rule, deliveries, dashboard_url))
            except NotifyError as exc:
                error = scrub(str(exc), secrets)
                attempts = max(d.attempts for d in deliveries) + 1
                wait = max(backoff(attempts), min(float(exc.retry_after or 0.0), MAX_BACKOFF_SECONDS))
                with alerts.store.transaction():
                    alerts.mark_failed(name, ids, error, now + wait)
                report.failed[name] = error
                log.warning("alert notifier %s failed: %s (retried on a later run)", name, error)
                continue
            except Exception as exc:  # a bug in a notifier must not take the run down either
                error = scrub(f"{type(exc).__name__}: {exc}", secrets)
                with alerts.store.transaction():
                    alerts.mark_failed(name, ids, error, now + backoff(max(d.attempts for d in deliveries) + 1))
                report.failed[name] = error
                log.warning("alert notifier %s raised %s (retried on a later run)", name, error)
                continue
            with alerts.store.transaction():
                alerts.mark_sent(name, ids, now)
            report.sent[name] = report.sent.get(name, 0) + 1
            report.notifications[name] = report.notifications.get(name, 0) + len(ids)
        waiting = len(alerts.due(name, float("inf")))
        if waiting:
            report.pending[name] = waiting
    return report


def reader_for(store: Any) -> WindowReader:
    from aggregator.windows_store import WindowsStore

    return WindowsStore(store)


def evaluate_rules(
    store: Any,
    config: Any,
    rules: Sequence[Rule],
    *,
    now: float,
    reader: WindowReader | None = None,
    catalog: MetricCatalog | None = None,
) -> EvaluationReport:
    """Step 1 alone (the tests and ``logapm alerts`` use it): judge and log, in one transaction."""
    reader = reader or reader_for(store)  # first: importing it registers the windows' migrations
    alerts = AlertStore(store)  # applies the registered migrations not applied yet
    evaluator = Evaluator(
        alerts,
        reader,
        width=int(config.get("run.window_seconds", 60)),
        prefix=str(config.get("run.metric_prefix", "apm")),
        max_catchup_seconds=int(config.get("alerting.max_catchup_seconds", 6 * 3600)),
        send_resolved=bool(config.get("alerting.send_resolved", True)),
        notifiers=enabled_names(config),
        catalog=catalog,
        now=now,
    )
    with store.transaction():
        report = evaluator.run(rules)
        if report.points:
            latest = max((alerts.last_eval(r.name) or 0) for r in rules) if rules else 0
            alerts.prune(latest - HISTORY_DAYS * 86400)
    return report


def evaluate(ctx: RunContext) -> StageResult:
    """The post-commit stage ``logapm run`` calls: evaluate, then send. Reports; never raises for a
    failing rule file, store read or notifier."""
    result = StageResult(name="alerting")
    config = ctx.config
    try:
        rules = load_rules(config)
    except RuleError as exc:
        result.ok = False
        result.lines.append(f"rules refused: {exc}")
        return result
    try:
        ev = evaluate_rules(ctx.store, config, rules, now=ctx.now)
    except Exception as exc:
        result.ok = False
        result.lines.append(f"evaluation failed: {type(exc).__name__}: {exc}")
        log.exception("alert evaluation failed")
        return result
    result.counters.update(
        rules=len(rules), points=ev.points, firing=ev.firing, pending=ev.pending,
        notifications=len(ev.notifications),
    )
    if ev.errors:
        result.ok = False
        result.lines.extend(ev.errors)
    notifiers, problems = build_notifiers(config)
    for p in problems:
        result.ok = False
        result.lines.append(f"notifier not usable: {p}")
    secrets = config.secrets() if hasattr(config, "secrets") else ()
    try:
        sent = send_due(
            AlertStore(ctx.store), notifiers, now=ctx.now, dashboard_url=config.get("alerting.dashboard_url"),
            secrets=secrets, timeout=float(config.get("alerting.notify_timeout_seconds", 10.0)),
        )
    except Exception as exc:  # the store itself failing (disk full, locked): pending stays pending
        result.ok = False
        result.lines.append(f"sending failed, retried next run: {scrub(f'{type(exc).__name__}: {exc}', secrets)}")
        return result
    result.counters["messages_sent"] = sum(sent.sent.values())
    result.counters["notifications_delivered"] = sum(sent.notifications.values())
    result.counters["delivery_failures"] = len(sent.failed)
    result.counters["deliveries_expired"] = sent.expired
    summary = f"{len(rules)} rules, {ev.points} evaluations, {ev.firing} firing, {ev.pending} pending"
    if ev.notifications:
        enabled = enabled_names(config)
        summary += f"; {len(ev.notifications)} notifications " + (
            "due" if enabled else "logged (no notifier enabled: PERFORMANCE_ALERT_*_ENABLED)")
    if sent.sent:
        summary += "; sent " + ", ".join(f"{n} {k} message(s)" for k, n in sorted(sent.sent.items()))
    result.lines.insert(0, summary)
    for name, error in sorted(sent.failed.items()):
        result.ok = False
        result.lines.append(f"{name} failed, {sent.pending.get(name, 0)} waiting for a later run: {error}")
    if sent.expired:
        result.ok = False
        result.lines.append(f"{sent.expired} deliveries given up after {EXPIRE_AFTER_SECONDS // 3600}h")
    return result
