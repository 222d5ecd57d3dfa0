"""fluent.conf (and fluent-forward.conf), read with a parser of Fluent Bit's classic format: it tails the file
the logging configuration writes, with offsets, rotation, filesystem buffering and unlimited retries, and
what its file output writes is what the aggregator reads and the parsers accept, event for event."""

from __future__ import annotations

import fnmatch
import json
from pathlib import Path
from typing import Any

import pytest
from _b_fluentbit_conf import ConfError, FluentBitConf, parse, tag_matches
from _b_logging import events_logging

from logging_apm.emit import emit
from logging_apm.testing import capture_events

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {
        "APM_LOG_FILE": str(tmp_path / "app" / "events.log"),
        "APM_SHIP_DIR": str(tmp_path / "shipped"),
        "FLB_STATE_DIR": str(tmp_path / "flb"),
        "LOGAPM_INPUTS": str(tmp_path / "shipped"),
        "APM_FORWARD_HOST": "central.internal",
        "APM_FORWARD_PORT": "24224",
    }


def _tail(conf: FluentBitConf) -> Any:
    (tail,) = conf.plugin("INPUT", "tail")
    return tail


def test_fluent_conf_tails_the_file_the_logging_config_writes(env: dict[str, str]) -> None:
    """The tail input's Path (from APM_LOG_FILE) matches the file build_logging() writes under the same
    environment; offsets in a DB, rotation wait, head read, filesystem buffering on the input and a
    storage.path in [SERVICE]."""
    from logging_apm.logging_config import build_logging

    conf = parse(ROOT / "fluent.conf", env)
    tail = _tail(conf)
    written = build_logging(environ=env)["handlers"]["logging_apm"]["filename"]
    assert fnmatch.fnmatch(written, tail["path"]) and written == env["APM_LOG_FILE"]
    assert tail["db"].startswith(env["FLB_STATE_DIR"]) and tail["db.locking"] == "true"
    assert int(tail["rotate_wait"]) >= 5 and tail["read_from_head"].lower() == "on"
    assert tail["storage.type"] == "filesystem"
    assert tail.get("parser") is None  # lines travel untouched in `log`
    (service,) = conf.of("SERVICE")
    assert service["storage.path"].startswith(env["FLB_STATE_DIR"])


def test_fluent_conf_output_is_where_the_aggregator_reads(env: dict[str, str]) -> None:
    """The file output takes the tail's tag, retries without limit, and writes into a path that the
    aggregator's configured inputs (LOGAPM_INPUTS) cover."""
    from aggregator.config import load_config

    conf = parse(ROOT / "fluent.conf", env)
    tail = _tail(conf)
    (out,) = conf.plugin("OUTPUT", "file")
    assert tag_matches(out["match"], tail["tag"])
    assert out["retry_limit"] == "no_limits"
    assert out["format"] in ("plain", "out_file")
    written = Path(out["path"]) / out["file"]
    inputs = load_config(environ=env)["run.inputs"]
    assert any(written == Path(i) or Path(i) in written.parents or fnmatch.fnmatch(str(written), i)
               for i in inputs), (written, inputs)


def _fluent_bit_file_output(lines: list[bytes], fmt: str, tag: str, ascii_only: bool) -> bytes:
    """What Fluent Bit's file output writes for tail records without a parser ({"log": line})."""
    out = []
    for i, line in enumerate(lines):
        record = json.dumps({"log": line.decode()}, ensure_ascii=ascii_only, separators=(",", ":"))
        if fmt == "plain":
            out.append(record)
        else:  # out_file: `tag: [seconds.nanoseconds, {record}]`
            out.append(f"{tag}: [{1_764_000_000 + i}.{123456789:09d}, {record}]")
    return ("\n".join(out) + "\n").encode()


@pytest.mark.parametrize("fmt", ["plain", "out_file"])
@pytest.mark.parametrize("ascii_only", [True, False])
def test_what_fluent_bit_writes_is_what_the_parsers_read(
    env: dict[str, str], tmp_path: Path, fmt: str, ascii_only: bool
) -> None:
    """Events written by the real logging configuration, carried as Fluent Bit carries them (tail without a
    parser, file output in plain or default format), parse back to the same events; the app's ordinary log
    lines in the same file are skipped, nothing is invalid."""
    from logging_apm.logging_config import build_logging
    from parsers import LineParser

    conf = parse(ROOT / "fluent.conf", env)
    tag = _tail(conf)["tag"]
    Path(env["APM_LOG_FILE"]).parent.mkdir(parents=True)
    with events_logging(build_logging(environ=env)), capture_events() as sent:
        emit("request", 12.5, "success", {"http.request.method": "GET",
                                           "http.route": "api/stories/<slug:título>/",
                                           "http.response.status_code": 200})
        emit("task", 40.0, "failure", {"task.name": "send \"quoted\" mail", "task.state": "failure",
                                        "error.type": "ValueError"})
        emit("metric", None, "success", {"metric.name": "signups", "metric.type": "count",
                                         "metric.value": 3, "metric.tags": {"plan": "frëe"}})
    app_file = Path(env["APM_LOG_FILE"])
    lines = app_file.read_bytes().splitlines()
    assert len(lines) == 3
    lines.insert(1, b'{"level":"info","message":"an ordinary log line"}')

    data = _fluent_bit_file_output(lines, "plain" if fmt == "plain" else "out_file", tag, ascii_only)
    result = LineParser().parse(data, source="shipped/events.log", base_offset=0)
    assert result.lines == 4 and result.skipped == 1
    assert sum(result.invalid.values()) == 0, result.dead_letters
    assert len(result.events) == 3
    from parsers.event import JSON_NAMES

    parsed = [{name: getattr(e, attr) for attr, name in JSON_NAMES.items() if getattr(e, attr) is not None}
              for e in result.events]
    assert parsed == [dict(e) for e in sent]  # field for field, unicode and quotes included


def test_forward_alternative_conf(env: dict[str, str]) -> None:
    """fluent-forward.conf tails the same file and forwards with acknowledgements and unlimited retries."""
    conf = parse(ROOT / "fluent-forward.conf", env)
    assert _tail(conf)["path"] == env["APM_LOG_FILE"]
    (fwd,) = conf.plugin("OUTPUT", "forward")
    assert fwd["host"] == "central.internal" and fwd["port"] == "24224"
    assert fwd["require_ack_response"] == "true" and fwd["retry_limit"] == "no_limits"
    assert tag_matches(fwd["match"], _tail(conf)["tag"])


def test_conf_parser_refuses_malformed_files(tmp_path: Path) -> None:
    """The classic-format reader is strict where Fluent Bit is: entries outside a section, unindented or
    inconsistently indented entries, keys without values; @SET wins over the environment."""
    bad = {
        "outside": "    Name tail\n",
        "unindented": "[INPUT]\nName tail\n",
        "inconsistent": "[INPUT]\n    Name tail\n  Path x\n",
        "novalue": "[INPUT]\n    Name\n",
    }
    for name, text in bad.items():
        p = tmp_path / f"{name}.conf"
        p.write_text(text)
        with pytest.raises(ConfError):
            parse(p, {})
    good = tmp_path / "good.conf"
    good.write_text("@SET X=fromset\n[INPUT]\n    Name tail\n    Path ${X}/${Y}\n")
    assert _tail(parse(good, {"X": "fromenv", "Y": "y"}))["path"] == "fromset/y"
