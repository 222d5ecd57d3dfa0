"""Views that exercise every kind of event: ORM queries (one an N+1 loop), cache use, failures, async."""

from __future__ import annotations

from django.core.cache import cache
from django.http import HttpRequest, HttpResponse, JsonResponse

from djangoapp.models import Author, Story


def ping(request: HttpRequest) -> HttpResponse:
    """The minimal request (the benchmark's baseline): no query, no cache."""
    return HttpResponse(b"ok", content_type="text/plain")


def seed(request: HttpRequest) -> JsonResponse:
    """Create a few authors and stories (bulk_create: one executemany-style insert per model)."""
    count = int(request.GET.get("n", "5"))
    authors = [Author.objects.create(name=f"author {i}") for i in range(count)]
    Story.objects.bulk_create([Story(title=f"story {i}", author=a) for i, a in enumerate(authors)])
    return JsonResponse({"authors": len(authors)})


def story_list(request: HttpRequest) -> JsonResponse:
    """One query with a join (select_related)."""
    stories = [{"id": s.id, "title": s.title, "author": s.author.name}
               for s in Story.objects.select_related("author").order_by("id")[:50]]
    return JsonResponse({"stories": stories})


def story_list_n_plus_one(request: HttpRequest) -> JsonResponse:
    """The classic N+1: one query for the stories, then one per story for its author."""
    stories = [{"id": s.id, "author": s.author.name} for s in Story.objects.order_by("id")[:50]]
    return JsonResponse({"stories": stories})


def story_detail(request: HttpRequest, story_id: int) -> JsonResponse:
    """A cached lookup: a miss reads the database and sets the cache, a hit does not touch the database."""
    key = f"story:{story_id}"
    data = cache.get(key)
    if data is None:
        story = Story.objects.filter(id=story_id).values("id", "title").first()
        if story is None:
            return JsonResponse({"error": "not found"}, status=404)
        data = dict(story)
        cache.set(key, data, 60)
    return JsonResponse(data)


def fail(request: HttpRequest) -> HttpResponse:
    """An unhandled exception: Django answers 500."""
    raise RuntimeError("this view always fails")


def server_error(request: HttpRequest, code: str) -> HttpResponse:
    """A 503 without an exception."""
    return HttpResponse(b"unavailable", status=503)


async def async_stories(request: HttpRequest) -> JsonResponse:
    """An async view: async ORM and async cache calls."""
    count = await Story.objects.acount()
    await cache.aset("async:count", count, 30)
    cached = await cache.aget("async:count")
    return JsonResponse({"count": count, "cached": cached})
