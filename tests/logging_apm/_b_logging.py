"""Apply the events logger's part of a ``build_logging()`` dict without ``dictConfig``.

``logging.config.dictConfig`` shuts down every existing handler first, which would close the handlers the
test session set up for other tests. This builds the dict's formatters and handlers with the same
configurator, attaches them to the events logger for the block, and closes only them afterwards.
"""

from __future__ import annotations

import logging
import logging.config
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from logging_apm.emit import EVENT_LOGGER


@contextmanager
def events_logging(config: dict[str, Any]) -> Iterator[list[logging.Handler]]:
    configurator = logging.config.DictConfigurator(config)
    formatters = configurator.config["formatters"]
    for name in list(formatters):
        formatters[name] = configurator.configure_formatter(formatters[name])
    handler_specs = configurator.config["handlers"]
    wanted = config["loggers"][EVENT_LOGGER]["handlers"]
    handlers = [configurator.configure_handler(handler_specs[name]) for name in wanted]
    logger = logging.getLogger(EVENT_LOGGER)
    saved = (logger.handlers[:], logger.level, logger.propagate)
    logger.handlers[:] = handlers
    logger.setLevel(config["loggers"][EVENT_LOGGER].get("level", "INFO"))
    logger.propagate = False
    try:
        yield handlers
    finally:
        for h in handlers:
            h.close()
        logger.handlers[:], logger.level, logger.propagate = saved[0], saved[1], saved[2]
