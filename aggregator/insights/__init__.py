"""What the logs reveal beyond per-series percentiles: the insights computed from events that share a trace.

- ``traces``: the run's trace analyzer (N+1 findings, time breakdown per route, queries per request),
  including traces that cross the boundary between two runs (pending traces kept in the store).
- ``columns``: what the decoders send: a chunk's trace pieces as numpy columns (``extract``).
- ``partials``: a trace's sums of operations (``TracePart``, ``OpenTrace``), and ``summarize``, the
  per-event reference the columnar path is tested against.
- ``profile``: the pure per-request analysis (what one complete trace says).
- ``records``: one operation as a flat tuple (the trace view's unit).
- ``findings``: the insights' tables in the state store and the read side used by summaries and the report.
- ``metrics``: how the ``trace`` family's window aggregates become metric points.
- ``waterfall``: one trace drawn as a waterfall in the terminal (``logapm trace``).

See ``docs/insights.md``.
"""
