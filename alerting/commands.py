"""``logapm alerts``: the rules, current alert states, recent history and notification deliveries;
``logapm alerts test`` sends a test message through every enabled notifier; ``logapm alerts check``
validates the rules of the config file."""

from __future__ import annotations

import argparse
import sqlite3
import sys
from typing import Any


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "alerts", help="show alert states and history; `alerts test` sends a test notification",
        description="Show the alert rules, the current state of every alert, recent transitions and the "
                    "notification log with each notifier's delivery status.",
    )
    _common(parser)
    parser.add_argument("--limit", type=int, default=20, help="history and log entries shown (default: 20)")
    parser.set_defaults(func=_show)
    sub = parser.add_subparsers(title="actions", metavar="ACTION")
    test = sub.add_parser("test", help="send a test message through every enabled notifier")
    _common(test)
    test.set_defaults(func=_test)
    check = sub.add_parser("check", help="validate the alert rules (defaults and the config file's)")
    _common(check)
    check.set_defaults(func=_check)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--state", metavar="PATH", default=argparse.SUPPRESS,
                        help="state store file (default: run.state / LOGAPM_STATE)")
    parser.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS,
                        help="TOML config file (rules, notifiers)")


def _config(args: argparse.Namespace, command: str) -> Any:
    from aggregator.config import ConfigError, load_config

    try:
        return load_config(getattr(args, "config", None), overrides={"run.state": getattr(args, "state", None)})
    except ConfigError as exc:
        print(f"logapm {command}: {exc}", file=sys.stderr)
        return None


def _clean(text: object) -> str:
    """Tag values come from the logs: escaped like every other terminal view (``logapm trace``, the run
    summary, ``logapm metrics``)."""
    from aggregator.insights.text import printable

    return printable(str(text))


def _check(args: argparse.Namespace) -> int:
    from alerting.rules import RuleError, describe, load_rules

    config = _config(args, "alerts check")
    if config is None:
        return 2
    try:
        rules = load_rules(config)
    except RuleError as exc:
        print(f"logapm alerts check: {exc}", file=sys.stderr)
        return 2
    print(f"{len(rules)} rules OK")
    for line in describe(rules):
        print("  " + _clean(line))
    return 0


def _test(args: argparse.Namespace) -> int:
    from alerting.notify import AlertMessage, NotifyError, build_notifiers
    from alerting.stage import scrub

    config = _config(args, "alerts test")
    if config is None:
        return 2
    notifiers, problems = build_notifiers(config)
    for p in problems:
        print(f"  not usable: {p}")
    if not notifiers and not problems:
        print("no notifier is enabled (PERFORMANCE_ALERT_EMAIL_ENABLED, PERFORMANCE_ALERT_SLACK_ENABLED)",
              file=sys.stderr)
        return 1
    failed = bool(problems)
    message = AlertMessage(rule="test", severity="info", items=[], test=True,
                           dashboard_url=config.get("alerting.dashboard_url"))
    for n in notifiers:
        try:
            n.send(message)
        except NotifyError as exc:
            failed = True
            print(f"  {n.name}: FAILED: {scrub(str(exc), config.secrets())}")
        else:
            print(f"  {n.name}: sent")
    return 1 if failed else 0


def _show(args: argparse.Namespace) -> int:
    from aggregator.store import Store, StoreError
    from alerting.notify.base import utc
    from alerting.rules import RuleError, describe, format_value, load_rules
    from alerting.state import AlertStore

    config = _config(args, "alerts")
    if config is None:
        return 2
    try:
        rules = load_rules(config)
    except RuleError as exc:
        print(f"logapm alerts: {exc}", file=sys.stderr)
        return 2
    units = {r.name: r.unit for r in rules}
    print(f"Rules ({len(rules)}):")
    for line in describe(rules):
        print("  " + _clean(line))
    try:
        store = Store(config["run.state"], readonly=True)
    except StoreError as exc:
        print(f"\nNo alert state: {exc}")
        return 0
    try:
        alerts = AlertStore(store)
        try:
            groups = [g for g in alerts.all_groups() if g.state in ("pending", "firing")]
            history = alerts.history(args.limit)
            log = alerts.notifications(args.limit)
            errors = alerts.delivery_errors()
        except sqlite3.OperationalError:
            print("\nNo alert state yet (no run has evaluated the rules).")
            return 0
    finally:
        store.close()

    def series(key: tuple[tuple[str, str], ...]) -> str:
        return _clean(", ".join(f"{k}={v}" for k, v in key) or "overall")

    print("\nCurrent alerts:" if groups else "\nCurrent alerts: none pending or firing")
    for g in sorted(groups, key=lambda g: (g.state != "firing", g.rule, g.key)):
        since = g.firing_since if g.state == "firing" else g.active_since
        print(f"  {g.state.upper():8} {_clean(g.rule)}  {series(g.key)}  "
              f"{format_value(g.last_value, units.get(g.rule, ''))}  since {utc(since)}")
    if history:
        print(f"\nRecent transitions (newest first, event time, {len(history)}):")
        for t in history:
            print(f"  {utc(t.at)}  {_clean(t.rule)}  {series(t.key)}  {t.from_state} -> {t.to_state}  "
                  f"{format_value(t.value, units.get(t.rule, ''))}")
    if log:
        print(f"\nNotifications (newest first, {len(log)}):")
        for n in log:
            d = ", ".join(f"{name}: {v['status']}" + (f" ({v['attempts']} attempts)" if v["attempts"] > 1 else "")
                          for name, v in sorted(n["deliveries"].items())) or "no notifier enabled"
            print(f"  {utc(n['at'])}  {n['kind']:8} {_clean(n['rule'])}  {series(n['key'])}  [{d}]")
    for name, count, error in errors:
        print(f"\n{name}: {count} deliveries waiting; last error: {_clean(error)}")
    return 0
