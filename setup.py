"""The optional native extensions: the scanner (parsers._scan), the request line (logging_apm._speedups), the
sketch's stored form (aggregator._sketchcodec), the alert catch-up's sum of stored counts (alerting._columns),
the workers' trace summary (aggregator.insights._summary), the trace join's index of open traces
(aggregator.insights._opentable), the window accumulator's per-event work (aggregator._windows) and the
workers' mapped reads of plain files (aggregator._filemap); everything else is in pyproject.toml.

``optional=True``: without a C compiler the build goes on, ``parsers.scan.available`` is False,
``logging_apm.formatters`` writes the request line in Python and ``aggregator.sketch`` codes its stored form in
numpy (the same bytes), ``alerting.columns`` adds the counts run by run in Python (the same sums),
``aggregator.insights.columns`` summarises a chunk's traces with numpy (the same batch),
``aggregator.insights.opentraces`` indexes the open traces with a dict (the same slots),
``aggregator.windows`` accumulates in numpy (the same aggregates) and ``aggregator.sources`` reads every file
with read() (the same chunks).
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("parsers._scan", ["parsers/_scan.c"], optional=True, extra_compile_args=["-O2"]),
                   Extension("logging_apm._speedups", ["logging_apm/_speedups.c"], optional=True,
                             extra_compile_args=["-O2"]),
                   Extension("aggregator._sketchcodec", ["aggregator/_sketchcodec.c"], optional=True,
                             extra_compile_args=["-O2"]),
                   Extension("alerting._columns", ["alerting/_columns.c"], optional=True,
                             extra_compile_args=["-O2"]),
                   Extension("aggregator.insights._summary", ["aggregator/insights/_summary.c"], optional=True,
                             extra_compile_args=["-O2"]),
                   Extension("aggregator.insights._opentable", ["aggregator/insights/_opentable.c"], optional=True,
                             extra_compile_args=["-O2"]),
                   Extension("aggregator._windows", ["aggregator/_windows.c"], optional=True,
                             extra_compile_args=["-O2"]),
                   Extension("aggregator._filemap", ["aggregator/_filemap.c"], optional=True,
                             extra_compile_args=["-O2"])])
