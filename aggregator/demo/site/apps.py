from __future__ import annotations

from django.apps import AppConfig


class DemoSiteConfig(AppConfig):
    name = "aggregator.demo.site"
    label = "demo"
    verbose_name = "logging-apm demo site"
    default_auto_field = "django.db.models.BigAutoField"
