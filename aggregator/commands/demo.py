"""``logapm demo [--dir DIR] [--requests N]``: a demo Django app, realistic traffic, its logs aggregated,
the default alert rules judged and an HTML report written. Needs no keys and no servers."""

from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from aggregator.demo.runner import DEFAULT_REQUESTS, MINUTES

    parser = subparsers.add_parser(
        "demo", help="run the demo: a Django app, traffic, logs -> metrics, alerts and an HTML report",
        description="Start an embedded Django demo app (SQLite, local-memory cache), drive realistic traffic "
                    "through it, aggregate its JSON logs into the embedded store, evaluate the default alert "
                    "rules and write an HTML report. Nothing is sent anywhere.")
    parser.add_argument("--dir", default="logapm-demo",
                        help="where the logs, the state store and the report go (default: %(default)s)")
    parser.add_argument("--requests", type=int, default=DEFAULT_REQUESTS,
                        help="requests to send (default: %(default)s)")
    parser.add_argument("--minutes", type=int, default=MINUTES,
                        help="minutes of event time the traffic spans (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=7, help="seed of the traffic plan (default: %(default)s)")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from aggregator.demo.runner import run_demo

    if args.requests < 50:
        print("logapm demo: --requests must be at least 50 (the alert rules need samples)", file=sys.stderr)
        return 2
    if not 5 <= args.minutes <= 120:
        print("logapm demo: --minutes must be between 5 and 120", file=sys.stderr)
        return 2
    from aggregator.store import StoreError

    try:
        result = run_demo(args.dir, requests=args.requests, minutes=args.minutes, seed=args.seed)
    except (OSError, StoreError) as exc:
        print(f"logapm demo: {exc}", file=sys.stderr)
        return 1
    return 0 if result.ok else 1
