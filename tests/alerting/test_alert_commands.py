"""``logapm alerts`` (states, history, deliveries), ``logapm alerts test`` and ``logapm alerts check``."""

from __future__ import annotations

from pathlib import Path

import pytest
from alert_servers import SlackServer, SmtpServer
from alert_timeline_kit import Timeline, make_config, notifier_env
from test_alert_timeline import HEALTH_RULE, TIMING, main_scenario

from aggregator.cli import main


def test_alerts_shows_states_history_and_deliveries(tmp_path: Path, smtp_server: SmtpServer,
                                                    slack_server: SlackServer, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """After a firing: the alert is listed as firing with its value, the history shows pending -> firing,
    the log shows both notifiers' deliveries as sent."""
    env = notifier_env(smtp_server.host, smtp_server.port, slack_server.url, **TIMING)
    tl = Timeline(tmp_path / "state.db", make_config(tmp_path, env, HEALTH_RULE), main_scenario)
    for k in range(18):
        tl.run(k)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert main(["alerts", "--state", str(tl.state), "--config", str(tmp_path / "logapm.toml")]) == 0
    out = capsys.readouterr().out
    assert "no_health_checks: apm.request.count < 1" in out
    firing = [ln for ln in out.splitlines() if ln.strip().startswith("FIRING")]
    assert len(firing) == 2 and "api_latency_p95  route=api/a/" in firing[0] and " ms " in firing[0]
    assert "pending -> firing" in out and "inactive -> pending" in out
    assert "[email: sent, slack: sent]" in out
    assert "secret" not in out


def test_alerts_test_sends_through_every_enabled_notifier(smtp_server: SmtpServer, slack_server: SlackServer,
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """`alerts test` reaches the SMTP server and the webhook; a failing channel makes the exit status 1 and
    is reported without the webhook URL."""
    for key, value in notifier_env(smtp_server.host, smtp_server.port, slack_server.url).items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("LOGAPM_CONFIG", raising=False)
    assert main(["alerts", "test"]) == 0
    [mail] = smtp_server.take()
    assert mail.message["Subject"].startswith("[TEST]")
    assert mail.message.get_body(preferencelist=("html",)) is not None
    [payload] = slack_server.take()
    assert payload["text"] == "logging-apm test message"
    slack_server.script.append((403, "invalid_token"))
    assert main(["alerts", "test"]) == 1
    out = capsys.readouterr().out
    assert "slack: FAILED: Slack webhook answered HTTP 403 'invalid_token'" in out
    assert "email: sent" in out and "secret" not in out


def test_alerts_check_refuses_a_bad_rule_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """`alerts check` exits 2 with the line and the problem; a good file lists the rules."""
    monkeypatch.delenv("LOGAPM_CONFIG", raising=False)
    bad = tmp_path / "bad.toml"
    bad.write_text('[[alerting.rules]]\nname = "x"\nmetric = "apm.request.count"\nop = ">"\nthreshold = 1\n'
                   'for = "soon"\n')
    assert main(["alerts", "check", "--config", str(bad)]) == 2
    assert "bad.toml line 6: rule 'x': for: 'soon' is not a duration" in capsys.readouterr().err
    good = tmp_path / "good.toml"
    good.write_text(HEALTH_RULE)
    assert main(["alerts", "check", "--config", str(good)]) == 0
    assert "9 rules OK" in capsys.readouterr().out


def test_alerts_views_escape_control_characters_like_the_other_terminal_views() -> None:
    """A rule or tag value carrying an ANSI escape is shown escaped, exactly as `logapm trace` shows it."""
    from aggregator.insights.text import printable
    from alerting.commands import _clean

    hostile = "api/\x1b[31mred\x1b[0m/"
    assert _clean(hostile) == printable(hostile)
    assert "\x1b" not in _clean(hostile) and "\\x1b" in _clean(hostile)
