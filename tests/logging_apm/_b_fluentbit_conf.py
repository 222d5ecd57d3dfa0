"""A small reader of Fluent Bit's classic configuration format (the ``.conf`` files), for tests.

What it follows from Fluent Bit's docs ("Configuration file", classic mode): ``[SECTION]`` headers; entries
``key value`` indented under a section, the key up to the first whitespace, the value the rest of the line
(trimmed); every entry of a section indented the same way; ``#`` comments on lines of their own; ``@SET
key=value`` and ``@INCLUDE file``; ``${VAR}`` replaced by a ``@SET`` variable first, else the environment
(an unknown variable becomes an empty string, as in Fluent Bit). Keys are case-insensitive.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class ConfError(ValueError):
    pass


@dataclass
class Section:
    name: str  # upper-cased: SERVICE, INPUT, FILTER, OUTPUT, PARSER, ...
    entries: dict[str, str] = field(default_factory=dict)  # lower-cased key -> value

    def get(self, key: str, default: str | None = None) -> str | None:
        return self.entries.get(key.lower(), default)

    def __getitem__(self, key: str) -> str:
        return self.entries[key.lower()]


@dataclass
class FluentBitConf:
    sections: list[Section]

    def of(self, name: str) -> list[Section]:
        return [s for s in self.sections if s.name == name.upper()]

    def plugin(self, kind: str, name: str) -> list[Section]:
        return [s for s in self.of(kind) if (s.get("name") or "").lower() == name.lower()]


def parse(path: Path, environ: Mapping[str, str], _vars: dict[str, str] | None = None) -> FluentBitConf:
    variables = {} if _vars is None else _vars
    sections: list[Section] = []
    current: Section | None = None
    indent: str | None = None
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        where = f"{path.name}:{number}"
        line = raw.rstrip()
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.startswith("@SET"):
            key, sep, value = stripped[4:].strip().partition("=")
            if not sep:
                raise ConfError(f"{where}: @SET needs key=value")
            variables[key.strip()] = value.strip()
            continue
        if stripped.startswith("@INCLUDE"):
            included = parse(path.parent / stripped[8:].strip(), environ, variables)
            sections.extend(included.sections)
            current = None
            continue
        if line.startswith("["):
            if not line.endswith("]"):
                raise ConfError(f"{where}: unterminated section header")
            current = Section(line[1:-1].strip().upper())
            sections.append(current)
            indent = None
            continue
        if current is None:
            raise ConfError(f"{where}: entry outside any section")
        lead = line[: len(line) - len(line.lstrip())]
        if not lead:
            raise ConfError(f"{where}: entries must be indented")
        if indent is None:
            indent = lead
        elif lead != indent:
            raise ConfError(f"{where}: inconsistent indentation in [{current.name}]")
        parts = stripped.split(None, 1)
        if len(parts) != 2:
            raise ConfError(f"{where}: entry {stripped!r} has no value")
        key, value = parts
        value = _VAR.sub(lambda m: variables.get(m.group(1), environ.get(m.group(1), "")), value.strip())
        current.entries[key.lower()] = value
    return FluentBitConf(sections)


def tag_matches(pattern: str, tag: str) -> bool:
    """Fluent Bit's Match: ``*`` matches any run of characters (dots included)."""
    regex = "".join(".*" if c == "*" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, tag) is not None
