"""Timeline tests in the style of Prometheus/Alertmanager acceptance tests: scripted windows in a real
state store, one alerting run per minute, and the exact runs at which each message must (and must not)
reach a real SMTP server and a local Slack webhook."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from alert_servers import SlackServer, SmtpServer
from alert_timeline_kit import T0, Timeline, W, make_config, notifier_env, request_window

from aggregator.store import Store
from alerting.state import AlertStore

HEALTH_RULE = """
[[alerting.rules]]
name = "no_health_checks"
metric = "apm.request.count"
op = "<"
threshold = 1
match = { route = "api/health/" }
for = "2m"
min_samples = 0
no_data = "alert"
severity = "critical"
message = "no requests to {route} in {span}"
"""


def main_scenario(k: int) -> list[Any]:
    """a: slow in minutes 10-29; d: slow in 10-14 (fires with a: one message for both); b: one slow minute
    (pending, never firing); c: always slow but 3 requests a minute (too few samples); health: silent in
    minutes 20-29 (no data)."""
    out = [
        request_window(k, "api/a/", 30, 900 if 10 <= k <= 29 else 100),
        request_window(k, "api/b/", 30, 900 if k == 5 else 100),
        request_window(k, "api/c/", 3, 2000),
        request_window(k, "api/d/", 30, 900 if 10 <= k <= 14 else 100),
    ]
    if not 20 <= k <= 29:
        out.append(request_window(k, "api/health/", 30, 5))
    return out


# run -> the one message each channel must receive in it (title, and the alert lines of its body)
EXPECTED: dict[int, tuple[str, list[str]]] = {
    16: ("[FIRING 2] api_latency_p95 (warning)", ["FIRING: p95 latency of api/a/", "FIRING: p95 latency of api/d/"]),
    20: ("[RESOLVED 1] api_latency_p95 (warning)", ["RESOLVED: p95 latency of api/d/"]),
    26: ("[STILL FIRING 1] api_latency_p95 (warning)", ["STILL FIRING: p95 latency of api/a/"]),
    27: ("[FIRING 1] no_health_checks (critical)", ["FIRING: no requests to api/health/ in 5m"]),
    31: ("[RESOLVED 1] no_health_checks (critical)", ["RESOLVED: no requests to api/health/ in 5m"]),
    35: ("[RESOLVED 1] api_latency_p95 (warning)", ["RESOLVED: p95 latency of api/a/"]),
}
RUNS = 41
TIMING = {"ALERT_FOR_SECONDS": "300", "ALERT_REPEAT_SECONDS": "600"}


def received(smtp: SmtpServer, slack: SlackServer) -> tuple[list[tuple[str, list[str]]], list[str]]:
    mails = []
    for got in smtp.take():
        plain = got.message.get_body(preferencelist=("plain",)).get_content()
        lines = [ln.split(" is ")[0].split(" (threshold")[0] for ln in plain.splitlines()
                 if ln.startswith(("FIRING:", "STILL FIRING:", "RESOLVED:"))]
        mails.append((str(got.message["Subject"]), sorted(lines)))
    headers = [p["blocks"][0]["text"]["text"] for p in slack.take()]
    return mails, headers


def log_of(state: Path) -> list[tuple[str, tuple[tuple[str, str], ...], str, int]]:
    store = Store(state)
    try:
        return sorted((n["rule"], n["key"], n["kind"], n["at"]) for n in AlertStore(store).notifications())
    finally:
        store.close()


def group_state(state: Path, rule: str, route: str) -> str:
    store = Store(state)
    try:
        g = AlertStore(store).groups(rule).get((("route", route),))
        return g.state if g else "inactive"
    finally:
        store.close()


@pytest.fixture
def timeline(tmp_path: Path, smtp_server: SmtpServer, slack_server: SlackServer) -> Timeline:
    env = notifier_env(smtp_server.host, smtp_server.port, slack_server.url, **TIMING)
    return Timeline(tmp_path / "state.db", make_config(tmp_path, env, HEALTH_RULE), main_scenario)


def test_exact_runs_of_each_notification(timeline: Timeline, smtp_server: SmtpServer, slack_server: SlackServer) -> None:
    """Firing after the pending duration, one message for both routes of a rule, repeat after the interval,
    resolved, no data; nothing for a pending that never fires or a group with too few samples - and
    nothing at all in any other run."""
    for k in range(RUNS):
        result = timeline.run(k)
        assert result.ok, result.lines
        mails, slack = received(smtp_server, slack_server)
        if k in EXPECTED:
            title, lines = EXPECTED[k]
            assert [m[0] for m in mails] == [title], f"run {k}"
            assert mails[0][1] == sorted(lines), f"run {k}"
            assert slack == [title], f"run {k}"
        else:
            assert mails == [] and slack == [], f"run {k}: unexpected {mails} {slack}"
        if k == 8:
            assert group_state(timeline.state, "api_latency_p95", "api/b/") == "pending"
        if k == 12:
            assert group_state(timeline.state, "api_latency_p95", "api/b/") == "inactive"
            assert group_state(timeline.state, "api_latency_p95", "api/a/") == "pending"
        if k == 30:
            assert group_state(timeline.state, "api_latency_p95", "api/a/") == "firing"
    assert group_state(timeline.state, "api_latency_p95", "api/c/") == "inactive"  # 3 requests a minute
    assert group_state(timeline.state, "api_latency_p95", "api/a/") == "resolved"
    assert slack_server.refused == []
    # event times: the firing of a is the end of minute 15 (pending from the end of minute 10)
    assert ("api_latency_p95", (("route", "api/a/"),), "firing", T0 + 16 * W) in log_of(timeline.state)


def test_replay_and_delayed_runs_raise_the_same_alerts(tmp_path: Path, smtp_server: SmtpServer,
                                                       slack_server: SlackServer) -> None:
    """Judged in event time: a live run per minute, a replay of all 41 minutes judged by one run, and live
    runs with a 10-minute gap log the same notifications for the same event times."""
    env = notifier_env(smtp_server.host, smtp_server.port, slack_server.url, **TIMING)
    logs = []
    for variant in ("live", "replay", "delayed"):
        d = tmp_path / variant
        d.mkdir()
        tl = Timeline(d / "state.db", make_config(d, env, HEALTH_RULE), main_scenario)
        for k in range(RUNS):
            if variant == "replay":
                tl.commit_minute(k)
            elif variant == "delayed" and 13 <= k <= 21:
                tl.commit_minute(k)  # the aggregator ran, alerting did not (or the whole run was late)
            else:
                tl.run(k)
        if variant == "replay":
            tl.alert_run(RUNS - 1, now=tl.wall(RUNS + 120))
        logs.append(log_of(d / "state.db"))
        received(smtp_server, slack_server)
    assert len(logs[0]) == 7  # a: firing, repeat, resolved; d: firing, resolved; health: firing, resolved
    assert logs[0] == logs[1] == logs[2]


def test_flapping_is_damped(tmp_path: Path, smtp_server: SmtpServer, slack_server: SlackServer) -> None:
    """A condition that flips every minute never gets past pending; a firing alert whose condition clears
    for a minute and comes back stays firing (keep_firing_for): one firing, one resolved message."""
    rules = """
[[alerting.rules]]
name = "flappy_pending"
metric = "apm.request.duration.max"
op = ">"
threshold = 500
span = "1m"
for = "2m"
min_samples = 1
group_by = ["route"]
match = { route = "api/flip/" }

[[alerting.rules]]
name = "flappy_firing"
metric = "apm.request.duration.max"
op = ">"
threshold = 500
span = "1m"
for = 0
keep_firing_for = "2m"
min_samples = 1
match = { route = "api/flap/" }
"""

    def scenario(k: int) -> list[Any]:
        flap_slow = k in (2, 3, 5)
        # three requests a minute: below the default rules' min_samples, only these rules judge them
        return [request_window(k, "api/flip/", 3, 900 if k % 2 else 100),
                request_window(k, "api/flap/", 3, 900 if flap_slow else 100)]

    env = notifier_env(smtp_server.host, smtp_server.port, slack_server.url)
    tl = Timeline(tmp_path / "state.db", make_config(tmp_path, env, rules), scenario)
    sent: dict[int, list[str]] = {}
    for k in range(20):
        tl.run(k)
        mails, slack = received(smtp_server, slack_server)
        assert [m[0] for m in mails] == slack
        if slack:
            sent[k] = slack
    # flap: slow windows 2, 3, 5 -> breach judged at 3, 4, 6; clear at 5 (kept), from 7 on -> resolved at 9
    assert sent == {3: ["[FIRING 1] flappy_firing (warning)"], 9: ["[RESOLVED 1] flappy_firing (warning)"]}
    assert all(n[0] != "flappy_pending" for n in log_of(tl.state))


def test_failing_notifier_is_retried_without_duplicates(timeline: Timeline, smtp_server: SmtpServer,
                                                        slack_server: SlackServer) -> None:
    """Slack answers 500 twice: email is unaffected, the Slack message comes on a later run (backoff 1 then
    2 minutes), once, and the run reports the failure instead of raising."""
    for k in range(16):
        timeline.run(k)
    received(smtp_server, slack_server)
    slack_server.script += [(500, "rollup_error"), (500, "rollup_error")]
    r16 = timeline.run(16)
    mails, slack = received(smtp_server, slack_server)
    assert [m[0] for m in mails] == [EXPECTED[16][0]] and slack == []
    assert not r16.ok and any("slack failed" in line for line in r16.lines)
    assert not any(slack_server.url in line or "secret" in line for line in r16.lines)
    timeline.run(17)  # due again after one minute: fails again
    assert received(smtp_server, slack_server) == ([], [])
    timeline.run(18)  # backoff two minutes: not tried
    assert slack_server.requests == 2
    assert received(smtp_server, slack_server) == ([], [])
    r19 = timeline.run(19)
    assert r19.ok
    assert received(smtp_server, slack_server) == ([], [EXPECTED[16][0]])
    for k in range(20, 26):
        timeline.run(k)
        mails, slack = received(smtp_server, slack_server)
        assert slack == ([EXPECTED[k][0]] if k in EXPECTED else []), f"run {k}"


def test_send_resolved_off(tmp_path: Path, smtp_server: SmtpServer, slack_server: SlackServer) -> None:
    """ALERT_SEND_RESOLVED=false: the firing message comes, the resolved one does not."""
    env = notifier_env(smtp_server.host, smtp_server.port, slack_server.url, ALERT_SEND_RESOLVED="false", **TIMING)
    tl = Timeline(tmp_path / "state.db", make_config(tmp_path, env), main_scenario)
    titles = []
    for k in range(22):
        tl.run(k)
        titles += received(smtp_server, slack_server)[1]
    assert titles == [EXPECTED[16][0]]


def test_disabled_notifiers_send_nothing_but_state_is_kept(tmp_path: Path, smtp_server: SmtpServer,
                                                            slack_server: SlackServer) -> None:
    """With PERFORMANCE_ALERT_*_ENABLED off nothing is sent; states and the log are still kept."""
    env = notifier_env(smtp_server.host, smtp_server.port, slack_server.url,
                       PERFORMANCE_ALERT_EMAIL_ENABLED="false", PERFORMANCE_ALERT_SLACK_ENABLED="false", **TIMING)
    tl = Timeline(tmp_path / "state.db", make_config(tmp_path, env), main_scenario)
    for k in range(18):
        assert tl.run(k).ok
    assert received(smtp_server, slack_server) == ([], [])
    assert group_state(tl.state, "api_latency_p95", "api/a/") == "firing"
    assert slack_server.requests == 0
