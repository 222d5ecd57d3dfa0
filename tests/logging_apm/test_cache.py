"""Cache instrumentation on local memory and Redis (Django's RedisCache): hits, misses, key counts."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.cache import caches

from logging_apm import cache as apm_cache
from logging_apm.testing import capture_events

# The keys the tests use; removed before and after each test (never clear(): on Redis that is FLUSHDB,
# which would wipe other users' keys).
KEYS = ["absent", "a", "b", "c", "zz", "computed", "counter", "k", "missing", "never-set"]


@pytest.fixture(params=["default", "redis"])
def backend(request: pytest.FixtureRequest) -> Iterator[Any]:
    """Each test runs on the local-memory cache and on the Redis cache."""
    if request.param == "redis":
        request.getfixturevalue("redis_server")
    c = caches[request.param]
    with capture_events(validate=False):
        c.delete_many(KEYS)
    yield c
    with capture_events(validate=False):
        c.delete_many(KEYS)


def _ops(events: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [(e["cache.name"], e["cache.operation"], e.get("cache.hit"), e["cache.keys"]) for e in events]


def test_reads_report_hits_and_misses(backend: Any) -> None:
    """get/get_many/has_key/get_or_set: one event each, with hit or miss, the key count, no key name."""
    alias = backend._logging_apm_alias if hasattr(backend, "_logging_apm_alias") else None
    secret_key = f"user:{uuid.uuid4().hex}:email"
    with capture_events() as events:
        assert backend.get(secret_key) is None
        backend.set(secret_key, None)  # a stored None is a hit, not a miss
        assert backend.get(secret_key, "dflt") is None
        assert backend.get("absent", "dflt") == "dflt"
        backend.set_many({"a": 1, "b": 2})
        assert backend.get_many(["a", "b"]) == {"a": 1, "b": 2}
        assert backend.get_many(["a", "zz"]) == {"a": 1}
        assert backend.has_key("a") and not backend.has_key("zz")
        assert backend.get_or_set("computed", lambda: 42) == 42
        assert backend.get_or_set("computed", lambda: 43) == 42
        backend.delete_many(["a", "b", "c"])
        backend.incr("counter", 1) if backend.has_key("counter") else backend.add("counter", 1)
    name = events.of_kind("cache")[0]["cache.name"]
    assert alias is None and name in {"default", "redis"}
    assert _ops(events.of_kind("cache")) == [
        (name, "get", False, 1),
        (name, "set", None, 1),
        (name, "get", True, 1),
        (name, "get", False, 1),
        (name, "set_many", None, 2),
        (name, "get_many", True, 2),
        (name, "get_many", False, 2),
        (name, "has_key", True, 1),
        (name, "has_key", False, 1),
        (name, "get_or_set", False, 1),
        (name, "get_or_set", True, 1),
        (name, "delete_many", None, 3),
        (name, "has_key", False, 1),
        (name, "add", None, 1),
    ]
    assert secret_key not in str(events) and "computed" not in str(events)


def test_async_calls(backend: Any) -> None:
    """aget/aset report as get/set, once each (the thread the default async methods use is not counted twice)."""

    async def work() -> Any:
        await backend.aset("k", "v")
        return await backend.aget("k"), await backend.aget("missing")

    with capture_events() as events:
        assert asyncio.run(work()) == ("v", None)
    assert [(e["cache.operation"], e.get("cache.hit")) for e in events.of_kind("cache")] == [
        ("set", None), ("get", True), ("get", False)]


def test_failing_call_is_a_failure(backend: Any) -> None:
    """incr of a missing key raises ValueError to the app and is a failure event."""
    with capture_events() as events, pytest.raises(ValueError):
        backend.incr("never-set")
    [event] = events.of_kind("cache")
    assert event["outcome"] == "failure" and event["error.type"] == "ValueError"


def test_install_uninstall_safe_twice() -> None:
    """Installing twice wraps once; uninstall (twice) removes the wrappers; install again restores events."""
    c = caches["default"]
    c.get("warm")  # the cache object of this thread exists before install
    apm_cache.install()
    apm_cache.install()
    assert c.get._logging_apm_original.__self__ is c  # wrapped once: the original is the bound method
    try:
        apm_cache.uninstall()
        apm_cache.uninstall()
        assert not hasattr(c.get, "_logging_apm_original") and not apm_cache.installed()
        with capture_events() as events:
            c.get("x")
        assert events == []
    finally:
        apm_cache.install()
    with capture_events() as events:
        c.get("x")
    assert len(events) == 1


def test_cache_hit_in_a_view_skips_the_database(seeded: None) -> None:
    """The detail view: first call misses (db + set), second hits (no db); all inside the request's trace."""
    from django.test import Client
    from djangoapp.models import Story

    story = Story.objects.first()
    assert story is not None
    caches["default"].delete(f"story:{story.id}")
    with capture_events() as first:
        Client().get(f"/api/stories/{story.id}/")
    with capture_events() as second:
        Client().get(f"/api/stories/{story.id}/")
    assert [e["cache.operation"] for e in first.of_kind("cache")] == ["get", "set"]
    assert first.of_kind("cache")[0]["cache.hit"] is False and first.of_kind("db")
    assert [(e["cache.operation"], e["cache.hit"]) for e in second.of_kind("cache")] == [("get", True)]
    assert second.of_kind("db") == []
