"""``logapm metrics``: print the stored metric points (rendered by the catalog from the windows)."""

from __future__ import annotations

import argparse
import re
import sys
import time
from datetime import UTC, datetime


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "metrics", help="print the stored metric points (json lines or a table)",
        description="Print the metric points of the stored windows, as the sinks would send them.",
    )
    parser.add_argument("--state", metavar="PATH", help="state store file (default: run.state / LOGAPM_STATE)")
    parser.add_argument("--config", metavar="FILE", help="TOML config file (for the metric prefix)")
    parser.add_argument("--format", choices=("json", "table"), default="table",
                        help="json: one object per line (metric, tags, timestamp, value, type); table: for people")
    parser.add_argument("--metric", metavar="PREFIX", action="append",
                        help="only metrics whose name starts with PREFIX (repeatable)")
    parser.add_argument("--since", metavar="TIME",
                        help="windows starting at or after TIME: epoch seconds, ISO 8601, or a duration "
                             "back from the newest window (90s, 15m, 2h, 1d)")
    parser.add_argument("--until", metavar="TIME", help="windows starting before TIME (same forms)")
    parser.add_argument("--tag", metavar="KEY=VALUE", action="append", help="only series with this tag")
    parser.set_defaults(func=_run)


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_time(text: str, reference: float) -> float:
    """Epoch seconds, ISO 8601 (naive = UTC) or a duration back from ``reference``."""
    t = text.strip()
    m = _DURATION.match(t)
    if m:
        return reference - float(m.group(1)) * _UNITS[m.group(2)]
    try:
        return float(t)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(t.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"cannot read {text!r} as a time (epoch seconds, ISO 8601, or 15m/2h/1d)") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def _run(args: argparse.Namespace) -> int:
    import orjson

    from aggregator import catalog
    from aggregator.config import ConfigError, load_config
    from aggregator.store import Store, StoreError
    from aggregator.windows_store import WindowsStore

    try:
        config = load_config(args.config, overrides={"run.state": args.state})
    except ConfigError as exc:
        print(f"logapm metrics: {exc}", file=sys.stderr)
        return 2
    prefix = str(config["run.metric_prefix"])
    try:
        store = Store(config["run.state"], readonly=True)
    except StoreError as exc:
        print(f"logapm metrics: {exc}", file=sys.stderr)
        return 1
    match: dict[str, str] = {}
    for item in args.tag or ():
        key, sep, val = item.partition("=")
        if not sep:
            print(f"logapm metrics: --tag wants KEY=VALUE, got {item!r}", file=sys.stderr)
            return 2
        match[key] = val
    try:
        ws = WindowsStore(store)
        latest = ws.latest_window_start()
        reference = float(latest + int(config["run.window_seconds"])) if latest is not None else time.time()
        try:
            since = int(parse_time(args.since, reference)) if args.since else None
            until = int(parse_time(args.until, reference)) if args.until else None
        except ValueError as exc:
            print(f"logapm metrics: {exc}", file=sys.stderr)
            return 2
        prefixes = tuple(args.metric or ())
        rows = []
        out = sys.stdout
        for agg in ws.all_windows(since, until):
            if match and any(agg.series.tag(k, "\0") != v for k, v in match.items()):
                continue
            for p in catalog.points(agg, prefix):
                if prefixes and not p.metric.startswith(prefixes):
                    continue
                if args.format == "json":
                    out.write(orjson.dumps({"metric": p.metric, "tags": dict(p.tags), "timestamp": p.timestamp,
                                            "value": p.value, "type": p.type}).decode() + "\n")
                else:
                    rows.append(p)
        if args.format == "table":
            _table(rows, out)
    except BrokenPipeError:  # `logapm metrics | head`
        return 0
    finally:
        store.close()
    return 0


def _table(points: list, out) -> None:  # type: ignore[no-untyped-def,type-arg]
    from aggregator.insights.text import printable

    if not points:
        out.write("no metric points in the store for this selection\n")
        return
    header = ("time (UTC)", "metric", "value", "type", "tags")
    rows = [
        (datetime.fromtimestamp(p.timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S"), p.metric,
         f"{p.value:,.4g}" if abs(p.value) < 1e4 else f"{p.value:,.0f}", p.type,
         printable(",".join(f"{k}={v}" for k, v in p.tags)))  # tag values come from the logs
        for p in points
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    for r in [header, *rows]:
        out.write("  ".join(c.ljust(widths[i]) if i != 2 else c.rjust(widths[i]) for i, c in enumerate(r[:4]))
                  + "  " + r[4] + "\n")
