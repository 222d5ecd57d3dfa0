"""parsers stage of logging-apm: lines of bytes -> typed schema-1 events, skipped lines, dead letters.

    from parsers import LineParser
    result = LineParser().parse(block, source="app.log", base_offset=0)

See ``docs/parsing.md`` for the accepted framings and the invalid reasons.
"""

from parsers.deadletter import DeadLetterWriter, read_dead_letters
from parsers.event import Event
from parsers.lines import INVALID_REASONS, DeadLetter, LineParser, ParseResult

__all__ = [
    "INVALID_REASONS",
    "DeadLetter",
    "DeadLetterWriter",
    "Event",
    "LineParser",
    "ParseResult",
    "read_dead_letters",
]
