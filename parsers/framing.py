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
    try:
        _time, record = _out_file.decode(line[idx + 2:])
    except (msgspec.MsgspecError, UnicodeDecodeError, RecursionError):
        return None
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
