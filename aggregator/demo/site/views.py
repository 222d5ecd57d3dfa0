"""The demo endpoints. Each one is an ordinary Django view; the instrumentation does the rest.

Latency that a real service would get from its infrastructure (a cold search index, a payments API, a
flaky report backend) is simulated here, driven by the demo's scenario in ``settings.DEMO`` and by the
event-time clock, so that the same traffic plan always tells the same story.
"""

from __future__ import annotations

import random
import time
from typing import Any

import requests
from django.conf import settings
from django.core.cache import cache
from django.db.models import F
from django.http import HttpRequest, JsonResponse

from aggregator.demo.site.models import Author, Chapter, Story

_session = requests.Session()
_session.trust_env = False  # the stand-in is on loopback: never through a proxy from the environment


def _scenario() -> dict[str, Any]:
    return dict(settings.DEMO)


def story_detail(request: HttpRequest, story_id: int) -> JsonResponse:
    """Cached read: a hit costs one cache call, a miss two queries and a cache set."""
    key = f"story:{story_id}"
    doc = cache.get(key)
    if doc is None:
        story = Story.objects.select_related("author").get(pk=story_id)
        chapters = Chapter.objects.filter(story_id=story_id).count()
        doc = {"id": story.pk, "title": story.title, "author": story.author.name, "likes": story.likes,
               "chapters": chapters}
        cache.set(key, doc, timeout=_scenario()["cache_seconds"])
    return JsonResponse(doc)


def feed(request: HttpRequest) -> JsonResponse:
    """The N+1: the author of each story is fetched in the loop (``select_related`` is missing)."""
    stories = list(Story.objects.order_by("-likes")[:20])
    items = [{"id": s.pk, "title": s.title, "author": s.author.name} for s in stories]
    return JsonResponse({"stories": items, "authors": Author.objects.count()})


def search(request: HttpRequest) -> JsonResponse:
    """A search whose ranking step is slow while the scenario's incident lasts (a cold index)."""
    q = request.GET.get("q", "")
    hits = list(Story.objects.filter(title__icontains=q).values_list("id", flat=True)[:20])
    demo = _scenario()
    start, end = demo["incident"]
    median = demo["search_incident_ms"] if start <= time.time() < end else demo["search_ms"]
    time.sleep(random.lognormvariate(0.0, 0.35) * median / 1000.0)
    return JsonResponse({"q": q, "hits": hits})


def checkout(request: HttpRequest) -> JsonResponse:
    """Charges through the payments API (the demo's local stand-in), then records a like as the order."""
    story_id = int(request.GET.get("story", "1"))
    response = _session.post(f"{_scenario()['payments_url']}/v1/charges", json={"story": story_id}, timeout=5)
    if response.status_code >= 500:
        return JsonResponse({"error": "payments unavailable"}, status=502)
    Story.objects.filter(pk=story_id).update(likes=F("likes") + 1)
    _publish("send_receipt", story_id)
    return JsonResponse({"charged": True, "charge": response.json().get("id")})


def export(request: HttpRequest) -> JsonResponse:
    """A report export whose backend fails part of the time: an unhandled exception, a 500."""
    if random.random() < _scenario()["export_failure_rate"]:
        raise RuntimeError("report backend timed out")
    total = Story.objects.count()
    return JsonResponse({"stories": total})


def like(request: HttpRequest, story_id: int) -> JsonResponse:
    """A write: one UPDATE, and the cached copy dropped."""
    Story.objects.filter(pk=story_id).update(likes=F("likes") + 1)
    cache.delete(f"story:{story_id}")
    _publish("refresh_recommendations", story_id)
    return JsonResponse({"liked": story_id})


def _publish(task: str, story_id: int) -> None:
    """Hand work to the Celery worker, when the demo runs one."""
    if not _scenario().get("celery"):
        return
    from aggregator.demo import tasks

    getattr(tasks, task).delay(story_id)
