"""The demo's Django app (label ``demo``): a small story site with authors, stories and chapters.

Its views are built to show what the logs reveal: a cached page, an N+1 loop, a slow search, a call to an
outside payments API, a flaky export and a write. See ``aggregator.demo``.
"""
