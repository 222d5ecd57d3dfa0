"""The sinks against the local intakes: the real SDKs on the wire, vendor rules, size limits, OpenMetrics."""

from __future__ import annotations

import base64
import itertools
import json
import random
import zlib
from pathlib import Path

import pytest
from intakes import DatadogIntake, NewRelicIntake, kit
from intakes.kit import DD_APP, DD_KEY, NR_LICENSE

from aggregator.model import MetricPoint, make_tags
from aggregator.sinks import build_sinks, local_only_note, sink_names
from aggregator.sinks.base import RequestLimits, SummaryPoint
from aggregator.sinks.chunking import plan_requests
from aggregator.sinks.datadog import DatadogSink, api_host_for
from aggregator.sinks.newrelic import NewRelicSink, metric_host_for
from aggregator.sinks.openmetrics import OpenMetricsSink

# The intakes, as fixtures (tests/intakes/kit.py); proxies unset for every test.
dd, nr, no_proxies = kit.dd, kit.nr, kit.no_proxies
pytestmark = pytest.mark.usefixtures("no_proxies")


def _dd_sink(intake: DatadogIntake, **kw: object) -> DatadogSink:
    return DatadogSink(api_key=DD_KEY, app_key=DD_APP, api_host=intake.url, host_name="agg-1", **kw)  # type: ignore[arg-type]


def _nr_sink(intake: NewRelicIntake, **kw: object) -> NewRelicSink:
    return NewRelicSink(license_key=NR_LICENSE, host="127.0.0.1", port=intake.port,
                        ca_certs=str(intake.tls.cert_file), common={"service.name": "svc"}, **kw)  # type: ignore[arg-type]


def _now_minute() -> int:
    import time

    return int(time.time() // 60 * 60)


def test_datadog_sink_sends_series_through_the_sdk(dd: DatadogIntake) -> None:
    """Gauges and counts reach the v1 series intake via api.Metric.send: key header, deflate body, host
    name, count interval, tags as key:value."""
    ts = _now_minute()
    tags = make_tags(route="api/stories/", method="GET")
    report = _dd_sink(dd).send([
        MetricPoint("apm.request.duration.p95", tags, ts, 182.5),
        MetricPoint("apm.request.count", tags, ts, 42.0, "count", 60),
    ])
    assert report.sent == 2 and report.requests == 1
    (req,) = dd.requests_to("/api/v1/series")
    assert req.status == 202 and req.headers["dd-api-key"] == DD_KEY
    assert req.headers["content-encoding"] == "deflate" and "datadogpy" in req.headers["user-agent"]
    by_name = {s["metric"]: s for s in dd.series}
    assert by_name["apm.request.duration.p95"]["value"] == 182.5
    assert by_name["apm.request.count"]["type"] == "count" and by_name["apm.request.count"]["interval"] == 60
    assert sorted(by_name["apm.request.count"]["tags"]) == ["method:get", "route:api/stories/"]
    assert {s["host"] for s in dd.series} == {"agg-1"}


def test_endpoints_follow_vendor_conventions() -> None:
    """DD_SITE gives api.<site>, DATADOG_HOST overrides it; New Relic's region picks the US or EU host and
    NEW_RELIC_METRIC_HOST overrides it (host or host:port)."""
    assert api_host_for("datadoghq.eu", None) == "https://api.datadoghq.eu"
    assert api_host_for("us5.datadoghq.com", None) == "https://api.us5.datadoghq.com"
    assert api_host_for(None, None) == "https://api.datadoghq.com"
    assert api_host_for("datadoghq.eu", "http://127.0.0.1:9/") == "http://127.0.0.1:9"
    assert metric_host_for("us", None) == ("metric-api.newrelic.com", 443)
    assert metric_host_for("EU", None) == ("metric-api.eu.newrelic.com", 443)
    assert metric_host_for("eu", "127.0.0.1:8443") == ("127.0.0.1", 8443)
    assert metric_host_for("us", "https://gov-metric-api.newrelic.com") == ("gov-metric-api.newrelic.com", 443)
    with pytest.raises(ValueError, match="NEW_RELIC_REGION"):
        metric_host_for("mars", None)


def test_newrelic_sink_gauges_counts_summaries_over_https(nr: NewRelicIntake) -> None:
    """MetricClient.send_batch over TLS with the test's own CA: Api-Key, gzip, gauge without type, count
    with interval.ms, summary with count/sum/min/max, timestamps in ms at the window start."""
    ts = _now_minute()
    tags = make_tags(route="api/stories/", method="GET")
    sink = _nr_sink(nr)
    prepared = sink.prepare([
        MetricPoint("apm.request.duration.p95", tags, ts, 182.5),
        MetricPoint("apm.request.count", tags, ts, 42.0, "count", 60),
        SummaryPoint("apm.request.duration", tags, ts, 42, 4200.0, 3.5, 900.0, 60),
    ])
    sink.send_items(prepared.items)
    sink.close()
    (req,) = nr.requests_to("/metric/v1")
    assert req.status == 202 and req.headers["api-key"] == NR_LICENSE
    assert req.headers["content-encoding"] == "gzip" and "logging-apm/" in req.headers["user-agent"]
    by = {m["name"]: m for m in nr.metrics}
    assert "type" not in by["apm.request.duration.p95"] and by["apm.request.duration.p95"]["timestamp"] == ts * 1000
    assert by["apm.request.count"]["type"] == "count" and by["apm.request.count"]["interval.ms"] == 60000
    assert by["apm.request.duration"]["value"] == {"count": 42, "sum": 4200.0, "min": 3.5, "max": 900.0}
    assert by["apm.request.duration"]["attributes"] == {"service.name": "svc", "method": "GET",
                                                         "route": "api/stories/"}


def test_datadog_names_and_tags_normalised_and_counted(dd: DatadogIntake) -> None:
    """Names and tags that break Datadog's rules are fixed before sending (the intake refuses invalid ones),
    each fix is counted, and values Datadog cannot hold are not sent."""
    ts = _now_minute()
    sink = _dd_sink(dd)
    points = [
        MetricPoint("apm.business.Sign-ups!", make_tags(Plan="Gold Tier"), ts, 3.0),
        MetricPoint("9apm.x", make_tags(route="api/<int:id>/" + "x" * 300), ts, 1.0),
        MetricPoint("apm.nan", (), ts, float("nan")),
        MetricPoint("apm.huge", (), ts, 1e39),
    ]
    prepared = sink.prepare(points)
    assert prepared.dropped == {"non_finite": 1, "out_of_range": 1}
    assert prepared.cut["metric_name_normalised"] == 2
    assert prepared.cut["tag_normalised"] == 2 and prepared.cut["tag_truncated"] == 1
    sink.send_items(prepared.items)
    names = {s["metric"]: s["tags"] for s in dd.series}
    assert names["apm.business.Sign_ups_"] == ["plan:gold_tier"]
    (tag,) = names["apm.x"]
    assert tag.startswith("route:api/_int:id_/") and len(tag) == 200


def test_newrelic_attribute_limits_enforced_and_counted(nr: NewRelicIntake) -> None:
    """More than 100 attributes, over-long keys and values are cut to New Relic's limits (the intake
    refuses anything beyond them), and the cuts are counted."""
    ts = _now_minute()
    sink = _nr_sink(nr)
    tags = make_tags({f"k{i:03d}": "v" for i in range(120)}, long="x" * 5000, **{"y" * 300: "z"})
    prepared = sink.prepare([MetricPoint("apm.business.x", tags, ts, 1.0)])
    assert prepared.cut["attributes_removed"] == 122 - 99
    sink.send_items(prepared.items)
    (m,) = nr.metrics
    assert len(m["attributes"]) == 100


def _random_tag(rng: random.Random, n: int) -> str:
    """Incompressible-ish tag text (base32: 5 bits per character), so payloads are big on the wire."""
    return base64.b32encode(rng.randbytes(n)).decode().lower()[:n]


def test_datadog_batches_chunked_below_the_compressed_limit(dd: DatadogIntake) -> None:
    """A batch whose compressed payload is well over 3.2 MB goes out in several requests, each within the
    limit (no 413), and every point arrives once."""
    rng = random.Random(7)
    ts = _now_minute()
    points = [MetricPoint("apm.business.orders", make_tags(id=_random_tag(rng, 150)), ts, float(i))
              for i in range(36_000)]
    sink = _dd_sink(dd, max_items=0)
    prepared = sink.prepare(points)
    wire, _raw = sink.sizes(prepared.items)
    assert wire > 3_200_000  # the test is only worth something if one request would be too big
    report = sink.send(points)
    reqs = dd.requests_to("/api/v1/series")
    assert len(reqs) >= 2 and report.requests == len(reqs)
    assert all(r.status == 202 and r.wire_bytes <= 3_200_000 for r in reqs)
    assert len(dd.series) == len(points)
    assert len({s["tags"][0] for s in dd.series}) == len(points)


def test_newrelic_batches_chunked_below_one_megabyte(nr: NewRelicIntake) -> None:
    """New Relic's 10^6-byte wire limit: a larger batch is cut into requests that each fit."""
    rng = random.Random(8)
    ts = _now_minute()
    points = [MetricPoint("apm.business.orders", make_tags(id=_random_tag(rng, 120)), ts, float(i))
              for i in range(14_000)]
    sink = _nr_sink(nr, max_items=0)
    assert sink.sizes(sink.prepare(points).items)[0] > 1_000_000
    sink.send(points)
    reqs = nr.requests_to("/metric/v1")
    assert len(reqs) >= 2 and all(r.status == 202 and r.wire_bytes <= 1_000_000 for r in reqs)
    assert len(nr.metrics) == len(points)


def test_plan_requests_respects_limits_and_keeps_order() -> None:
    """The planner's ranges cover the input in order, each within the byte and count limits (exact sizes
    from the encoder), and an item too big alone is still planned alone."""
    items = [{"v": "x" * (10 + i % 50)} for i in range(500)] + [{"v": "y" * 5000}]

    def sizes(chunk):
        raw = json.dumps(list(chunk)).encode()
        return len(zlib.compress(raw)), len(raw)

    limits = RequestLimits(max_wire_bytes=400, max_raw_bytes=3000, max_items=60)
    ranges = list(plan_requests(items, sizes, lambda it: len(json.dumps(it)) + 2, limits))
    assert ranges[0][0] == 0 and ranges[-1][1] == len(items)
    assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))
    for lo, hi in ranges[:-1]:
        wire, raw = sizes(items[lo:hi])
        assert wire <= 400 and raw < 3000 and hi - lo <= 60
    assert ranges[-1] == (500, 501)


def test_openmetrics_file_is_valid_atomic_and_never_goes_back(tmp_path: Path) -> None:
    """The textfile is valid OpenMetrics (# TYPE before samples, escaped labels, # EOF, no timestamps),
    leaves no temporary file, and a republished older window does not replace a newer value."""
    path = tmp_path / "logapm.prom"
    sink = OpenMetricsSink(path)
    tags = make_tags(route='api/"q"/\\x', method="GET")
    sink.send([MetricPoint("apm.request.duration.p95", tags, 120, 180.0),
               MetricPoint("apm.request.count", tags, 120, 5.0, "count")])
    sink.send([MetricPoint("apm.request.duration.p95", tags, 60, 999.0)])  # late, older window
    text = path.read_text()
    lines = text.splitlines()
    assert lines[-1] == "# EOF" and text.endswith("\n")
    assert "# TYPE apm_request_duration_p95 gauge" in lines
    sample = next(ln for ln in lines if ln.startswith("apm_request_duration_p95{"))
    assert sample == 'apm_request_duration_p95{method="GET",route="api/\\"q\\"/\\\\x"} 180.0'
    declared: set[str] = set()
    for ln in lines[:-1]:
        if ln.startswith("# TYPE "):
            declared.add(ln.split()[2])
        elif not ln.startswith("# HELP "):
            name = ln.split("{")[0].split(" ")[0]
            assert name in declared and len(ln.rsplit("} ", 1)[-1].split()) == 1  # value only, no timestamp
    assert sorted(p.name for p in tmp_path.iterdir()) == [".logapm.prom.state", "logapm.prom"]


def test_sink_names_and_local_note() -> None:
    """Lanes exist only for vendors with keys; with none the run says once that metrics stay local."""
    from aggregator.config import load_config

    none = load_config(environ={})
    assert sink_names(none) == [] and "metrics stay local" in (local_only_note(none) or "")
    half = load_config(environ={"APM_PROVIDER": "both", "DATADOG_API_KEY": "k"})
    assert sink_names(half) == ["datadog"]
    assert "NEW_RELIC_LICENSE_KEY is not set" in (local_only_note(half) or "")
    off = load_config(environ={"APM_PROVIDER": "datadog", "DATADOG_API_KEY": "k", "APM_ENABLED": "false",
                               "LOGAPM_OPENMETRICS_PATH": "/tmp/x.prom"})
    assert sink_names(off) == ["openmetrics"]
    assert [s.name for s in build_sinks(off)] == ["openmetrics"]
