"""logging_apm: the in-app half of logging-apm. Timing events as JSON log lines, schema 1.

Import cost matters here (it runs in every app process): submodules are imported only when used.
"""

from __future__ import annotations

__version__ = "0.1.0"
