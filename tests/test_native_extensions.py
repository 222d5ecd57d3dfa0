"""Every optional C extension that setup.py lists is built and importable.

The tests that hold an extension to its Python fallback skip when it is missing (a machine without a C
compiler still runs the rest); under ``CI=true`` this test fails instead, so a build that silently failed
(``optional=True`` lets the install go on) cannot turn those tests into skips and pass CI."""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from pathlib import Path

import pytest

SETUP = Path(__file__).resolve().parent.parent / "setup.py"
EXTENSIONS = re.findall(r'Extension\("([\w.]+)"', SETUP.read_text())


def test_setup_lists_the_extensions() -> None:
    assert len(EXTENSIONS) >= 7 and "parsers._scan" in EXTENSIONS and "aggregator._windows" in EXTENSIONS


@pytest.mark.parametrize("name", EXTENSIONS)
def test_extension_is_built(name: str, skip_or_fail: Callable[[str], None]) -> None:
    try:
        importlib.import_module(name)
    except ImportError as exc:
        skip_or_fail(f"the C extension {name} is not built ({exc}): pip install -e . compiles it")
