"""aggregator.config: one table of settings, resolved file < environment < command line, checked up front."""

from __future__ import annotations

from pathlib import Path

import pytest

from aggregator.config import SETTINGS, ConfigError, load_config
from aggregator.config_docs import render

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_are_the_original_thresholds() -> None:
    """With nothing set, the alert thresholds are the original .env defaults of the design page."""
    cfg = load_config(environ={})
    assert cfg["alerting.api_p95_ms"] == 500.0
    assert cfg["alerting.api_p99_ms"] == 1000.0
    assert cfg["alerting.slow_query_ms"] == 100.0
    assert cfg["alerting.db_pool_utilization"] == 0.8
    assert cfg["sinks.enabled"] is True


def test_precedence_file_then_env_then_command_line(tmp_path: Path) -> None:
    """A value in the file is overridden by its environment variable, which the command line overrides."""
    f = tmp_path / "logapm.toml"
    f.write_text('[run]\nwindow_seconds = 30\nslow_query_ms = 50\n[alerting]\napi_p95_ms = 300\n')
    cfg = load_config(f, environ={"SLOW_QUERY_THRESHOLD_MS": "75"}, overrides={"alerting.api_p95_ms": 250})
    assert cfg["run.window_seconds"] == 30
    assert cfg["run.slow_query_ms"] == 75.0
    assert cfg.origin["run.slow_query_ms"] == "environment variable SLOW_QUERY_THRESHOLD_MS"
    assert cfg["alerting.api_p95_ms"] == 250


def test_bad_value_names_setting_and_source() -> None:
    """A value that cannot be parsed is refused with the setting's name and where it came from."""
    with pytest.raises(ConfigError, match=r"alerting\.api_p95_ms.*API_P95_THRESHOLD_MS"):
        load_config(environ={"API_P95_THRESHOLD_MS": "fast"})
    with pytest.raises(ConfigError, match="APM_ENABLED"):
        load_config(environ={"APM_ENABLED": "maybe"})


def test_unknown_key_in_file_is_an_error(tmp_path: Path) -> None:
    """A typo in the config file is an error, not a silently ignored setting."""
    f = tmp_path / "c.toml"
    f.write_text("[run]\nwindow_secnds = 30\n")
    with pytest.raises(ConfigError, match="window_secnds"):
        load_config(f, environ={})
    f.write_text("[run]\ninptus = ['a']\n")
    with pytest.raises(ConfigError, match="inptus"):
        load_config(f, environ={})


def test_rule_tables_are_kept_for_alerting(tmp_path: Path) -> None:
    """[[alerting.rules]] tables reach the alerting component untouched."""
    f = tmp_path / "c.toml"
    f.write_text('[[alerting.rules]]\nname = "x"\nmetric = "apm.request.duration.p95"\n')
    cfg = load_config(f, environ={})
    assert cfg.extra["alerting.rules"] == [{"name": "x", "metric": "apm.request.duration.p95"}]


def test_secrets_are_masked_in_public_view() -> None:
    """Secrets are listed for scrubbing and masked in the printable view."""
    cfg = load_config(environ={"DATADOG_API_KEY": "dd-secret-123", "PERFORMANCE_ALERT_EMAIL_PASSWORD": "pw9"})
    assert "dd-secret-123" not in repr(cfg.public())
    assert cfg.public()["sinks.datadog.api_key"] == "***"
    assert set(cfg.secrets()) == {"dd-secret-123", "pw9"}


def test_every_setting_has_docs_and_a_unique_path() -> None:
    """Each setting is declared once and documented."""
    paths = [s.path for s in SETTINGS]
    assert len(paths) == len(set(paths))
    assert all(s.doc for s in SETTINGS)


def test_configuration_page_is_in_step() -> None:
    """docs/configuration.md is exactly what the settings table renders."""
    page = (ROOT / "docs" / "configuration.md").read_text()
    assert page == render(), "regenerate: python -m aggregator.config_docs > docs/configuration.md"
