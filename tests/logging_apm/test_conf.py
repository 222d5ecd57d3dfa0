"""App-side settings: the original environment variables feed the service tags; APM_ENABLED switches off."""

from __future__ import annotations

import logging

import pytest

from logging_apm import emit
from logging_apm.conf import AppSettings
from logging_apm.testing import capture_events


def test_original_variables_give_the_service_tags() -> None:
    """DATADOG_SERVICE_NAME / DATADOG_ENVIRONMENT (or New Relic's) become service.name / environment."""
    s = AppSettings.from_env({"DATADOG_SERVICE_NAME": "dd-svc", "NEW_RELIC_APP_NAME": "nr-svc",
                              "NEW_RELIC_ENVIRONMENT": "staging", "DD_VERSION": "9", "HOSTNAME": "pod-1"})
    assert dict(s.resource) == {"service.name": "dd-svc", "deployment.environment": "staging",
                                "service.version": "9", "host.name": "pod-1"}
    nr = AppSettings.from_env({"NEW_RELIC_APP_NAME": "nr-svc", "HOSTNAME": "h"})
    assert nr.resource["service.name"] == "nr-svc"
    explicit = AppSettings.from_env({"DATADOG_SERVICE_NAME": "dd"}, service_name="mine")
    assert explicit.resource["service.name"] == "mine"


def test_bad_values_are_errors_up_front() -> None:
    """An unparseable APM_ENABLED or an unknown setting fails at configuration, not silently."""
    with pytest.raises(ValueError, match="APM_ENABLED"):
        AppSettings.from_env({"APM_ENABLED": "perhaps"})
    with pytest.raises(TypeError, match="unknown logging_apm setting"):
        AppSettings.from_env({}, sevice_name="typo")


def test_disabled_emission_is_a_no_op_and_cheap() -> None:
    """With APM_ENABLED=false emit() logs nothing (its cost is measured by bench/emit.py, not here)."""
    previous = emit.get_emitter()
    try:
        with capture_events(enable=False) as events:
            emit.configure(AppSettings.from_env({"APM_ENABLED": "false"}))
            emit.emit("cache", 1.0, "success", {"cache.name": "x", "cache.operation": "get"})
        assert events == []
    finally:
        emit._emitter = previous


def test_events_logger_level_above_info_suppresses_events() -> None:
    """Routing: setting logging_apm.events to WARNING silences events like any logger."""
    logger = logging.getLogger(emit.EVENT_LOGGER)
    with capture_events() as events:
        level = logger.level
        logger.setLevel(logging.WARNING)
        try:
            emit.emit("cache", 1.0, "success", {"cache.name": "x", "cache.operation": "get"})
        finally:
            logger.setLevel(level)
    assert events == []
