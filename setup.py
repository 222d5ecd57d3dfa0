"""The optional native scanner (parsers._scan); everything else is in pyproject.toml.

``optional=True``: without a C compiler the build goes on, and ``parsers.scan.available`` is False.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("parsers._scan", ["parsers/_scan.c"], optional=True, extra_compile_args=["-O2"])])
