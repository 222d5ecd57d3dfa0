"""Authors write stories; stories have chapters. Enough relations for an honest N+1."""

from __future__ import annotations

from django.db import models


class Author(models.Model):
    name = models.CharField(max_length=100)
    country = models.CharField(max_length=2)

    class Meta:
        app_label = "demo"


class Story(models.Model):
    title = models.CharField(max_length=200)
    author = models.ForeignKey(Author, on_delete=models.CASCADE, related_name="stories")
    likes = models.IntegerField(default=0)
    words = models.IntegerField(default=0)

    class Meta:
        app_label = "demo"


class Chapter(models.Model):
    story = models.ForeignKey(Story, on_delete=models.CASCADE, related_name="chapters")
    number = models.IntegerField()
    words = models.IntegerField()

    class Meta:
        app_label = "demo"
