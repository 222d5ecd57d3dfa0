"""``logapm report --state PATH --out report.html``: one self-contained HTML page of the store's metrics.

This module composes the report: the windows and N+1 findings come from the aggregator's store, the alert
timeline from alerting's tables, read here (the CLI layer) so that ``aggregator.report`` never imports the
alerting stage.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the report package is imported when a report is made, not by every `logapm` command
    from aggregator.report.data import AlertChange, Span
    from aggregator.store import Store


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "report", help="write a self-contained HTML report (charts of latency, errors, queries, alerts...)",
        description="Write one HTML file with charts over time of the metrics in the state store. The file "
                    "needs no network access to be viewed.")
    parser.add_argument("--state", help="state store (default: run.state / LOGAPM_STATE)")
    parser.add_argument("--out", default="logapm-report.html", help="HTML file to write (default: %(default)s)")
    parser.add_argument("--config", help="TOML config file (thresholds drawn on the charts, window width)")
    parser.add_argument("--hours", type=float, default=24.0,
                        help="event time covered, ending at the newest window (default: %(default)s)")
    parser.add_argument("--service", help="only requests of this service")
    parser.add_argument("--env", help="only requests of this environment")
    parser.add_argument("--title", default="logging-apm report", help="page title")
    parser.set_defaults(func=_run)


def _group_label(key: Any) -> str:
    return " ".join(str(v) for _, v in key)


def alert_changes(store: Store, span: Span) -> list[AlertChange]:
    """Alert transitions and sent notifications in ``span`` (event time), when alerting is installed and
    has tables in this store."""
    from aggregator.report.data import AlertChange
    try:
        state = importlib.import_module("alerting.state")
    except ModuleNotFoundError:
        return []
    exists = store.conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'alert_history'").fetchone()
    if not exists:
        return []
    alert_store = state.AlertStore(store)
    out: list[AlertChange] = []
    for t in alert_store.history(limit=100_000):
        if span.start <= t.at <= span.end:
            out.append(AlertChange(t.rule, _group_label(t.key), t.to_state, int(t.at), t.value))
    for n in alert_store.notifications():
        if span.start <= n["at"] <= span.end:
            sent = [name for name, d in n["deliveries"].items() if d["status"] == "sent"]
            detail = f"{n['kind']} notification" + (f" sent by {', '.join(sorted(sent))}" if sent else "")
            out.append(AlertChange(n["rule"], _group_label(n["key"]), n["kind"], int(n["at"]), None, detail,
                                   notified=True))
    return out


def _run(args: argparse.Namespace) -> int:
    from aggregator.config import ConfigError, load_config
    from aggregator.report import write_report
    from aggregator.store import StoreError

    try:
        config = load_config(args.config, overrides={"run.state": args.state})
    except ConfigError as exc:
        print(f"logapm report: {exc}", file=sys.stderr)
        return 2
    match = {k: v for k, v in (("service", args.service), ("env", args.env)) if v}
    state = Path(config["run.state"])
    try:
        result = write_report(state, args.out, config=config, hours=args.hours, alerts=alert_changes,
                              match=match or None, title=args.title)
    except StoreError as exc:
        print(f"logapm report: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"logapm report: cannot write {args.out}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    if result.empty:
        print(f"logapm report: {state} holds no windows yet; wrote an empty report to {result.path}")
    else:
        print(f"wrote {result.path} ({result.bytes / 1024:,.0f} KiB, {result.charts} charts, "
              f"{(result.end - result.start) / 60:,.0f} min of event time)")
    return 0
