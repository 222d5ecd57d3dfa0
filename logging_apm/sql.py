"""SQL obfuscation and fingerprints: the statement of a ``db`` event with every literal replaced by ``?``.

The approach is New Relic's cross-agent one (its conformance cases are the test suite): one regular
expression per dialect, the alternation of the literal forms that dialect has (strings, dollar-quoted
strings, numbers, hex, booleans, UUIDs, comments), replaced by ``?``. If a quote or comment delimiter is
left over afterwards the statement was malformed (or the regex was fooled), and the whole text becomes
``?``: a leaked literal is worse than a lost statement.

Both functions are cached by SQL text in a bounded LRU: Django builds its statements with ``%s``
placeholders, so an app has few distinct texts and a cache hit costs a dictionary lookup.
"""

from __future__ import annotations

import hashlib
import re
from functools import lru_cache
from typing import Final

__all__ = ["DIALECTS", "fingerprint", "normalise", "obfuscate", "operation_and_table"]

_SINGLE_QUOTES = r"'(?:[^']|'')*?(?:\\'.*|'(?!'))"
_DOUBLE_QUOTES = r'"(?:[^"]|"")*?(?:\\".*|"(?!"))'
_DOLLAR_QUOTES = r"(\$(?!\d)[^$]*?\$)(?s:.*?)(?:\1|\Z)"
_UUIDS = r"\{?(?:[0-9a-fA-F]-*){32}\}?"
# No \b after a number: "a=42AND" must not keep 42 (a digit run is never part of a word here, since words
# are matched first). Digit separators (PostgreSQL 16: 1_000_000) are part of the number.
_NUMBERS = r"-?\b(?:[0-9][0-9_]*\.)?[0-9][0-9_]*(?:[eE][+-]?[0-9]+)?"
_BOOLEANS = r"\b(?:true|false|null)\b"
_HEX = r"0[xX][0-9a-fA-F_]+|0[bBoO][0-7_]+"  # MySQL/SQLite hex; PostgreSQL 16 hex, octal and binary
_LINE_COMMENTS = r"(?:#|--).*?(?=\r|\n|$)"
_BLOCK_COMMENTS = r"/\*(?:[^/]|/[^*])*?(?:\*/|/\*.*)"

# Order matters where two forms could start at the same position: the first alternative wins.
_COMPONENTS: Final[dict[str, tuple[str, ...]]] = {
    "mysql": (_SINGLE_QUOTES, _DOUBLE_QUOTES, _HEX, _NUMBERS, _BOOLEANS, _LINE_COMMENTS, _BLOCK_COMMENTS),
    "postgres": (_SINGLE_QUOTES, _DOLLAR_QUOTES, _UUIDS, _HEX, _NUMBERS, _BOOLEANS, _LINE_COMMENTS,
                 _BLOCK_COMMENTS),
    "sqlite": (_SINGLE_QUOTES, _HEX, _NUMBERS, _BOOLEANS, _LINE_COMMENTS, _BLOCK_COMMENTS),
    "oracle": (r"q'\[.*?(?:\]'|$)|q'\{.*?(?:\}'|$)|q'\<.*?(?:\>'|$)|q'\(.*?(?:\)'|$)", _SINGLE_QUOTES,
               _NUMBERS, _LINE_COMMENTS, _BLOCK_COMMENTS),
}
# What must not survive obfuscation: an unbalanced quote or comment delimiter means a literal may remain.
_LEFTOVERS: Final[dict[str, str]] = {
    "mysql": r"'|\"|/\*|\*/",
    "postgres": r"'|/\*|\*/|\$(?!\?)",
    "sqlite": r"'|/\*|\*/",
    "oracle": r"'|/\*|\*/",
}
# Django's vendor names and common aliases -> the dialect above.
_ALIASES: Final[dict[str, str]] = {
    "postgresql": "postgres", "postgis": "postgres", "psql": "postgres", "pg": "postgres",
    "sqlite3": "sqlite", "mariadb": "mysql",
}
DIALECTS: Final = tuple(_COMPONENTS)

# A whole word (identifier or keyword) is matched right after the quoted forms and kept as it is. Without
# it the engine tries every alternative (UUIDs, numbers: the costly ones) at each letter of every
# identifier; with it a word is stepped over in one go, several times faster on Django's statements.
# Booleans are words, told apart by value. (A UUID must then start with a digit or a brace, as every
# unquoted one in the conformance cases does; one starting with a letter is an identifier to PostgreSQL.)
_WORD = r"(?P<word>[A-Za-z_]\w*)"
_BOOLEAN_WORDS: Final = frozenset({"true", "false", "null"})
_QUOTED = frozenset({_SINGLE_QUOTES, _DOUBLE_QUOTES, _DOLLAR_QUOTES, _COMPONENTS["oracle"][0]})


def _compile(parts: tuple[str, ...]) -> re.Pattern[str]:
    quoted = [p for p in parts if p in _QUOTED]
    rest = [p for p in parts if p not in _QUOTED and p != _BOOLEANS]
    return re.compile("|".join((*quoted, _WORD, *rest)), re.IGNORECASE | re.MULTILINE)


_REGEX = {d: _compile(parts) for d, parts in _COMPONENTS.items()}


def _replace(match: re.Match[str]) -> str:
    word = match.group("word")
    if word is None:
        return "?"
    return "?" if word.lower() in _BOOLEAN_WORDS else word
_LEFTOVER = {d: re.compile(p) for d, p in _LEFTOVERS.items()}


def _dialect(dialect: str) -> str:
    d = dialect.lower()
    d = _ALIASES.get(d, d)
    if d not in _COMPONENTS:
        raise ValueError(f"unknown SQL dialect {dialect!r}: use one of {', '.join(DIALECTS)}")
    return d


@lru_cache(maxsize=4096)
def obfuscate(sql: str, dialect: str) -> str:
    """``sql`` with every literal replaced by ``?`` (``?`` alone when that cannot be done safely)."""
    d = _dialect(dialect)
    out = _REGEX[d].sub(_replace, sql)
    if _LEFTOVER[d].search(out):
        return "?"
    return out


_PLACEHOLDER = re.compile(r"%s|%\([^)]*\)s|\$\?|:\w+|\?")
_LIST = re.compile(r"\(\s*\?(?:\s*,\s*\?)+\s*\)")
_VALUES_ROWS = re.compile(r"(\(\?\))(?:\s*,\s*\(\?\))+")
_SPACE = re.compile(r"\s+")


def normalise(obfuscated: str) -> str:
    """The obfuscated text in the form fingerprints are taken of.

    Placeholders of any style become ``?``; a list of placeholders ``(?, ?, ?)`` becomes ``(?)`` and
    repeated rows ``(?), (?)`` one row, so that ``IN`` lists and bulk inserts of any length share one
    fingerprint; whitespace collapses and keywords are upper-cased.
    """
    text = _PLACEHOLDER.sub("?", obfuscated)
    text = _LIST.sub("(?)", text)
    text = _VALUES_ROWS.sub(r"\1", text)
    return _SPACE.sub(" ", text).strip().upper()


@lru_cache(maxsize=4096)
def fingerprint(sql: str, dialect: str) -> str:
    """A stable 16-hex-digit hash of the normalised, obfuscated statement."""
    return hashlib.blake2b(normalise(obfuscate(sql, dialect)).encode(), digest_size=8).hexdigest()


_FIRST_WORD = re.compile(r"[\s(]*([A-Za-z]+)")
_NAME = r"(?:[`\"\[]?[\w$]+[`\"\]]?)(?:\s*\.\s*[`\"\[]?[\w$]+[`\"\]]?)*"
_TABLE_AFTER = {
    "SELECT": re.compile(rf"\bFROM\s+({_NAME})", re.I),
    "DELETE": re.compile(rf"\bFROM\s+({_NAME})", re.I),
    "INSERT": re.compile(rf"\bINTO\s+({_NAME})", re.I),
    "REPLACE": re.compile(rf"\bINTO\s+({_NAME})", re.I),
    "UPDATE": re.compile(rf"\bUPDATE\s+(?:ONLY\s+)?({_NAME})", re.I),
}
_QUOTES = str.maketrans("", "", "`\"[]")


@lru_cache(maxsize=4096)
def operation_and_table(sql: str) -> tuple[str | None, str | None]:
    """The statement's operation (``SELECT``, ``INSERT``, ...) and its main table, when they can be told.

    For ``WITH`` queries the operation is the statement after the common table expressions, found as the
    first top-level SELECT/INSERT/UPDATE/DELETE after them; the table is that statement's.
    """
    m = _FIRST_WORD.match(sql)
    if m is None:
        return None, None
    op = m.group(1).upper()
    body = sql
    if op == "WITH":
        main = re.search(r"\)\s*(SELECT|INSERT|UPDATE|DELETE)\b", sql, re.I)
        if main is None:
            return op, None
        op = main.group(1).upper()
        body = sql[main.start(1):]
    finder = _TABLE_AFTER.get(op)
    if finder is None:
        return op, None
    t = finder.search(body)
    if t is None:
        return op, None
    table = _SPACE.sub("", t.group(1)).translate(_QUOTES)
    if table.startswith("(") or not table:
        return op, None
    return op, table
