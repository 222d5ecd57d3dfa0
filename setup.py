"""The optional native extensions: the scanner (parsers._scan) and the request line (logging_apm._speedups);
everything else is in pyproject.toml.

``optional=True``: without a C compiler the build goes on, ``parsers.scan.available`` is False and
``logging_apm.formatters`` writes the request line in Python (the same bytes).
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("parsers._scan", ["parsers/_scan.c"], optional=True, extra_compile_args=["-O2"]),
                   Extension("logging_apm._speedups", ["logging_apm/_speedups.c"], optional=True,
                             extra_compile_args=["-O2"])])
