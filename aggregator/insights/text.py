"""Strings from the logs, made safe for a terminal: no control character reaches it unescaped.

A log line can carry anything in a route or a query text, including an ANSI escape sequence that would
recolour, move the cursor or retitle a terminal. Every such string is shown through ``printable``.
"""

from __future__ import annotations

import unicodedata

_SAFE_CACHE: dict[str, str] = {}


def _escape_char(ch: str) -> str:
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def printable(value: str, limit: int | None = None) -> str:
    """``value`` with control, format and separator characters (C0, C1, DEL, bidi overrides, line and
    paragraph separators) escaped as ``\\xNN``/``\\uNNNN``, optionally cut to ``limit`` characters
    with an ellipsis."""
    cached = _SAFE_CACHE.get(value)
    if cached is None:
        if value.isprintable():
            cached = value
        else:
            cached = "".join(
                ch if ch == " " or unicodedata.category(ch)[0] not in "CZ" else _escape_char(ch)
                for ch in value
            )
        if len(_SAFE_CACHE) < 10_000:
            _SAFE_CACHE[value] = cached
    if limit is not None and len(cached) > limit:
        return cached[: max(limit - 1, 0)] + "…"
    return cached
