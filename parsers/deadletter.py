"""The dead-letter file: one JSON line per invalid line, appended, so nothing refused is lost from sight.

Each record is ``{"source", "offset", "reason", "line"}`` plus ``"line_base64"`` (the exact bytes) when the
line is not valid UTF-8 text or contains NUL bytes, and ``"truncated": true`` when the line was longer than
the 4 KiB a dead letter keeps. ``(source, offset)`` identifies the line: a run killed between writing its
dead letters and committing its windows writes them again on the next run, identical, so a reader that
de-duplicates on that pair sees each invalid line once.

A batch is written with one ``write`` on a file opened with ``O_APPEND``: a concurrent reader never sees
half of a batch from this process, and batches of two writers never interleave within a line.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

import orjson

from parsers.lines import DEAD_LETTER_MAX, DeadLetter


def dead_letter_record(letter: DeadLetter) -> dict[str, object]:
    """The JSON object written for one dead letter."""
    record: dict[str, object] = {"source": letter.source, "offset": letter.offset, "reason": letter.reason}
    raw = letter.line
    try:
        text = raw.decode("utf-8")
        exact = "\0" not in text
    except UnicodeDecodeError:
        text = raw.decode("utf-8", "replace")
        exact = False
    record["line"] = text
    if not exact:
        record["line_base64"] = base64.b64encode(raw).decode("ascii")
    if len(raw) >= DEAD_LETTER_MAX:
        record["truncated"] = True
    return record


class DeadLetterWriter:
    """Appends dead letters to ``path`` (made, with its directory, on first use)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._fd: int | None = None
        self.written = 0

    def open(self) -> DeadLetterWriter:
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            # A writer killed mid-write may have left a line without its newline: end it, so the next
            # record starts on a line of its own.
            size = os.fstat(self._fd).st_size
            if size:
                with open(self.path, "rb") as f:
                    f.seek(size - 1)
                    if f.read(1) != b"\n":
                        os.write(self._fd, b"\n")
        return self

    def append(self, letters: Iterable[DeadLetter]) -> int:
        """Write a batch in one write; the number of records written."""
        payload = b"".join(orjson.dumps(dead_letter_record(x)) + b"\n" for x in letters)
        if not payload:
            return 0
        self.open()
        assert self._fd is not None
        view = memoryview(payload)
        while view:  # a regular file takes it all at once; loop only for the odd short write
            done = os.write(self._fd, view)
            view = view[done:]
        count = payload.count(b"\n")
        self.written += count
        return count

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> DeadLetterWriter:
        return self.open()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def read_dead_letters(path: str | os.PathLike[str]) -> list[DeadLetter]:
    """The dead letters of a file (exact bytes restored): for tests and for replaying fixed lines."""
    out = []
    with open(path, "rb") as f:
        for raw in f:
            if not raw.strip():
                continue
            rec = orjson.loads(raw)
            line = base64.b64decode(rec["line_base64"]) if "line_base64" in rec else rec["line"].encode()
            out.append(DeadLetter(rec["source"], rec["offset"], rec["reason"], line))
    return out
