"""The optional C extension ``logging_apm._speedups`` (``logging_apm/_speedups.c``), or None: not built (the
install had no compiler) or turned off with ``LOGAPM_NATIVE=0``. Each of its parts has a Python twin that
gives the same result; the tests hold the two to each other."""

from __future__ import annotations

import importlib
import os
from types import ModuleType

speedups: ModuleType | None = None
if os.environ.get("LOGAPM_NATIVE", "1") != "0":
    try:
        speedups = importlib.import_module("logging_apm._speedups")
    except ImportError:  # pragma: no cover - built without a compiler
        speedups = None
