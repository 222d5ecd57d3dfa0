"""Names, tags and attributes checked and normalised to each vendor's documented rules.

Every change is counted under a reason, so that what a vendor receives never differs silently from what
the catalog produced. Rules (``docs/sinks.md`` cites the vendor pages):

Datadog: metric names start with a letter, hold ASCII letters, digits, ``_`` and ``.``, at most 200
characters; tags start with a letter, at most 200 characters, lowercase letters, digits and ``_ - : . /``;
values are 32-bit floats.

New Relic: metric names and attribute keys at most 255 characters, string values at most 4096, at most
100 attributes per point; NaN and infinities are dropped by the vendor, so they are not sent.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

from aggregator.sinks.base import bump

DD_MAX_NAME = 200
DD_MAX_TAG = 200
FLOAT32_MAX = 3.4028234663852886e38

NR_MAX_NAME = 255
NR_MAX_KEY = 255
NR_MAX_VALUE = 4096
NR_MAX_ATTRIBUTES = 100

_DD_NAME_BAD = re.compile(r"[^A-Za-z0-9_.]")
_DD_TAG_BAD = re.compile(r"[^a-z0-9_\-:./]")
_UNDERSCORES = re.compile(r"__+")


def value_problem(value: float, *, float32: bool = False) -> str | None:
    """Why a value cannot be sent (``non_finite``, ``out_of_range``), or None."""
    if not math.isfinite(value):
        return "non_finite"
    if float32 and abs(value) > FLOAT32_MAX:
        return "out_of_range"
    return None


def datadog_metric_name(name: str, cut: dict[str, int]) -> str | None:
    """The name Datadog will store, or None when nothing usable is left (the point is dropped)."""
    fixed = _UNDERSCORES.sub("_", _DD_NAME_BAD.sub("_", name))
    start = next((i for i, ch in enumerate(fixed) if ch.isascii() and ch.isalpha()), None)
    if start is None:
        return None
    fixed = fixed[start:]
    if fixed != name:
        bump(cut, "metric_name_normalised")
    if len(fixed) > DD_MAX_NAME:
        fixed = fixed[:DD_MAX_NAME].rstrip("._")
        bump(cut, "metric_name_truncated")
    return fixed


def datadog_tag(key: str, value: str, cut: dict[str, int]) -> str | None:
    """``key:value`` as Datadog will store it, or None (counted) when the tag has no usable start."""
    raw = f"{key}:{value}".lower()  # Datadog lowercases tags itself: not a change worth reporting
    tag = _DD_TAG_BAD.sub("_", raw)
    start = next((i for i, ch in enumerate(tag) if ch.isalpha()), None)
    if start is None:
        bump(cut, "tag_dropped")
        return None
    tag = tag[start:]
    if tag != raw:
        bump(cut, "tag_normalised")
    if len(tag) > DD_MAX_TAG:
        tag = tag[:DD_MAX_TAG]
        bump(cut, "tag_truncated")
    return tag


def datadog_tags(tags: tuple[tuple[str, str], ...], cut: dict[str, int]) -> list[str]:
    out: list[str] = []
    seen: set[str] = set()
    for key, value in tags:
        tag = datadog_tag(key, value, cut)
        if tag is not None and tag not in seen:
            seen.add(tag)
            out.append(tag)
    return out


def newrelic_metric_name(name: str, cut: dict[str, int]) -> str | None:
    if not name:
        return None
    if len(name) > NR_MAX_NAME:
        bump(cut, "metric_name_truncated")
        return name[:NR_MAX_NAME]
    return name


def newrelic_attributes(
    tags: tuple[tuple[str, str], ...] | Mapping[str, object],
    cut: dict[str, int],
    *,
    room: int = NR_MAX_ATTRIBUTES,
) -> dict[str, object]:
    """Attributes within New Relic's limits; ``room`` is what the common block leaves of the 100 allowed."""
    pairs = tags.items() if isinstance(tags, Mapping) else tags
    out: dict[str, object] = {}
    for key, value in pairs:
        if len(out) >= room:
            bump(cut, "attributes_removed")
            continue
        k = key
        if len(k) > NR_MAX_KEY:
            k = k[:NR_MAX_KEY]
            bump(cut, "attribute_key_truncated")
        v: object = value
        if isinstance(v, str) and len(v) > NR_MAX_VALUE:
            v = v[:NR_MAX_VALUE]
            bump(cut, "attribute_value_truncated")
        out[k] = v
    return out
