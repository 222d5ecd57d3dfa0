"""The optional C extensions: ``load(name)`` is the extension module, or None: not built (the install had no
compiler) or turned off with ``LOGAPM_NATIVE=0``. ``speedups`` is ``logging_apm._speedups``
(``logging_apm/_speedups.c``). Each extension's parts have Python twins that give the same results; the tests
hold the two to each other."""

from __future__ import annotations

import importlib
import os
from types import ModuleType


def load(name: str) -> ModuleType | None:
    if os.environ.get("LOGAPM_NATIVE", "1") == "0":
        return None
    try:
        return importlib.import_module(name)
    except ImportError:  # pragma: no cover - built without a compiler
        return None


speedups: ModuleType | None = load("logging_apm._speedups")
