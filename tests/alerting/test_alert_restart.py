"""A run killed in the middle of alerting (a real child process ending with os._exit): no delivered
notification is repeated, no due one is forgotten; only a kill during the send itself repeats that one
message (as docs/alerting.md says)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from alert_servers import SlackServer, SmtpServer
from alert_timeline_kit import Timeline, make_config, notifier_env
from test_alert_timeline import EXPECTED, HEALTH_RULE, TIMING, log_of, main_scenario, received

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def killed_run(tl: Timeline, k: int, point: str, env: dict[str, str]) -> int:
    tl.commit_minute(k)
    assert tl.config.config_file is not None
    proc = subprocess.run(
        [sys.executable, str(HERE / "alert_killed_run.py"), point, str(tl.state), str(tl.config.config_file),
         json.dumps(env), str(tl.wall(k))],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{HERE}"}, capture_output=True,
        text=True, timeout=120,
    )
    return proc.returncode


@pytest.mark.parametrize("point", ["evaluation", "before-send", "during-send"])
def test_killed_run_neither_forgets_nor_repeats(tmp_path: Path, smtp_server: SmtpServer,
                                                slack_server: SlackServer, point: str) -> None:
    """Kill the run that makes the first firing due (run 16), then keep running every minute: each channel
    gets every expected message exactly once, one run late; except that a kill during the send repeats the
    one message the notifier had already accepted. The notification log equals an uninterrupted run's."""
    env = notifier_env(smtp_server.host, smtp_server.port, slack_server.url, **TIMING)
    tl = Timeline(tmp_path / "state.db", make_config(tmp_path, env, HEALTH_RULE), main_scenario)
    mail_titles: dict[int, list[str]] = {}
    slack_titles: dict[int, list[str]] = {}
    for k in range(28):
        if k == 16:
            assert killed_run(tl, k, point, env) == 137
        else:
            assert tl.run(k).ok
        mails, slack = received(smtp_server, slack_server)
        if mails:
            mail_titles[k] = [m[0] for m in mails]
        if slack:
            slack_titles[k] = slack
    expected = {k: [t] for k, (t, _) in EXPECTED.items() if k < 28}
    late = dict(expected)
    del late[16]
    late[17] = expected[16]
    assert slack_titles == late  # email goes first: the kill during its send comes before Slack's turn
    if point == "during-send":
        assert mail_titles == {**late, 16: expected[16]}  # the one message that may repeat
    else:
        assert mail_titles == late

    live_dir = tmp_path / "live"
    live_dir.mkdir()
    live = Timeline(live_dir / "state.db", make_config(live_dir, env, HEALTH_RULE), main_scenario)
    for k in range(28):
        live.commit_minute(k)
    live.alert_run(27)
    received(smtp_server, slack_server)
    assert log_of(tl.state) == log_of(live.state)
