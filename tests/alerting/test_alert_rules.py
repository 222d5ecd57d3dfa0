"""Alert rules: defaults from the original environment variables, custom rules from the config file, and
an invalid rule file refused with the line and the problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from aggregator import catalog
from aggregator.config import ConfigError, load_config
from aggregator.model import RunContext
from aggregator.store import Store
from alerting.rules import (
    Rule,
    RuleError,
    Shown,
    check_template,
    default_rules,
    load_rules,
    locate_rules,
    parse_duration,
    render_message,
)
from alerting.stage import evaluate

GOOD = """\
[run]
window_seconds = 60

[[alerting.rules]]
name = "checkout_p99"
metric = "apm.request.duration.p99"
op = ">="
threshold = 1500
span = "10m"
for = "3m"
keep_firing_for = "2m"
group_by = ["route", "method"]
match = { service = "shop" }
severity = "critical"
min_samples = 50
no_data = "keep"
repeat = "1h"
message = "{route} p99 {value} (raw {value:.1f})"
description = "checkout must stay fast"

[[alerting.rules]]
name = "api_latency_p99"
enabled = false
"""


def load(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> list[Rule]:
    f = tmp_path / "logapm.toml"
    f.write_text(text, encoding="utf-8")
    return load_rules(load_config(f, environ=env or {}))


def test_defaults_come_from_the_original_variables() -> None:
    """Each design default is there with its variable's value; the catalog knows every default metric."""
    env = {"API_P95_THRESHOLD_MS": "350", "API_P99_THRESHOLD_MS": "900", "SLOW_QUERY_THRESHOLD_MS": "80",
           "DB_POOL_UTILIZATION_THRESHOLD": "0.7", "API_ERROR_RATE_THRESHOLD": "0.02",
           "EXTERNAL_P95_THRESHOLD_MS": "1500", "CACHE_MISS_RATE_THRESHOLD": "0.3",
           "CELERY_QUEUE_DEPTH_THRESHOLD": "250", "ALERT_FOR_SECONDS": "180"}
    rules = {r.name: r for r in default_rules(load_config(environ=env))}
    assert {n: (r.metric, r.op, r.threshold) for n, r in rules.items()} == {
        "api_latency_p95": ("apm.request.duration.p95", ">", 350.0),
        "api_latency_p99": ("apm.request.duration.p99", ">", 900.0),
        "api_error_rate": ("apm.request.error_rate", ">", 0.02),
        "slow_queries": ("apm.db.query.duration.p95", ">", 80.0),
        "db_pool_utilization": ("apm.db.pool.utilization.max", ">", 0.7),
        "external_latency_p95": ("apm.external.duration.p95", ">", 1500.0),
        "cache_miss_rate": ("apm.cache.hit_rate", "<", 0.7),
        "celery_queue_depth": ("apm.task.queue.depth.max", ">", 250.0),
    }
    assert rules["api_latency_p95"].group_by == ("route",) and rules["api_latency_p95"].for_seconds == 180
    assert rules["api_latency_p95"].repeat_seconds == 4 * 3600 and rules["api_latency_p95"].span_seconds == 300
    for r in rules.values():
        assert catalog.family_of(r.metric)
        assert check_template(r.message) is None


def test_custom_rules_parse_and_override_defaults(tmp_path: Path) -> None:
    """Durations as strings, grouping, filter, no-data behaviour, template; enabled=false drops a default."""
    rules = {r.name: r for r in load(tmp_path, GOOD)}
    r = rules["checkout_p99"]
    assert (r.op, r.threshold, r.span_seconds, r.for_seconds, r.keep_firing_for_seconds, r.repeat_seconds) == \
        (">=", 1500.0, 600, 180, 120, 3600)
    assert r.group_by == ("route", "method") and r.match == (("service", "shop"),)
    assert (r.severity, r.min_samples, r.no_data, r.unit) == ("critical", 50, "keep", "ms")
    assert r.source.endswith("logapm.toml line 4")
    assert "api_latency_p99" not in rules and "api_latency_p95" in rules
    text = render_message(r.message, {"route": "api/x/", "value": Shown(1234.56, "ms")})
    assert text == "api/x/ p99 1,235 ms (raw 1234.6)"


BAD_CASES = [
    ('op = "=>"', "op '=>' is not one of"),
    ('threshold = "fast"', "threshold must be a finite number"),
    ('span = "5 minutes"', "not a duration"),
    ('span = "90s"', "whole number of windows"),
    ('severity = "page"', "severity 'page'"),
    ('no_data = "maybe"', "no_data 'maybe'"),
    ('group_by = "route, method"', None),  # a comma-separated string: valid
    ('tresholds = 5', "unknown key 'tresholds'"),
    ('message = "{value.__class__}"', "must be a plain name"),
    ('message = "{value!r}"', "conversions are not allowed"),
    ('min_samples = -1', "min_samples must be a whole number"),
    ('match = ["route"]', "match must be a table"),
]


@pytest.mark.parametrize("line,problem", BAD_CASES)
def test_invalid_rule_names_the_line(tmp_path: Path, line: str, problem: str | None) -> None:
    """Each kind of mistake is refused with the file, the line of the offending key and what is wrong."""
    key = line.split(" ")[0]
    body = [f"{k} = {v}" for k, v in (("name", '"r1"'), ("metric", '"apm.request.duration.p95"'), ("op", '">"'),
                                      ("threshold", "100")) if k != key]
    lines = ["# rules", "", "[[alerting.rules]]", *body[:2], line, *body[2:]]
    text = "\n".join(lines) + "\n"
    if problem is None:
        load(tmp_path, text)
        return
    with pytest.raises(RuleError) as err:
        load(tmp_path, text)
    msg = str(err.value)
    assert f"logapm.toml line {lines.index(line) + 1}:" in msg and "rule 'r1'" in msg and problem in msg, msg


def test_missing_key_unknown_metric_and_duplicates(tmp_path: Path) -> None:
    """A missing key points at the rule's header line; an unknown metric at its line; a duplicate name at
    the second definition, naming the first."""
    with pytest.raises(RuleError, match=r"line 5: rule 'x': missing required key 'threshold'"):
        load(tmp_path, '[run]\nwindow_seconds = 60\n\n\n[[alerting.rules]]\nname = "x"\nmetric = "apm.request.count"\nop = ">"\n')
    with pytest.raises(RuleError, match=r"line 3: rule 'x': unknown metric 'apm.request.latency'"):
        load(tmp_path, '[[alerting.rules]]\nname = "x"\nmetric = "apm.request.latency"\nop = ">"\nthreshold = 1\n')
    rule = 'name = "x"\nmetric = "apm.request.count"\nop = ">"\nthreshold = 1\n'
    with pytest.raises(RuleError, match=r"line 7: rule 'x' is defined twice \(first at .*line 1\)"):
        load(tmp_path, f"[[alerting.rules]]\n{rule}\n[[alerting.rules]]\n{rule}")


def test_inline_rules_are_located_at_their_key(tmp_path: Path) -> None:
    """Rules written as an inline array are located at the ``rules`` line."""
    text = '[alerting]\napi_p95_ms = 400\nrules = [{ name = "y", metric = "apm.request.count", op = "!", threshold = 1 }]\n'
    with pytest.raises(RuleError, match=r"line 3: rule 'y': op '!'"):
        load(tmp_path, text)
    assert [loc.line for loc in locate_rules(text)] == [3]


def test_toml_syntax_error_names_the_line(tmp_path: Path) -> None:
    """A file that is not TOML at all is refused by the config loader with the line."""
    f = tmp_path / "c.toml"
    f.write_text('[[alerting.rules]]\nname = "x"\nop = >\n')
    with pytest.raises(ConfigError, match="line 3"):
        load_config(f, environ={})


def test_stage_reports_a_bad_rule_file_instead_of_raising(tmp_path: Path) -> None:
    """A run with a bad rule file finishes its other stages: alerting reports the error, not ok."""
    f = tmp_path / "c.toml"
    f.write_text('[[alerting.rules]]\nname = "x"\nmetric = "apm.request.count"\nop = "~"\nthreshold = 1\n')
    store = Store(tmp_path / "s.db")
    try:
        result = evaluate(RunContext(store=store, config=load_config(f, environ={}), now=0.0))
    finally:
        store.close()
    assert not result.ok and "line 4" in result.lines[0]


def test_durations() -> None:
    """Seconds or compact strings; nonsense refused."""
    assert [parse_duration(v) for v in (0, 90, "90s", "5m", "1h30m", "2d")] == [0, 90, 90, 300, 5400, 172800]
    for bad in ("", "5 min", -1, True, 1.5):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_lines_inside_multiline_strings_are_not_keys(tmp_path: Path) -> None:
    """A multi-line description that looks like `key = value` does not shift the reported line."""
    text = ('[[alerting.rules]]\nname = "m"\nmetric = "apm.request.count"\nthreshold = 1\n'
            'description = """\nsevere = "no"\nop = ">"\n"""\nop = "?"\n')
    with pytest.raises(RuleError, match=r"line 9: rule 'm': op '\?'"):
        load(tmp_path, text)
