"""SQL obfuscation: New Relic's cross-agent conformance cases, and no literal ever survives."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logging_apm.sql import fingerprint, normalise, obfuscate, operation_and_table

DIALECTS = ("mysql", "postgres", "sqlite")


def _cases(shared: Path) -> list[dict[str, Any]]:
    return json.loads((shared / "conformance" / "sql_obfuscation" / "sql_obfuscation.json").read_text())


def test_conformance_cases(shared_dir: Path) -> None:
    """Every non-pathological case for mysql, postgres and sqlite gives one of its accepted outputs."""
    failures, ran = [], 0
    for case in _cases(shared_dir):
        if case.get("pathological"):
            continue
        for dialect in set(case["dialects"]) & set(DIALECTS):
            ran += 1
            out = obfuscate(case["sql"], dialect)
            if out not in case["obfuscated"]:
                failures.append((case["name"], dialect, out, case["obfuscated"]))
    assert ran > 60
    assert not failures, failures


def test_pathological_cases_leak_nothing(shared_dir: Path) -> None:
    """The pathological cases pass too (they are not required to, but none may leak a quoted literal)."""
    for case in _cases(shared_dir):
        if case.get("pathological"):
            for dialect in set(case["dialects"]) & set(DIALECTS):
                assert obfuscate(case["sql"], dialect) in case["obfuscated"], case["name"]


_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=30)


@settings(max_examples=int(os.environ.get("SQL_PROPERTY_EXAMPLES", "300")), deadline=None)
@given(value=_text, number=st.integers(min_value=-10**12, max_value=10**12), dialect=st.sampled_from(DIALECTS))
def test_no_literal_survives(value: str, number: int, dialect: str) -> None:
    """Whatever the string contents (quotes, backslashes, comment markers), the output keeps neither value."""
    quoted = "'" + value.replace("'", "''") + "'"
    comment = value.replace("\n", " ").replace("\r", " ")  # a line comment ends at the line's end
    sql = f"SELECT a FROM t WHERE b = {quoted} AND c = {number} -- {comment}"
    out = obfuscate(sql, dialect)
    marker = value.strip()
    if len(marker) >= 3 and marker not in "SELECT a FROM t WHERE b = AND c = ?":
        assert marker not in out, (sql, out)
    assert str(abs(number)) not in out or out == "?" or str(abs(number)) in "SELECT a FROM t WHERE b"


@pytest.mark.parametrize("dialect", DIALECTS)
def test_unterminated_string_hides_everything(dialect: str) -> None:
    """A malformed statement is replaced whole: better no text than a leaked literal."""
    assert obfuscate("SELECT * FROM t WHERE a = 'open secret", dialect) == "?"


def test_django_placeholders_and_fingerprints() -> None:
    """Django's %s placeholders stay; IN lists and bulk VALUES of any length share one fingerprint."""
    q3 = 'SELECT "t"."id" FROM "t" WHERE "t"."id" IN (%s, %s, %s)'
    q5 = 'SELECT "t"."id" FROM "t" WHERE "t"."id" IN (%s, %s, %s, %s, %s)'
    assert obfuscate(q3, "postgres") == q3
    assert fingerprint(q3, "postgres") == fingerprint(q5, "postgres")
    assert fingerprint(q3, "postgres") != fingerprint('SELECT "t"."id" FROM "t"', "postgres")
    bulk2 = 'INSERT INTO "t" ("a", "b") VALUES (%s, %s), (%s, %s)'
    bulk3 = 'INSERT INTO "t" ("a", "b") VALUES (%s, %s), (%s, %s), (%s, %s)'
    assert fingerprint(bulk2, "sqlite") == fingerprint(bulk3, "sqlite")
    assert normalise("select  *\n from t where a in (?, ?)") == "SELECT * FROM T WHERE A IN (?)"
    assert fingerprint("SELECT 1", "postgresql") == fingerprint("SELECT 2", "postgres")
    with pytest.raises(ValueError, match="unknown SQL dialect"):
        obfuscate("SELECT 1", "db2")


@pytest.mark.parametrize(("sql", "expected"), [
    ('SELECT "a"."id" FROM "djangoapp_author" "a" INNER JOIN "x" ON 1', ("SELECT", "djangoapp_author")),
    ("INSERT INTO `shop`.`orders` (`a`) VALUES (?)", ("INSERT", "shop.orders")),
    ('UPDATE "t" SET "a" = %s', ("UPDATE", "t")),
    ('DELETE FROM "t" WHERE "id" IN (%s)', ("DELETE", "t")),
    ("WITH x AS (SELECT 1 FROM y) SELECT * FROM z", ("SELECT", "z")),
    ('SAVEPOINT "s1"', ("SAVEPOINT", None)),
    ("SELECT 1", ("SELECT", None)),
    ("  (SELECT a FROM b)", ("SELECT", "b")),
    ("", (None, None)),
])
def test_operation_and_table(sql: str, expected: tuple[str | None, str | None]) -> None:
    """The operation is the statement's verb; the main table the one after FROM/INTO/UPDATE."""
    assert operation_and_table(sql) == expected
