"""Fixtures for the load tests: the helpers of the run tests (``runhelp``) and the alerting
stand-ins (``alert_servers``: a real SMTP server and a Slack webhook) are importable from here."""

from __future__ import annotations

import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
for sub in ("aggregator", "alerting", "faults"):
    if str(TESTS / sub) not in sys.path:
        sys.path.append(str(TESTS / sub))
