"""Lines of bytes to typed events, skipped lines, and invalid lines with their reason.

``LineParser.parse`` takes a block of complete lines (as a source reads them, several MB at a time) and
classifies every line exactly once: an event, skipped (an ordinary log line: no ``apm.schema``), or invalid
with a reason code from ``INVALID_REASONS`` and a ``DeadLetter`` carrying the source and byte offset.
It never raises.

Speed: a block that is nothing but the app's own event lines (the common case) is checked with a few
whole-block scans and decoded by one ``decode_lines`` call of a typed msgspec decoder; the only
per-line Python is the timestamp (two cached dict look-ups; numpy over the whole block when the stamps are
the app's own fixed-width form). A block of app events among other JSON log lines (every line an object,
every marker the app's key) has its marked lines found by comparing 12 bytes where the app's formatters put
the key (numpy, the whole block at once; the other lines searched one by one), joined and decoded in the
same one call. Any other block (framed by a shipper, plain-text logs, damaged lines) is split into lines
and classified one by one, the event lines again decoded in one batch when they are well formed, and one
by one (to find the bad ones and their reasons) when not.

Why the whole-block shortcut is exact: JSON strings cannot span lines, so when every line starts with
``{`` and ends with ``}``, each line holds whole top-level values; ``decode_lines`` returning as many events
as there are lines then means one event per line.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import accumulate, compress, repeat
from operator import attrgetter, call, contains, not_
from typing import Final

import msgspec
import numpy as np

from parsers import framing, scan
from parsers.columns import EventColumns
from parsers.event import REQUIRED_GETTERS, Event
from parsers.timestamps import TimestampReader

# Stable reason codes for invalid lines (metric tags, dead-letter files and docs use them).
INVALID_REASONS: Final[dict[str, str]] = {
    "bad_json": "the line has the marker `apm.schema` but is not a JSON object in any accepted framing",
    "unknown_schema": "`apm.schema` is not 1 (a schema version this parser does not know)",
    "unknown_kind": "`apm.kind` is not one of the schema's kinds",
    "missing_field": "a field the event's kind requires is absent (or null)",
    "wrong_type": "a field has the wrong JSON type or lies outside its range",
    "bad_duration": "`duration_ms` is negative, not a number, or longer than MAX_DURATION_MS",
    "bad_timestamp": "`timestamp` is not RFC 3339 UTC (`YYYY-MM-DDTHH:MM:SS[.fff]Z`)",
    "future_timestamp": "`timestamp` lies further ahead of the clock than max_future_seconds",
    "past_timestamp": "`timestamp` lies further back than max_past_seconds",
    "invalid_utf8": "the line is not valid UTF-8",
    "nul_byte": "the line contains NUL bytes (typically a file pre-allocated and never written, after a crash)",
    "too_long": "the line is longer than max_line_bytes",
    "parser_error": "the parser failed on the line (a bug: please report it with the dead letter)",
}

DEAD_LETTER_MAX: Final = 4096  # bytes of a line kept in a dead letter

_MARK: Final = b'"apm.schema"'  # the key, as the app writes it
_MARK_ANY: Final = b"apm.schema"  # also matches the key escaped inside a wrapper's string
_MARK_ESCAPED: Final = b'\\"apm.schema\\"'  # the key inside a JSON string (a wrapper's `log`)
# Where the app's formatters put the key: after `{"timestamp":"YYYY-MM-DDTHH:MM:SS.mmmZ",` (40 bytes).
_MARK_AT: Final = 40
_MARK_BYTES: Final = np.frombuffer(_MARK, dtype=np.uint8)
_MARK_RANGE: Final = np.arange(_MARK_AT, _MARK_AT + len(_MARK))
_LOG_BYTES: Final = np.frombuffer(b'{"log":"', dtype=np.uint8)  # a Docker json-file record's start
_LOG_RANGE: Final = np.arange(len(_LOG_BYTES))
_MISSING: Final = "Object missing required field `"
_TIMESTAMP: Final = attrgetter("timestamp")
_KIND: Final = attrgetter("kind")
_REQUIRED_GETTER: Final = REQUIRED_GETTERS.__getitem__
_JOIN_LOOKAHEAD: Final = 1000  # lines searched for the rest of a partial line
# parse_columns: a block with more declined lines than one in _DECLINED_RATE (after the first _DECLINED_FEW)
# goes to parse from there on in one call (pieces of a few lines would cost more than they save).
_DECLINED_FEW: Final = 4
_DECLINED_RATE: Final = 64


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An invalid line: where it was (source, byte offset of its first byte), why, and its bytes."""

    source: str
    offset: int
    reason: str
    line: bytes  # truncated to DEAD_LETTER_MAX bytes


@dataclass(slots=True)
class ParseResult:
    """What one ``parse`` call found. ``lines == event_count + skipped + sum(invalid.values())``.

    ``lines`` counts logical lines: a line a container runtime split into partial pieces (CRI ``P``,
    Docker records without the final newline) counts once, its extra pieces in ``fragments``. The events are
    in ``events``, or, in a piece from ``parse_columns`` that the native scanner took, in ``columns`` (and
    ``events`` is empty).
    """

    events: list[Event] = field(default_factory=list)
    columns: EventColumns | None = None
    lines: int = 0
    skipped: int = 0
    invalid: dict[str, int] = field(default_factory=dict)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    fragments: int = 0

    @property
    def invalid_total(self) -> int:
        return sum(self.invalid.values())

    @property
    def event_count(self) -> int:
        return len(self.events) if self.columns is None else self.columns.n

    def merge(self, other: ParseResult) -> None:
        """Add ``other``'s counts and lists to this one (to total a run; results of ``parse`` only)."""
        if self.columns is not None or other.columns is not None:
            raise ValueError("results holding columns (parse_columns) cannot be merged")
        self.events.extend(other.events)
        self.lines += other.lines
        self.skipped += other.skipped
        for reason, n in other.invalid.items():
            self.invalid[reason] = self.invalid.get(reason, 0) + n
        self.dead_letters.extend(other.dead_letters)
        self.fragments += other.fragments


def _valid_utf8(b: bytes) -> bool:
    if b.isascii():
        return True
    try:
        b.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


class _Probe(msgspec.Struct):
    schema: msgspec.Raw = msgspec.field(default_factory=msgspec.Raw, name="apm.schema")


_probe = msgspec.json.Decoder(_Probe)


def _error_reason(exc: BaseException, line: bytes) -> str | None:
    """The reason code for a line the typed decoder refused; None when it is not an event after all
    (the marker appeared, but not as a top-level key)."""
    if isinstance(exc, UnicodeDecodeError):
        return "invalid_utf8"
    if not isinstance(exc, msgspec.ValidationError):
        return "bad_json"
    # A validation error proves the line is JSON; whether it claims to be an event decides skipped vs invalid.
    try:
        probe = _probe.decode(line)
    except Exception:
        return "wrong_type"  # e.g. a top-level array
    if not probe.schema:
        return None
    msg = str(exc)
    if msg.startswith(_MISSING):
        return "missing_field"
    path = msg.rpartition(" - at `")[2]
    if path.startswith("$.duration_ms`"):
        return "bad_duration"
    if path.startswith("$.apm.kind`"):
        return "unknown_kind"
    if path.startswith("$.apm.schema`"):
        return "unknown_schema"
    if path.startswith("$.timestamp`"):
        return "bad_timestamp"
    return "wrong_type"


class LineParser:
    """Classifies lines; one parser per run (``now`` is fixed when it is made).

    ``max_line_bytes`` bounds a line (longer ones are invalid ``too_long``): an event line is a few
    hundred bytes, and the bound keeps one runaway line from costing more than it is worth.
    """

    def __init__(
        self,
        *,
        now: float | None = None,
        max_future_seconds: float = 600,
        max_past_seconds: float = 400 * 86400,
        max_line_bytes: int = 64 * 1024,
    ) -> None:
        self.now = time.time() if now is None else now
        self.max_line_bytes = max_line_bytes
        self._ts = TimestampReader(self.now, max_future_seconds, max_past_seconds)
        self._decoder = msgspec.json.Decoder(Event)
        self._scan_range = scan.scan_range if scan.available else None

    # --- public -------------------------------------------------------------------------------------

    def parse(self, data: bytes | memoryview, source: str = "", base_offset: int = 0) -> ParseResult:
        """Classify every line of ``data`` (complete lines; a last line without newline counts too)."""
        if not isinstance(data, bytes):
            data = bytes(data)  # bytearray, memoryview
        try:
            fast = self._parse_block(data, source, base_offset)
            if fast is not None:
                return fast
            # Whole blocks of one framing: take every line's wrapper off at once and parse the lines inside.
            # Only a result without invalid lines is kept (their offsets would be the stripped block's);
            # otherwise the block goes line by line like any other.
            stripped = framing.unwrap_log_block(data)  # Docker json-file, unparsed Fluent Bit plain
            if stripped is None and data[:1] != b"{":
                stripped = framing.strip_cri_block(data) if data[:1].isdigit() else None
                if stripped is None:
                    stripped = framing.strip_out_file_block(data)
                if stripped is not None and stripped.startswith(b'{"log":'):
                    stripped = framing.unwrap_log_block(stripped) or stripped
            if stripped is not None:
                inner = self._parse_block(stripped, source, base_offset)
                if inner is None:
                    inner = self._parse_lines(stripped, source, base_offset)
                if not inner.invalid and not inner.fragments:
                    return inner
            return self._parse_lines(data, source, base_offset)
        except Exception:  # pragma: no cover - a bug; still never take the run down
            return self._all_failed(data, source, base_offset)

    def parse_columns(self, data: bytes | memoryview, source: str = "", base_offset: int = 0) -> list[ParseResult]:
        """``parse`` of ``data`` as consecutive pieces, in order: the runs of lines the native scanner
        (``parsers.scan``) takes, with their events as columns (``result.columns``), and between them each
        line it declines (one holding the marker that it is not sure is an event: an invalid line,
        typically), read alone by ``parse`` at its own offset (events in ``result.events``, its dead letter
        with its true offset). Anything the scanner gives up on as a whole (damaged bytes, framing) and a
        block with many declined lines (more than one in ``_DECLINED_RATE`` after the first
        ``_DECLINED_FEW``) go to ``parse`` from there on in one call.

        The pieces together are ``parse(data)``: the same counts, invalid reasons and dead letters, and the
        same events in the same order (``tests/parsers/test_parse_columns.py`` holds each columns piece to
        ``columns.from_events`` of the reference's events).

        ``data`` may be a memoryview of bytes (a mapped file's chunk, ``FileSource.read_mapped``): the scanner
        reads it in place, and only a block it does not take whole is copied to bytes (as ``parse`` would)."""
        scan_range = self._scan_range
        if scan_range is None or not (type(data) is bytes or type(data) is memoryview):
            return [self.parse(data, source, base_offset)]
        reader = self._ts
        past, future, max_line = reader.past_limit, reader.future_limit, self.max_line_bytes
        first = None  # a memoryview's first scan, made in place
        if type(data) is memoryview:
            first = scan_range(data, past, future, max_line)
            if first is None:
                return [self.parse(data, source, base_offset)]
            if first[3] == len(data):
                return [ParseResult(lines=first[0], skipped=first[1], columns=first[2])] if first[0] else []
            data = bytes(data)  # a declined line: the rest as for bytes
        view = memoryview(data)
        size = len(data)
        pieces: list[ParseResult] = []
        pos = lines = declined = 0
        while pos < size:
            got = first if first is not None and not pos else scan_range(view[pos:] if pos else data, past,
                                                                         future, max_line)
            if got is None:
                break
            n, skipped, cols, stop = got
            if n:
                pieces.append(ParseResult(lines=n, skipped=skipped, columns=cols))
                lines += n
            pos += stop
            if pos >= size:
                return pieces
            end = data.index(b"\n", pos) + 1  # the scanner took the block: it ends with a newline
            pieces.append(self.parse(data[pos:end], source, base_offset + pos))
            pos = end
            declined += 1
            lines += 1
            if declined > _DECLINED_FEW and declined * _DECLINED_RATE > lines:
                break
        if not pieces:
            return [self.parse(data, source, base_offset)]
        if pos < size:
            if data.find(b"\\u", pos) != -1 or data.startswith(b'{"log":', pos):
                # The reference reads a line with an escaped key ("apm\u002eschema") and `{"log":` records
                # depending on the block around them (whole-block decoding, unwrapping): the whole block.
                return [self.parse(data, source, base_offset)]
            pieces.append(self.parse(data[pos:], source, base_offset + pos))
        return pieces

    # --- the whole-block shortcut ----------------------------------------------------------------------

    def _parse_block(self, data: bytes, source: str, base_offset: int) -> ParseResult | None:
        nl = framing.object_lines(data)
        if nl is None:
            return None
        n = len(nl)
        if (
            int(nl[0]) >= self.max_line_bytes
            or (n > 1 and int(np.diff(nl).max()) > self.max_line_bytes)
            or b"\0" in data
            or not _valid_utf8(data)
        ):
            return None
        events: list[Event] | None = None
        cand: list[int] | None = None
        if data.find(_MARK, 0, int(nl[0])) != -1:
            try:  # the app's own lines only (the common case): decoded as they lie
                events = self._decoder.decode_lines(data)
            except Exception:
                events = None  # a line that is no event, or a damaged one: the mixed path decides
            if events is not None and len(events) != n:
                return None
        if events is None:
            # App events among other JSON log lines (Django's, say): exactly what the line-by-line pass
            # would conclude for such a block (each unmarked line skipped, each marked one a candidate,
            # the candidates decoded in one call), without its per-line Python.
            picked = self._marked_lines(data, nl)
            if picked is None:
                return None
            cand, body = picked
            try:
                events = self._decoder.decode_lines(body)
            except Exception:
                return None
            if len(events) != len(cand):
                return None
        result = ParseResult(lines=n, skipped=0 if cand is None else n - len(cand))
        bad = self._finish(events)
        if bad:
            starts = framing.line_starts(nl).tolist()
            for idx, reason in bad:
                line_no = idx if cand is None else cand[idx]
                start = starts[line_no]
                self._invalid(result, reason, source, base_offset + start, data[start : int(nl[line_no])])
            drop = {idx for idx, _ in bad}
            events = [ev for i, ev in enumerate(events) if i not in drop]
        result.events = events
        return result

    @staticmethod
    def _marked_lines(data: bytes, nl: np.ndarray) -> tuple[list[int], bytes] | None:
        """For a block of JSON object lines: the indices of the lines holding the app's key and those lines
        joined, or None when the block is for the line-by-line pass (no marked line, every line marked, a
        Docker record, an unmarked line that mentions the marker in another form).

        The app's formatters write the key at a fixed place (after a millisecond timestamp), so most lines
        are recognised by comparing 12 bytes there, for the whole block at once with numpy; only the other
        lines are searched one by one. A block written otherwise (under a quarter of its lines recognised)
        is searched line by line with C-level maps instead."""
        n = len(nl)
        buf = np.frombuffer(data, np.uint8)
        starts = framing.line_starts(nl)
        last = buf.size - 1
        # A window that runs past its line's end takes in the newline, which neither pattern holds: no
        # false match, whatever the line's length.
        if (buf[np.minimum(starts[:, None] + _LOG_RANGE, last)] == _LOG_BYTES).all(axis=1).any():
            return None  # Docker records: their partial lines are joined by the line-by-line pass
        hit = (buf[np.minimum(starts[:, None] + _MARK_RANGE, last)] == _MARK_BYTES).all(axis=1)
        misses = np.flatnonzero(~hit).tolist()
        if len(misses) * 4 > n * 3:
            return LineParser._marked_lines_mapped(data, n)
        find = data.find
        starts_l, ends_l = starts.tolist(), nl.tolist()
        unmarked = [i for i in misses if find(_MARK, starts_l[i], ends_l[i]) == -1]
        if not unmarked or len(unmarked) == n:
            return None
        if any(find(_MARK_ANY, starts_l[i], ends_l[i]) != -1 for i in unmarked):
            return None  # the marker in another form (escaped in a wrapper's string): judged line by line
        parts, prev = [], 0
        for i in unmarked:
            parts.append(data[prev:starts_l[i]])
            prev = ends_l[i] + 1
        parts.append(data[prev:])
        keep = np.ones(n, dtype=np.bool_)
        keep[unmarked] = False
        return np.flatnonzero(keep).tolist(), b"".join(parts)

    @staticmethod
    def _marked_lines_mapped(data: bytes, n: int) -> tuple[list[int], bytes] | None:
        """``_marked_lines`` for blocks written otherwise: every step a C call mapped over the lines."""
        lines = data.split(b"\n")
        lines.pop()  # the empty piece after the last newline
        marked = list(map(contains, lines, repeat(_MARK)))
        k = marked.count(True)
        if (
            not k
            or k == n  # every line an event candidate, yet the block failed: damaged, line by line
            or any(map(contains, compress(lines, map(not_, marked)), repeat(_MARK_ANY)))
        ):
            return None
        return list(compress(range(n), marked)), b"\n".join(compress(lines, marked))

    def _finish(self, events: list[Event]) -> list[tuple[int, str]]:
        """Set ``ts`` on each event and check what msgspec cannot; the (index, reason) of refused ones.

        The timestamps of a block written the app's way are computed with numpy at once
        (``TimestampReader.epochs_block``); any other block goes through C-level ``map`` calls over the
        cached minute/seconds tables, and only one with a timestamp that is new (first sight of a minute)
        or not good takes a second, Python-level look at each one."""
        if not events:
            return []
        reader = self._ts
        stamps = list(map(_TIMESTAMP, events))
        bad: list[tuple[int, str]] = []
        block = reader.epochs_block(stamps)
        if block is not None:
            epochs = block
        else:
            try:
                epochs = reader.epochs(stamps)
            except KeyError:
                reader.warm(stamps)
                try:
                    epochs = reader.epochs(stamps)
                except KeyError:
                    epochs = []
                    for idx, stamp in enumerate(stamps):
                        r = reader.read(stamp)
                        if isinstance(r, str):
                            bad.append((idx, r))
                            r = 0.0
                        epochs.append(r)
        deque(map(setattr, events, repeat("ts"), epochs), maxlen=0)
        # ``None in getter(event)`` for each event, every step a C call (no per-event Python frame).
        required = map(call, map(_REQUIRED_GETTER, map(_KIND, events)), events)
        missing = list(map(contains, required, repeat(None)))
        if True in missing:
            refused = {idx for idx, _ in bad}
            bad.extend((idx, "missing_field") for idx, m in enumerate(missing) if m and idx not in refused)
            bad.sort()
        return bad

    # --- line by line ----------------------------------------------------------------------------------

    def _parse_lines(self, data: bytes, source: str, base_offset: int) -> ParseResult:
        lines = data.split(b"\n")
        if lines and not lines[-1]:
            lines.pop()
        result = ParseResult()
        cand_span: list[tuple[int, int]] = []  # first and last physical line of each event candidate
        cand: list[bytes] = []  # the app's JSON bytes of each candidate
        invalid: list[tuple[int, int, str]] = []  # (first line, last line, reason)
        max_len = self.max_line_bytes
        if (
            b"\0" not in data
            and b" P " not in data  # no CRI partial line
            # every Docker record's line ends with its newline (no partial record)
            and data.count(b'","stream":"') == data.count(b'\\n","stream":"')
            and _valid_utf8(data)
            and (not lines or max(map(len, lines)) <= max_len)
        ):
            # An undamaged block without partial lines (app events among ordinary logs, or framed
            # whole lines): only the lines holding the marker need a look of their own.
            marked = [i for i, line in enumerate(lines) if _MARK_ANY in line]
            result.lines = len(lines)
            result.skipped = len(lines) - len(marked)
            for i in marked:
                line = lines[i]
                self._classify(line, line if line[:1] == b"{" and _MARK in line else self._unwrap(line),
                               i, i, result, cand, cand_span, invalid)
            return self._conclude(result, lines, data, cand, cand_span, invalid, source, base_offset)
        nlines = len(lines)
        i = 0
        consumed: set[int] = set()  # pieces already joined into an earlier logical line
        while i < nlines:
            first = i
            line = lines[i]
            i += 1
            if first in consumed:
                continue
            # A container runtime's partial pieces: join them into the logical line first.
            used: list[int] = []
            if line[:1].isdigit() and b" P" in line[:64]:
                line, used = self._join_cri(lines, line, i)
            elif line[:8] == b'{"log":"' and framing.docker_partial_candidate(line):
                line, used = self._join_docker(lines, line, i)
            last = first
            if used:
                consumed.update(used)
                last = used[-1]
                result.fragments += len(used)
            result.lines += 1
            # Damage first: it is a property of the bytes, whatever the line was meant to be.
            if len(line) > max_len:
                invalid.append((first, last, "too_long"))
            elif b"\0" in line:
                invalid.append((first, last, "nul_byte"))
            elif not _valid_utf8(line):
                invalid.append((first, last, "invalid_utf8"))
            elif _MARK_ANY not in line:
                result.skipped += 1
            else:
                self._classify(line, self._unwrap(line), first, last, result, cand, cand_span, invalid)
        return self._conclude(result, lines, data, cand, cand_span, invalid, source, base_offset)

    @staticmethod
    def _classify(line: bytes, inner: bytes | None, first: int, last: int, result: ParseResult,
                  cand: list[bytes], cand_span: list[tuple[int, int]], invalid: list[tuple[int, int, str]]) -> None:
        """A line holding the marker, once unwrapped: an event candidate, invalid, or skipped."""
        if inner is not None and _MARK in inner:
            cand_span.append((first, last))
            cand.append(inner)
        elif inner is None and (_MARK in line or _MARK_ESCAPED in line):
            invalid.append((first, last, "bad_json"))  # looks like an event, decodes as nothing
        else:
            result.skipped += 1  # mentions the marker without carrying it

    def _conclude(self, result: ParseResult, lines: list[bytes], data: bytes, cand: list[bytes],
                  cand_span: list[tuple[int, int]], invalid: list[tuple[int, int, str]], source: str,
                  base_offset: int) -> ParseResult:
        """Decode the candidates and turn the invalid lines into dead letters."""
        if cand:
            events, bad = self._decode_batch(cand)
            for j, reason in bad:
                if reason is None:
                    result.skipped += 1
                else:
                    invalid.append((*cand_span[j], reason))
            result.events = events
        if invalid:
            starts = _line_starts(lines)
            invalid.sort()
            for first, last, reason in invalid:
                start = starts[first]
                end = starts[last] + len(lines[last])
                self._invalid(result, reason, source, base_offset + start, data[start:end])
        return result

    def _join_cri(self, lines: list[bytes], line: bytes, i: int) -> tuple[bytes, list[int]]:
        """Join a CRI ``P`` line with the following pieces of its stream up to the ``F`` piece (lines of
        the other stream in between are left for their own turn); the joined content and the indices of
        the pieces used after ``line``. A line that is not a ``P`` line comes back unchanged."""
        piece = framing.cri(line)
        if piece is None or not piece.partial:
            return line, []
        parts = [piece.content]
        size = len(piece.content)
        used: list[int] = []
        j = i
        while j < len(lines) and j - i < _JOIN_LOOKAHEAD:
            nxt = framing.cri(lines[j])
            if nxt is None:
                break  # the partial line never ends here: parse what there is
            j += 1
            if nxt.stream != piece.stream:
                continue
            used.append(j - 1)
            if size <= self.max_line_bytes:  # beyond it the line is too long anyway: stop copying
                parts.append(nxt.content)
                size += len(nxt.content)
            if not nxt.partial:
                break
        return b"".join(parts), used

    def _join_docker(self, lines: list[bytes], line: bytes, i: int) -> tuple[bytes, list[int]]:
        """Join a partial Docker json-file record with the following records of its stream (as
        ``_join_cri``); the joined line (unwrapped), or ``line`` unchanged when it is not partial."""
        w = framing.wrapper(line)
        if w is None or not framing.is_docker_partial(w):
            return line, []
        texts = [w.log or ""]
        size = len(texts[0])
        used: list[int] = []
        j = i
        while j < len(lines) and j - i < _JOIN_LOOKAHEAD and lines[j][:8] == b'{"log":"':
            nw = framing.wrapper(lines[j])
            if nw is None or nw.log is None or not nw.stream:
                break
            j += 1
            if bytes(nw.stream) != bytes(w.stream):
                continue
            used.append(j - 1)
            if size <= self.max_line_bytes:
                texts.append(nw.log)
                size += len(nw.log)
            if not framing.is_docker_partial(nw):
                break
        return framing.unwrap_log(framing.Wrapper(log="".join(texts))) or b"", used

    def _unwrap(self, line: bytes) -> bytes | None:
        """The app's line inside ``line``'s framing (``line`` itself when unframed); None when ``line``
        is in no accepted framing."""
        for _ in range(3):  # at most: out_file -> {"log": ...} -> the line
            first = line[:1]
            if first == b"{":
                if _MARK in line:
                    return line
                w = framing.wrapper(line)
                if w is None:
                    return None
                inner = framing.unwrap_log(w)
                if inner is None:
                    return line  # JSON without a log field: decided by the caller (no marker: skipped)
                line = inner
                continue
            piece = framing.cri(line)
            if piece is not None:
                line = piece.content
                continue
            record = framing.out_file_record(line)
            if record is not None:
                line = record
                continue
            return None
        return line

    def _decode_batch(self, cand: list[bytes]) -> tuple[list[Event], list[tuple[int, str | None]]]:
        """Decode candidate lines: in one call when they are well formed, else one by one.

        Returns the events and, for refused candidates, (index, reason or None for "not an event")."""
        bad: list[tuple[int, str | None]] = []
        events: list[Event] | None = None
        if all(c[:1] == b"{" and c[-1:] == b"}" and b"\n" not in c for c in cand):
            try:
                decoded = self._decoder.decode_lines(b"\n".join(cand))
            except Exception:
                decoded = None
            if decoded is not None and len(decoded) == len(cand):
                events = decoded
                order = list(range(len(cand)))
        if events is None:
            events = []
            order = []
            decode = self._decoder.decode
            for j, c in enumerate(cand):
                try:
                    events.append(decode(c))
                    order.append(j)
                except Exception as exc:  # msgspec errors, UnicodeDecodeError, RecursionError
                    bad.append((j, _error_reason(exc, c)))
        refused = self._finish(events)
        if refused:
            drop = {k for k, _ in refused}
            bad.extend((order[k], reason) for k, reason in refused)
            events = [ev for k, ev in enumerate(events) if k not in drop]
        return events, bad

    # --- bookkeeping ---------------------------------------------------------------------------------

    @staticmethod
    def _invalid(result: ParseResult, reason: str, source: str, offset: int, line: bytes) -> None:
        result.invalid[reason] = result.invalid.get(reason, 0) + 1
        result.dead_letters.append(DeadLetter(source, offset, reason, bytes(line[:DEAD_LETTER_MAX])))

    def _all_failed(self, data: bytes, source: str, base_offset: int) -> ParseResult:
        lines = data.split(b"\n")
        if lines and not lines[-1]:
            lines.pop()
        result = ParseResult(lines=len(lines))
        for start, line in zip(_line_starts(lines), lines, strict=False):
            self._invalid(result, "parser_error", source, base_offset + start, line)
        return result


def _line_starts(lines: Iterable[bytes]) -> list[int]:
    """Offset of each line's first byte within the block (lines were split on single newlines)."""
    return list(accumulate((len(line) + 1 for line in lines), initial=0))
