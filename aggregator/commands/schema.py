"""``logapm schema``: print the JSON Schema of the event line (schema 1)."""

from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("schema", help="print the JSON Schema of the timing event line")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from logging_apm.schema import json_schema_text

    sys.stdout.write(json_schema_text())
    return 0
