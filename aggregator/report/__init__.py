"""The self-contained HTML report (``logapm report``): one file with inline CSS, inline SVG charts and one
small inline script; no network access is needed to view it.

- ``data``: what the report shows, gathered from the store (windows merged by the catalog, N+1 findings,
  alert history);
- ``model``: that data, typed;
- ``svg``: the charts, drawn here (line, bar, stacked bar, timeline);
- ``render``: the page (``template.html``), every string from the logs escaped;
- ``build``: open the store, gather, render, write atomically.

See ``docs/report.md``.
"""

from aggregator.report.build import ReportResult, collect, write_report

__all__ = ["ReportResult", "collect", "write_report"]
