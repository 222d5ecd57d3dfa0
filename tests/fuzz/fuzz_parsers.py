"""Coverage-guided fuzzing of the line parser with atheris (libFuzzer): random and mutated bytes, seeded
with real event lines of every kind. Each input must parse without an exception and with every line
classified once. Run: ``python tests/fuzz/fuzz_parsers.py -runs=200000`` (libFuzzer flags apply);
``tests/fuzz/test_fuzz.py`` runs a short bounded session."""

from __future__ import annotations

import sys
import time

import atheris

with atheris.instrument_imports():
    from parsers import INVALID_REASONS, LineParser

NOW = float(int(time.time()))
PARSER = LineParser(now=NOW)


def check(data: bytes) -> None:
    result = PARSER.parse(data, "fuzz")
    assert result.lines == len(result.events) + result.skipped + sum(result.invalid.values())
    assert set(result.invalid) <= set(INVALID_REASONS)
    assert len(result.dead_letters) == sum(result.invalid.values())
    physical = data.count(b"\n") + (0 if data.endswith(b"\n") or not data else 1)
    assert result.lines + result.fragments == physical
    for dl in result.dead_letters:
        assert data[dl.offset:].startswith(dl.line)


def main() -> None:
    atheris.Setup(sys.argv, check)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
