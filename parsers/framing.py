"""The wrappers a shipper or a container runtime puts around the app's line, and how to take them off.

Accepted framings of one line (``docs/parsing.md`` has examples):

- the app's own JSON line (also Fluent Bit's ``plain`` file output of a record parsed as JSON);
- Fluent Bit's default file output, ``tag: [time, {record}]``: the record is the parsed line, or
  ``{"log": "<the line>", ...}`` when the input had no parser;
- Fluent Bit's ``plain`` output of such an unparsed record: ``{"log": "<the line>", ...}``;
- Docker's json-file driver: ``{"log":"<the line>\\n","stream":"stdout","time":"..."}``; a ``log`` without
  the trailing newline is a partial line (Docker splits lines over 16 KiB) joined with the records after it;
- the Kubernetes CRI log format: ``<RFC 3339 time> <stdout|stderr> <P|F> <the line>``, ``P`` marking a
  partial line joined with the lines after it up to the next ``F``.

The functions here work on bytes and never raise: a wrapper that cannot be taken off says so by its result.
"""

from __future__ import annotations

import re
from typing import Final, NamedTuple

import msgspec
import numpy as np

# `<time> <stream> <tags> <content>`; tags are `P` or `F`, optionally followed by more `:`-separated tags.
_CRI = re.compile(
    rb"\A[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]+(?:Z|[+-][0-9]{2}:[0-9]{2}) (stdout|stderr) ([PF])(?::[^ ]*)?(?: |\Z)",
)
_DIGITS: Final = frozenset(b"0123456789")


class Wrapper(msgspec.Struct, gc=False):
    """A Docker json-file record or an unparsed Fluent Bit record (other keys are ignored)."""

    log: str | None = None
    # Raw: kept undecoded (only their presence matters); empty when absent.
    stream: msgspec.Raw = msgspec.field(default_factory=msgspec.Raw)
    time: msgspec.Raw = msgspec.field(default_factory=msgspec.Raw)


_wrapper = msgspec.json.Decoder(Wrapper)
_out_file = msgspec.json.Decoder(tuple[msgspec.Raw, msgspec.Raw])


class CriLine(NamedTuple):
    stream: bytes  # stdout or stderr: partial pieces join within their own stream
    partial: bool  # a P piece: the line continues in the stream's next piece
    content: bytes


def cri(line: bytes) -> CriLine | None:
    """The parts of a CRI line, or None when the line is not one."""
    if not line or line[0] not in _DIGITS:
        return None
    m = _CRI.match(line)
    if m is None:
        return None
    return CriLine(m.group(1), m.group(2) == b"P", line[m.end():])


def wrapper(record: bytes) -> Wrapper | None:
    """The ``log`` wrapper of a JSON record, or None when the record is not valid JSON of that shape."""
    try:
        return _wrapper.decode(record)
    except (msgspec.MsgspecError, UnicodeDecodeError, RecursionError):
        return None


def is_docker_partial(w: Wrapper) -> bool:
    """A Docker json-file record whose line continues in the next record."""
    return bool(w.stream) and bool(w.time) and w.log is not None and w.log != "" and not w.log.endswith("\n")


def docker_partial_candidate(line: bytes) -> bool:
    """Cheap pre-check before decoding: might ``line`` be a partial Docker record?"""
    return line.startswith(b'{"log":"') and b'\\n","stream":"' not in line


def out_file_record(line: bytes) -> bytes | None:
    """The record of a Fluent Bit ``out_file`` line (``tag: [time, {record}]``), or None."""
    idx = line.find(b": [")
    if idx <= 0:
        return None
    rest = line[idx + 2:]
    try:
        _time, record = _out_file.decode(rest)
    except (msgspec.MsgspecError, UnicodeDecodeError, RecursionError):
        # The array does not decode, most likely because the record itself is broken: hand the record's
        # text on, so that the line gets the same reason it would get unwrapped.
        brace = rest.find(b", {")
        if rest[:1] != b"[" or brace < 0 or rest.rstrip()[-1:] != b"]":
            return None
        return rest[brace + 2 :].rstrip()[:-1]
    raw = bytes(record)
    return raw if raw[:1] == b"{" else None


def unwrap_log(w: Wrapper) -> bytes | None:
    """The line inside a ``log`` wrapper (trailing newline removed), or None when there is no ``log``."""
    if w.log is None:
        return None
    text = w.log[:-1] if w.log.endswith("\n") else w.log
    if text.endswith("\r"):
        text = text[:-1]
    return text.encode("utf-8", "surrogatepass")


def line_starts(nl: np.ndarray) -> np.ndarray:
    """The offset of each line's first byte, from the offsets of the newlines that end the lines."""
    starts = np.empty_like(nl)
    starts[0] = 0
    starts[1:] = nl[:-1] + 1
    return starts


def _lines_of(data: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``data`` as bytes, the newline offsets and the line starts (``data`` ends with a newline)."""
    buf = np.frombuffer(data, np.uint8)
    nl = np.flatnonzero(buf == 0x0A)
    return buf, nl, line_starts(nl)


def strip_cri_block(data: bytes) -> bytes | None:
    """The contents of a block made only of complete (``F``) CRI lines, their prefixes removed in one
    vectorised pass; None when any line is not such a line (the caller then goes line by line)."""
    if len(data) < 22 or data[-1] != 0x0A or data[0] not in _DIGITS or b" P " in data:
        return None
    buf, nl, starts = _lines_of(data)
    spaces = np.flatnonzero(buf == 0x20)
    j = np.searchsorted(spaces, starts)
    if len(spaces) == 0 or int(j.max()) + 2 >= len(spaces):
        return None
    s1, s2, s3 = spaces[j], spaces[j + 1], spaces[j + 2]
    first = buf[starts]
    ok = (
        (s3 < nl).all()  # `<time> <stream> <tag> ` all on the line
        and (s1 - starts >= 20).all()  # an RFC 3339 time
        and ((first >= 0x30) & (first <= 0x39)).all()
        and (buf[starts + 10] == 0x54).all()  # "T"
        and (s2 - s1 == 7).all()  # "stdout" / "stderr"
        and (buf[s1 + 1] == 0x73).all() and (buf[s1 + 2] == 0x74).all() and (buf[s1 + 3] == 0x64).all()
        and (s3 - s2 == 2).all() and (buf[s2 + 1] == 0x46).all()  # the tag is "F"
    )
    if not ok:
        return None
    return b"".join([data[a:b] for a, b in zip((s3 + 1).tolist(), (nl + 1).tolist(), strict=True)])


def strip_out_file_block(data: bytes) -> bytes | None:
    """The records of a block made only of Fluent Bit ``out_file`` lines (``tag: [time, {record}]``), one
    per line, in one vectorised pass; None when any line is not such a line."""
    if len(data) < 8 or data[-1] != 0x0A or data[:1] == b"{" or not data.endswith(b"}]\n"):
        return None
    buf, nl, starts = _lines_of(data)
    brackets = np.flatnonzero(buf == 0x5B)  # "["
    braces = np.flatnonzero(buf == 0x7B)  # "{"
    if len(brackets) == 0 or len(braces) == 0:
        return None
    jb, jc = np.searchsorted(brackets, starts), np.searchsorted(braces, starts)
    if int(jb.max()) >= len(brackets) or int(jc.max()) >= len(braces):
        return None
    bracket, brace = brackets[jb], braces[jc]  # the first "[" and "{" at or after each line start
    ok = (
        (bracket - starts >= 3).all()  # a tag before ": ["
        and (bracket < brace).all() and (brace < nl).all()
        and (buf[bracket - 2] == 0x3A).all() and (buf[bracket - 1] == 0x20).all()  # ": ["
        and (buf[brace - 2] == 0x2C).all() and (buf[brace - 1] == 0x20).all()  # ", {"
        and (buf[nl - 1] == 0x5D).all() and (buf[nl - 2] == 0x7D).all()  # "}]"
    )
    if not ok:
        return None
    # The record, and the newline in place of the closing "]".
    return b"\n".join([data[a:b] for a, b in zip(brace.tolist(), (nl - 1).tolist(), strict=True)]) + b"\n"


def object_lines(data: bytes) -> np.ndarray | None:
    """The newline positions of ``data`` when every line starts with ``{`` and ends with ``}`` (the last
    one with its newline), else None. Vectorised: numpy is several times faster here than ``bytes.count``
    with a two- or three-byte needle.

    Why it matters: JSON strings cannot span lines, so in such a block every line holds whole top-level
    values, and a ``decode_lines`` that returns as many values as there are lines read one per line."""
    if len(data) < 2 or data[0] != 0x7B or data[-1] != 0x0A:
        return None
    buf = np.frombuffer(data, np.uint8)
    nl = np.flatnonzero(buf == 0x0A)
    if not (buf[nl - 1] == 0x7D).all() or not (buf[nl[:-1] + 1] == 0x7B).all():
        return None
    return nl


def unwrap_log_block(data: bytes) -> bytes | None:
    """The lines inside a block made only of ``{"log": ...}`` records (Docker json-file with whole lines,
    unparsed Fluent Bit records), decoded in one call; None when any line is not such a record."""
    if not data.startswith(b'{"log":'):
        return None
    nl = object_lines(data)
    if nl is None:
        return None
    try:
        records = _wrapper.decode_lines(data)
    except (msgspec.MsgspecError, UnicodeDecodeError, RecursionError):
        return None
    if len(records) != len(nl):
        return None
    texts = []
    for w in records:
        text = w.log
        if text is None:
            return None
        if text.endswith("\n"):
            text = text[:-1]
        elif w.stream and w.time:
            return None  # a partial Docker record: joined line by line
        if text.endswith("\r"):
            text = text[:-1]
        if "\n" in text:
            return None
        texts.append(text)
    return ("\n".join(texts) + "\n").encode("utf-8", "surrogatepass")
