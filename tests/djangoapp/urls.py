from __future__ import annotations

from django.urls import include, path, re_path

from djangoapp import views

api = [
    path("stories/", views.story_list),
    path("stories/n-plus-one/", views.story_list_n_plus_one),
    path("stories/<int:story_id>/", views.story_detail),
    path("stories/async/", views.async_stories),
    path("seed/", views.seed),
]

urlpatterns = [
    path("ping/", views.ping),
    path("api/", include(api)),
    path("fail/", views.fail),
    re_path(r"^unavailable/(?P<code>[0-9]+)/$", views.server_error),
]
