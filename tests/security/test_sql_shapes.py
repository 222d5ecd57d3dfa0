"""No SQL literal leaves the app, whatever the statement's shape: a property test that builds statements of
every common shape (SELECT with IN/BETWEEN/LIKE/LIMIT, INSERT of several rows, UPDATE, DELETE, CTEs,
UNION, subqueries, CASE, casts, JSON operators, arrays, comments) with random literals of every kind
(strings holding quotes, backslashes and comment markers, dollar-quoted and escape strings, hex and bit
strings, integers, decimals, exponents, negatives) and checks that none survives
``logging_apm.sql.obfuscate`` in any dialect. (tests/logging_apm/test_sql.py covers one shape and the
cross-agent conformance cases; this covers the shapes.)"""

from __future__ import annotations

import os
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from logging_apm.sql import obfuscate

TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)
TOKEN = "Zq9"  # every string literal holds it; no keyword or identifier does


@st.composite
def literal(draw: st.DrawFn, dialect: str, n: int) -> tuple[str, str]:
    """(SQL text of a literal, the secret it carries: a token string or a digit run)."""
    secret_num = str(7_000_000 + n * 104_729 + draw(st.integers(0, 99_999)))
    kind = draw(st.sampled_from(["str", "str", "int", "neg", "dec", "exp", "hex", "bits", "dollar", "escape",
                                 "cast", "dq", "separated", "glued"]))
    body = draw(TEXT) + TOKEN + str(n) + draw(TEXT)
    if kind in ("str", "cast", "dq") or (kind in ("dollar", "escape") and dialect != "postgres"):
        if kind == "dq" and dialect == "mysql":  # MySQL's double-quoted string
            text = '"' + body.replace("\\", "\\\\").replace('"', '""') + '"'
        elif dialect == "mysql":
            text = "'" + body.replace("\\", "\\\\").replace("'", "''") + "'"
        else:
            text = "'" + body.replace("'", "''") + "'"
        if kind == "cast" and dialect == "postgres":
            text += "::text"
        return text, TOKEN + str(n)
    if kind == "dollar":
        tag = draw(st.sampled_from(["", "q", "body_1"]))
        clean = body.replace("$", "")
        return f"${tag}${clean}${tag}$", TOKEN + str(n)
    if kind == "escape":
        return "E'" + body.replace("\\", "\\\\").replace("'", "\\'") + "'", TOKEN + str(n)
    if kind == "hex":
        digits = secret_num.encode().hex()
        return (f"X'{digits}'" if draw(st.booleans()) else f"0x{digits}"), digits
    if kind == "bits":
        bits = format(int(secret_num), "b")
        return f"B'{bits}'", bits
    if kind == "separated":  # PostgreSQL 16 digit separators
        return f"{secret_num[:1]}_{secret_num[1:4]}_{secret_num[4:]}", secret_num[4:]
    if kind == "glued":  # a number run into the next keyword: "a=42AND"
        return f"{secret_num}", secret_num
    return {"int": secret_num, "neg": f"-{secret_num}", "dec": f"{secret_num}.{n}25",
            "exp": f"{secret_num}e{n % 5}"}[kind], secret_num


SHAPES = [
    "SELECT a, b FROM t WHERE a = {0} AND b IN ({1}, {2}) ORDER BY a LIMIT {3} OFFSET {4}",
    "SELECT * FROM t WHERE d BETWEEN {0} AND {1} OR name LIKE {2}",
    "INSERT INTO t (a, b, c) VALUES ({0}, {1}, {2}), ({3}, {4}, {5})",
    "UPDATE t SET a = {0}, b = b + {1} WHERE id = {2} /* {3} */",
    "DELETE FROM t WHERE id IN (SELECT id FROM u WHERE x > {0}) -- {1}\nAND y <> {2}",
    "WITH c AS (SELECT id FROM t WHERE z = {0}) SELECT * FROM c JOIN u ON u.id = c.id WHERE u.v = {1}",
    "SELECT a FROM t WHERE x = {0} UNION ALL SELECT a FROM u WHERE y = {1}",
    "SELECT CASE WHEN a > {0} THEN {1} ELSE {2} END, coalesce(b, {3}) FROM t",
    "SELECT data ->> {5} FROM t WHERE data @> {0} AND tags && ARRAY[{1}, {2}]",
    "SELECT count(*) FROM t GROUP BY a HAVING sum(b) > {0}",
    "SELECT * FROM t WHERE (a, b) = ({0}, {1}) AND c NOT IN ({2}) AND d IS NOT NULL AND e = {3}",
    "INSERT INTO t (a) VALUES ({0}) ON CONFLICT (a) DO UPDATE SET b = {1}",
    "SELECT f({0}, g({1}), {2}) AS x FROM t WHERE lower(name) = lower({3})",
    "SELECT * FROM t WHERE a={0}AND b={1}",
    "SELECT * FROM t WHERE a IN({0},{1})OR b={2}ORDER BY c LIMIT {3}",
]


@st.composite
def statement(draw: st.DrawFn) -> tuple[str, str, list[str]]:
    dialect = draw(st.sampled_from(["mysql", "postgres", "sqlite"]))
    shape = draw(st.sampled_from(SHAPES))
    lits = [draw(literal(dialect, i)) for i in range(6)]
    return dialect, shape.format(*(text for text, _ in lits)), [secret for _, secret in lits]


@settings(max_examples=int(os.environ.get("SQL_PROPERTY_EXAMPLES", "500")), deadline=None)
@given(statement())
def test_no_literal_survives_in_any_shape(case: tuple[str, str, list[str]]) -> None:
    """Whatever the shape and the literal, the obfuscated text keeps none of the literals' contents."""
    dialect, sql, secrets = case
    out = obfuscate(sql, dialect)
    assert TOKEN not in out, (dialect, sql, out)
    for secret in secrets:
        assert secret not in out, (dialect, sql, out, secret)
    digits = re.findall(r"\d{6,}", out)
    assert not digits, (dialect, sql, out)
