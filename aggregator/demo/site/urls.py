from __future__ import annotations

from django.urls import path

from aggregator.demo.site import views

urlpatterns = [
    path("api/stories/<int:story_id>/", views.story_detail),
    path("api/stories/<int:story_id>/like/", views.like),
    path("api/feed/", views.feed),
    path("api/search/", views.search),
    path("api/checkout/", views.checkout),
    path("api/reports/export/", views.export),
]
