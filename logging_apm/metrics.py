"""Business metrics from app code: ``count("stories.published", story_type="short")``, ``gauge(...)``.

Each call emits one ``metric`` event (schema 1); the aggregator turns them into ``apm.business.<name>``.

Two rules protect the pipeline from what app code might pass:

- the name must match the schema's pattern (letters, digits, ``_`` and ``.``, starting with a letter); a
  bad name is a programming error and raises ``ValueError`` at the call site, like a bad format string;
- tag values are bounded: each (metric, tag) pair keeps at most ``cap`` distinct values (100 by default,
  ``APM_METRIC_TAG_CAP`` or ``set_tag_cap``); past it, new values are reported as ``other`` and a warning is
  logged once for that pair. A user id used as a tag therefore costs 101 series, not millions.

Tag values are converted to strings (the schema's ``metric.tags`` is string to string) and cut to the
schema's maximum length.
"""

from __future__ import annotations

import logging
import math
import os
import re
import threading
from typing import Final

from logging_apm.emit import INTERNAL_LOGGER, emit, get_emitter
from logging_apm.schema import FIELDS_BY_NAME, MAX_STRING_LENGTH

__all__ = ["OTHER", "count", "gauge", "reset_cardinality", "set_tag_cap", "validate_name"]

OTHER: Final = "other"
DEFAULT_TAG_CAP: Final = 100

_NAME = re.compile(FIELDS_BY_NAME["metric.name"].pattern or "")
_TAG_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]{0,99}$")
_log = logging.getLogger(INTERNAL_LOGGER)


def _cap_from_env() -> int:
    raw = os.environ.get("APM_METRIC_TAG_CAP")
    if raw is None:
        return DEFAULT_TAG_CAP
    try:
        cap = int(raw)
    except ValueError:
        raise ValueError(f"APM_METRIC_TAG_CAP={raw!r} is not an integer") from None
    if cap < 1:
        raise ValueError(f"APM_METRIC_TAG_CAP={raw!r} must be at least 1")
    return cap


class _Cardinality:
    """Distinct values seen per (metric, tag); thread-safe; the warning for a pair is logged once."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._seen: dict[tuple[str, str], set[str]] = {}
        self._warned: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def bound(self, metric: str, tag: str, value: str) -> str:
        key = (metric, tag)
        seen_now = self._seen.get(key)
        if seen_now is not None and value in seen_now:  # the common case, without the lock (GIL-safe reads)
            return value
        with self._lock:
            seen = self._seen.setdefault(key, set())
            if value in seen:
                return value
            if len(seen) < self.cap:
                seen.add(value)
                return value
            warn = key not in self._warned
            self._warned.add(key)
        if warn:
            _log.warning(
                "metric %r tag %r passed %d distinct values; further new values are reported as %r "
                "(raise APM_METRIC_TAG_CAP if this tag is meant to be that varied)",
                metric, tag, self.cap, OTHER,
            )
        return OTHER


_cardinality = _Cardinality(_cap_from_env())


def set_tag_cap(cap: int) -> None:
    """Change the per-tag cap (forgets the values seen so far)."""
    global _cardinality
    if cap < 1:
        raise ValueError("the tag cap must be at least 1")
    _cardinality = _Cardinality(cap)


def reset_cardinality() -> None:
    """Forget the tag values seen so far (tests; a long-lived process never needs it)."""
    set_tag_cap(_cardinality.cap)


# Names and tag keys already checked: they are literals in the app's code, so these sets stay small; the
# size guard keeps a caller that builds names dynamically from growing them without end.
_good_names: set[str] = set()
_good_tag_keys: set[str] = set()
_CACHE_MAX: Final = 10_000


def validate_name(name: str) -> str:
    if name in _good_names:
        return name
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(
            f"invalid metric name {name!r}: use letters, digits, '_' and '.', starting with a letter "
            f"(at most 200 characters)"
        )
    if len(_good_names) < _CACHE_MAX:
        _good_names.add(name)
    return name


def _tags(name: str, tags: dict[str, object]) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, raw in tags.items():
        if key not in _good_tag_keys:
            if not _TAG_NAME.match(key):
                raise ValueError(f"invalid tag name {key!r} for metric {name!r}")
            if len(_good_tag_keys) < _CACHE_MAX:
                _good_tag_keys.add(key)
        value = raw if isinstance(raw, str) else str(raw)
        out[key] = _cardinality.bound(name, key, value[:MAX_STRING_LENGTH])
    return out


def _value(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"metric {name!r}: value must be a finite number, not {value!r}")
    return value


def _record(kind: str, name: str, value: float, tags: dict[str, object]) -> None:
    validate_name(name)
    value = _value(name, value)
    if not get_emitter().enabled:
        return
    attrs: dict[str, object] = {"metric.name": name, "metric.type": kind, "metric.value": value}
    if tags:
        attrs["metric.tags"] = _tags(name, tags)
    emit("metric", None, "success", attrs)


def count(name: str, value: float = 1, **tags: object) -> None:
    """Add ``value`` to the counter ``name`` (summed per window by the aggregator)."""
    _record("count", name, value, tags)


def gauge(name: str, value: float, **tags: object) -> None:
    """Report the current level of ``name`` (the aggregator keeps avg and max per window)."""
    _record("gauge", name, value, tags)
