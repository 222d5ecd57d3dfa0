"""Parts of the package that may not be installed (yet): an attribute of an optional module, or None.

Only the module itself may be missing: an import error raised *inside* it is a real error and propagates.
"""

from __future__ import annotations

import importlib
from typing import Any


def optional_attr(module_name: str, attr: str) -> Any:
    """``module_name.attr``, or None when the module (or the attribute) does not exist."""
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            return None
        raise
    return getattr(module, attr, None)
