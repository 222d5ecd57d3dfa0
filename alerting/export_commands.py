"""``logapm export`` and ``logapm apply``: the alert rules as vendor monitors and the standard dashboard.

    logapm export monitors --vendor datadog|newrelic [--output FILE]
    logapm export dashboard --vendor datadog|newrelic [--output FILE]
    logapm apply monitors|dashboard --vendor datadog|newrelic

``export`` writes JSON (the bodies the vendor's API takes) and needs no key; ``apply`` creates or updates
through the vendor's API and changes nothing when the vendor already matches (see ``alerting.vendor``).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from alerting.vendor import VENDORS


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    export = subparsers.add_parser(
        "export", help="write vendor monitors (the alert rules) or the standard dashboard as JSON",
        description="Render the alert rules as Datadog monitors / New Relic NRQL conditions, or the standard "
                    "dashboard, as JSON (the bodies of the vendor's API).",
    )
    export.add_argument("what", choices=("monitors", "dashboard"))
    export.add_argument("--vendor", choices=VENDORS, required=True)
    export.add_argument("--config", metavar="FILE", help="TOML config file (custom rules, prefix)")
    export.add_argument("--output", "-o", metavar="FILE", help="write here instead of stdout")
    export.set_defaults(func=_export)

    apply = subparsers.add_parser(
        "apply", help="create or update vendor monitors or the dashboard (idempotent)",
        description="Create or update the monitors (alert rules) or the standard dashboard through the "
                    "vendor's API. Objects are found by their logapm marker; running twice changes nothing "
                    "the second time. Needs DATADOG_API_KEY + DATADOG_APP_KEY, or NEW_RELIC_API_KEY + "
                    "NEW_RELIC_ACCOUNT_ID.",
    )
    apply.add_argument("what", choices=("monitors", "dashboard"))
    apply.add_argument("--vendor", choices=VENDORS, required=True)
    apply.add_argument("--config", metavar="FILE", help="TOML config file (custom rules, prefix)")
    apply.set_defaults(func=_apply)


def _load(args: argparse.Namespace) -> tuple[Any, list[Any]] | None:
    from aggregator.config import ConfigError, load_config

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"logapm {args.command_name}: {exc}", file=sys.stderr)
        return None
    rules: list[Any] = []
    if args.what == "monitors":
        from alerting.rules import RuleError, load_rules

        try:
            rules = load_rules(config)
        except RuleError as exc:
            print(f"logapm {args.command_name}: {exc}", file=sys.stderr)
            return None
    return config, rules


def render(what: str, vendor: str, config: Any, rules: list[Any]) -> Any:
    if vendor == "datadog":
        from alerting.vendor import datadog as dd

        return dd.monitors(rules, config) if what == "monitors" else dd.dashboard(config)
    from alerting.vendor import newrelic as nr

    if what == "monitors":
        return nr.monitors(rules, config)
    account = config.get("sinks.newrelic.account_id")
    return nr.dashboard(config, int(account) if str(account or "").isdigit() else 0)


def _export(args: argparse.Namespace) -> int:
    args.command_name = "export"
    loaded = _load(args)
    if loaded is None:
        return 2
    config, rules = loaded
    text = json.dumps(render(args.what, args.vendor, config, rules), indent=2, sort_keys=False) + "\n"
    if args.output:
        with open(args.output, "w", encoding="utf-8") as handle:
            handle.write(text)
    else:
        sys.stdout.write(text)
    return 0


def _apply(args: argparse.Namespace) -> int:
    from alerting.vendor.common import VendorError

    args.command_name = "apply"
    loaded = _load(args)
    if loaded is None:
        return 2
    config, rules = loaded
    try:
        if args.vendor == "datadog":
            from alerting.vendor import datadog as dd

            report = dd.apply_monitors(rules, config) if args.what == "monitors" else dd.apply_dashboard(config)
        else:
            from alerting.vendor import newrelic as nr

            report = nr.apply_monitors(rules, config) if args.what == "monitors" else nr.apply_dashboard(config)
    except VendorError as exc:
        print(f"logapm apply: {exc}", file=sys.stderr)
        return 1
    for line in report.lines():
        print(line)
    return 0
