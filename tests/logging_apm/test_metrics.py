"""Business metrics: names validated, values checked, tag values bounded per tag with one warning."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from logging_apm import metrics, tracing
from logging_apm.testing import capture_events


@pytest.fixture(autouse=True)
def _fresh_cardinality() -> Iterator[None]:
    metrics.reset_cardinality()
    yield
    metrics.set_tag_cap(metrics.DEFAULT_TAG_CAP)


def test_count_and_gauge_emit_schema_valid_metric_events() -> None:
    """count() and gauge() each emit one metric event with name, type, value and string tags."""
    with capture_events() as events:
        metrics.count("stories.published", story_type="short")
        metrics.count("stories.published", 3, story_type="long")
        metrics.gauge("queue.backlog", 17.5, region="eu", shard=3)
    got = events.of_kind("metric")
    assert [(e["metric.name"], e["metric.type"], e["metric.value"]) for e in got] == [
        ("stories.published", "count", 1), ("stories.published", "count", 3), ("queue.backlog", "gauge", 17.5)]
    assert got[0]["metric.tags"] == {"story_type": "short"}
    assert got[2]["metric.tags"] == {"region": "eu", "shard": "3"}
    assert "duration_ms" not in got[0]


def test_metric_inside_a_trace_carries_the_trace() -> None:
    """A metric emitted while handling a request is correlated with it by trace id."""
    with capture_events() as events, tracing.start_span() as span:
        metrics.count("signups")
    assert events[0]["trace_id"] == span.trace_id
    assert events[0]["parent_span_id"] == span.span_id


@pytest.mark.parametrize("name", ["", "1abc", "has space", "bad-dash", "x" * 201, "ünicode"])
def test_invalid_names_raise(name: str) -> None:
    """A name outside the schema's pattern is refused at the call site, and nothing is emitted."""
    with capture_events() as events:
        with pytest.raises(ValueError, match="invalid metric name"):
            metrics.count(name)
    assert events == []


@pytest.mark.parametrize("value", [float("nan"), float("inf"), "3", True, None])
def test_invalid_values_raise(value: object) -> None:
    """Non-finite or non-numeric values are refused (the schema needs a number)."""
    with pytest.raises(ValueError, match="finite number"):
        metrics.gauge("ok.name", value)  # type: ignore[arg-type]


def test_tag_cardinality_is_capped_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    """Past the cap, new values of one tag become 'other'; known values pass; the warning is logged once
    for that (metric, tag) pair; another tag of the same metric keeps its own budget."""
    metrics.set_tag_cap(3)
    with capture_events() as events, caplog.at_level(logging.WARNING, logger="logging_apm.internal"):
        for i in range(10):
            metrics.count("logins", user=f"u{i}", plan="free")
        metrics.count("logins", user="u1", plan="pro")
    users = [e["metric.tags"]["user"] for e in events]
    assert users == ["u0", "u1", "u2"] + ["other"] * 7 + ["u1"]
    assert [e["metric.tags"]["plan"] for e in events][-1] == "pro"
    warnings = [r for r in caplog.records if "passed 3 distinct values" in r.getMessage()]
    assert len(warnings) == 1 and "'user'" in warnings[0].getMessage()


def test_cap_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """APM_METRIC_TAG_CAP sets the cap; a bad value is a clear error."""
    monkeypatch.setenv("APM_METRIC_TAG_CAP", "7")
    assert metrics._cap_from_env() == 7
    monkeypatch.setenv("APM_METRIC_TAG_CAP", "lots")
    with pytest.raises(ValueError, match="APM_METRIC_TAG_CAP"):
        metrics._cap_from_env()


def test_long_tag_values_are_cut_to_the_schema_bound() -> None:
    """A tag value longer than the schema allows is cut, so the event stays valid."""
    with capture_events() as events:
        metrics.count("x.y", note="a" * 10000)
    assert len(events[0]["metric.tags"]["note"]) == 4096


def test_disabled_emitter_costs_nothing_but_still_validates(monkeypatch: pytest.MonkeyPatch) -> None:
    """With APM disabled nothing is emitted, but a bad name is still an error (found in development)."""
    import logging_apm.emit as emit_module
    from logging_apm.conf import AppSettings

    monkeypatch.setattr(emit_module, "_emitter", emit_module.Emitter(AppSettings(enabled=False)))
    with capture_events(enable=False) as events:
        metrics.count("fine")
        with pytest.raises(ValueError):
            metrics.count("not fine")
    assert events == []
