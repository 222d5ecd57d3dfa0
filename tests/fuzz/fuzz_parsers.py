"""Coverage-guided fuzzing of the line parser with atheris (libFuzzer): random and mutated bytes, seeded
with real event lines of every kind. Each input must parse without an exception and with every line
classified once. Run: ``python tests/fuzz/fuzz_parsers.py -runs=200000`` (libFuzzer flags apply);
``tests/fuzz/test_fuzz.py`` runs a short bounded session."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import atheris

with atheris.instrument_imports():
    from parsers import LineParser

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "parsers"))
from _parser_lines import check_invariant  # the parser tests' invariant, one definition

NOW = float(int(time.time()))
PARSER = LineParser(now=NOW)


def check(data: bytes) -> None:
    check_invariant(PARSER.parse(data, "fuzz"), data)


def main() -> None:
    atheris.Setup(sys.argv, check)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
