"""Event timestamps to epoch seconds, fast and strict.

A timestamp is ``YYYY-MM-DDTHH:MM:SS[.fraction]Z``. Instead of a datetime per line, the reader caches the
epoch of each distinct minute prefix (``YYYY-MM-DDTHH:MM``, a few per run) and each distinct seconds
suffix (``:SS.mmmZ``, at most 61,000 with millisecond precision): one event costs two slices and two dict
look-ups. Each prefix and suffix is checked once, on its first sight, with the schema's own strictness.

The plausibility window is folded into the minute cache: a minute lying wholly inside
``[now - max_past, now + max_future]`` is cached as "good"; the few minutes at the edges are checked per
event, exactly.
"""

from __future__ import annotations

import calendar
import re
from operator import add, itemgetter
from typing import Final

import numpy as np

_MINUTE = re.compile(r"\A(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})\Z")
_SECONDS = re.compile(r"\A:(\d{2})(\.\d{1,9})?Z\Z")
_MAX_SECOND_KEYS: Final = 200_000  # sub-millisecond suffixes are unbounded: stop caching beyond this

# The app's own form, YYYY-MM-DDTHH:MM:SS.mmmZ: where its separators are, and its 17 digits.
_SEPARATOR_AT: Final = np.array([4, 7, 10, 13, 16, 19, 23])
_SEPARATORS: Final = np.frombuffer(b"--T::.Z", dtype=np.uint8)
_DIGITS_AT: Final = np.array([0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18, 20, 21, 22])
_MINUTE_WEIGHTS: Final = 10 ** np.arange(11, -1, -1, dtype=np.int64)

_PREFIX: Final = itemgetter(slice(0, 16))
_SUFFIX: Final = itemgetter(slice(16, None))

# Outcomes of a slow-path read, besides a float.
BAD: Final = "bad_timestamp"
FUTURE: Final = "future_timestamp"
PAST: Final = "past_timestamp"


def _minute_epoch(prefix: str) -> float | None:
    m = _MINUTE.match(prefix)
    if m is None:
        return None
    year, month, day, hour, minute = (int(g) for g in m.groups())
    if not (1 <= month <= 12 and 0 <= hour <= 23 and 0 <= minute <= 59 and year >= 1970):
        return None
    if not 1 <= day <= calendar.monthrange(year, month)[1]:
        return None
    return float(calendar.timegm((year, month, day, hour, minute, 0, 0, 0, 0)))


def _seconds(suffix: str) -> float | None:
    m = _SECONDS.match(suffix)
    if m is None:
        return None
    whole = int(m.group(1))
    if whole > 60:  # 60: a leap second, which RFC 3339 allows
        return None
    return whole + (float(m.group(2)) if m.group(2) else 0.0)


class TimestampReader:
    """Reads timestamps for one run: ``now`` and the window are fixed at construction."""

    __slots__ = ("_minutes", "_seconds", "future_limit", "past_limit")

    def __init__(self, now: float, max_future_seconds: float, max_past_seconds: float) -> None:
        self.future_limit = now + max_future_seconds
        self.past_limit = now - max_past_seconds
        self._minutes: dict[str, float] = {}  # only minutes wholly inside the window
        self._seconds: dict[str, float] = {}

    def epochs(self, values: list[str]) -> list[float]:
        """Epoch seconds of each timestamp, all from the caches (C-level maps, no per-value bytecode).
        Raises KeyError when one of them is not in the caches: new (call ``warm``), or not good."""
        minutes, seconds = self._minutes, self._seconds
        return list(map(add, map(minutes.__getitem__, map(_PREFIX, values)),
                        map(seconds.__getitem__, map(_SUFFIX, values))))

    def epochs_block(self, values: list[str]) -> list[float] | None:
        """Epoch seconds of each timestamp when all of them are good and written the app's way
        (``YYYY-MM-DDTHH:MM:SS.mmmZ``, 24 characters), computed with numpy over one joined buffer; None
        otherwise (then ``epochs``/``read`` decide, with the reasons). Each distinct minute is checked
        once by ``_minute_epoch``; seconds are ``SS + mmm / 1000``, the same doubles as ``_seconds`` gives
        (both are correctly rounded), added in the same order, so the results equal ``read``'s."""
        n = len(values)
        if not n:
            return []
        try:
            raw = "".join(values).encode("ascii")
        except UnicodeEncodeError:
            return None
        if len(raw) != 24 * n:
            return None
        a = np.frombuffer(raw, dtype=np.uint8).reshape(n, 24)
        if not (a[:, _SEPARATOR_AT] == _SEPARATORS).all():
            return None
        d = a[:, _DIGITS_AT] - np.uint8(48)
        if int(d.max()) > 9:
            return None
        d = d.astype(np.int64)
        minute = d[:, :12] @ _MINUTE_WEIGHTS  # YYYYMMDDHHMM as one integer
        whole = d[:, 12] * 10 + d[:, 13]
        if int(whole.max()) > 60:
            return None
        keys, first, inv = np.unique(minute, return_index=True, return_inverse=True)
        bases = np.empty(keys.size, dtype=np.float64)
        for j, i in enumerate(first.tolist()):
            base = _minute_epoch(values[i][:16])
            if base is None:
                return None
            bases[j] = base
        sec = whole + (d[:, 14] * 100 + d[:, 15] * 10 + d[:, 16]) / 1000.0
        ts = bases[inv.ravel()] + sec
        if not (ts.min() >= self.past_limit and ts.max() <= self.future_limit):
            return None
        return ts.tolist()  # type: ignore[no-any-return]

    def warm(self, values: list[str]) -> None:
        """Check and cache every new minute prefix and seconds suffix of ``values`` (all at once, so that
        the caller's vectorised look-ups succeed on the next try)."""
        minutes, seconds = self._minutes, self._seconds
        for prefix in set(map(_PREFIX, values)).difference(minutes):
            base = _minute_epoch(prefix) if prefix.isascii() else None
            if base is not None and self.past_limit <= base and base + 61.0 <= self.future_limit:
                minutes[prefix] = base
        if len(seconds) < _MAX_SECOND_KEYS:
            for suffix in set(map(_SUFFIX, values)).difference(seconds):
                sec = _seconds(suffix) if suffix.isascii() else None
                if sec is not None:
                    seconds[suffix] = sec

    def read(self, value: str) -> float | str:
        """Epoch seconds, or the reason code why the timestamp cannot be right (slow path, caches)."""
        if len(value) < 18 or not value.isascii():
            return BAD
        prefix, suffix = value[:16], value[16:]
        sec = self._seconds.get(suffix)
        if sec is None:
            sec = _seconds(suffix)
            if sec is None:
                return BAD
            if len(self._seconds) < _MAX_SECOND_KEYS:
                self._seconds[suffix] = sec
        base = self._minutes.get(prefix)
        if base is not None:
            return base + sec
        base = _minute_epoch(prefix)
        if base is None:
            return BAD
        if self.past_limit <= base and base + 61.0 <= self.future_limit:
            self._minutes[prefix] = base
            return base + sec
        ts = base + sec
        if ts > self.future_limit:
            return FUTURE
        if ts < self.past_limit:
            return PAST
        return ts
