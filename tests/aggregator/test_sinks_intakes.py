"""The local intakes are as strict as the vendors' documented contract: a sink test that passes against
them would not be passing against a lax stand-in."""

from __future__ import annotations

import gzip
import json
import time
import zlib
from pathlib import Path

import pytest
import requests
from intakes import DatadogIntake, Fail, NewRelicIntake, make_cert
from intakes.kit import DD_APP, DD_KEY, NR_LICENSE, unset_proxies


@pytest.fixture(autouse=True)
def _no_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    unset_proxies(monkeypatch)


def _series(metric: str = "apm.x", ts: float | None = None, tags: list[str] | None = None) -> dict[str, object]:
    return {"metric": metric, "points": [[int(ts or time.time()), 1.0]], "type": "gauge",
            "tags": tags or ["route:a/"], "host": "h"}


def _dd_post(intake: DatadogIntake, body: bytes, *, key: str = DD_KEY, encoding: str | None = "deflate"
             ) -> requests.Response:
    headers = {"DD-API-KEY": key, "Content-Type": "application/json"}
    if encoding:
        headers["Content-Encoding"] = encoding
    return requests.post(f"{intake.url}/api/v1/series", data=body, headers=headers, timeout=30)


def test_datadog_intake_enforces_the_series_contract() -> None:
    """Key (403), size as received (413) and decompressed (413), names and tags (400 with errors), age
    (202, not stored), deflate and gzip accepted, /api/v1/validate answers."""
    with DatadogIntake(DD_KEY, DD_APP) as dd:
        assert isinstance(dd, DatadogIntake)
        ok = json.dumps({"series": [_series()]}).encode()
        assert _dd_post(dd, zlib.compress(ok)).json() == {"status": "ok"}
        assert _dd_post(dd, gzip.compress(ok), encoding="gzip").status_code == 202
        assert _dd_post(dd, zlib.compress(ok), key="wrong").status_code == 403
        bad_name = json.dumps({"series": [_series("9bad-name")]}).encode()
        r = _dd_post(dd, zlib.compress(bad_name))
        assert r.status_code == 400 and "invalid metric name" in r.json()["errors"][0]
        bad_tag = json.dumps({"series": [_series(tags=["Route:A"])]}).encode()
        assert _dd_post(dd, zlib.compress(bad_tag)).status_code == 400
        assert _dd_post(dd, b"x" * 3_200_001, encoding=None).status_code == 413
        bomb = zlib.compress(b" " * 63_000_000, 9)  # small on the wire, over 62,914,560 decompressed
        assert len(bomb) < 3_200_000 and _dd_post(dd, bomb).status_code == 413
        old = json.dumps({"series": [_series("apm.old", time.time() - 3700)]}).encode()
        assert _dd_post(dd, zlib.compress(old)).status_code == 202
        assert dd.dropped_for_age == 1 and [s["metric"] for s in dd.series] == ["apm.x", "apm.x"]
        r = requests.get(f"{dd.url}/api/v1/validate", headers={"DD-API-KEY": DD_KEY}, timeout=5)
        assert r.json() == {"valid": True}
        dd.script("/api/v1/series", Fail(429, retry_after="7"))
        r = _dd_post(dd, zlib.compress(ok))
        assert r.status_code == 429 and r.headers["Retry-After"] == "7" and "errors" in r.json()


def test_newrelic_intake_enforces_the_metric_contract(tmp_path: Path) -> None:
    """TLS only with the test's CA; Api-Key (403); gzip required; 10^6 bytes (413); count needs
    interval.ms and summary needs count/sum/min/max (400); 100 attributes at most; old points not stored."""
    cert = make_cert(tmp_path)
    with NewRelicIntake(NR_LICENSE, tls=cert) as nr:
        assert isinstance(nr, NewRelicIntake)
        url = f"{nr.url}/metric/v1"
        now_ms = int(time.time() * 1000)

        def post(items: list[dict[str, object]], *, key: str = NR_LICENSE, gz: bool = True,
                 raw: bytes | None = None) -> requests.Response:
            body = raw if raw is not None else json.dumps([{"metrics": items}]).encode()
            headers = {"Api-Key": key, "Content-Type": "application/json"}
            if gz:
                headers["Content-Encoding"] = "gzip"
                body = gzip.compress(body) if raw is None else body
            return requests.post(url, data=body, headers=headers, verify=str(cert.cert_file), timeout=30)

        gauge = {"name": "apm.x", "value": 1.0, "timestamp": now_ms, "attributes": {"a": "b"}}
        assert post([gauge]).status_code == 202
        with pytest.raises(requests.exceptions.SSLError):
            requests.post(url, data=b"", timeout=5)  # the system's CAs do not know the test's certificate
        assert post([gauge], key="wrong").status_code == 403
        assert post([gauge], gz=False).status_code == 400
        assert post([], raw=b"x" * 1_000_001).status_code == 413
        assert post([{**gauge, "type": "count"}]).status_code == 400
        assert post([{**gauge, "type": "summary", "interval.ms": 60000, "value": {"count": 1}}]).status_code == 400
        assert post([{**gauge, "attributes": {f"k{i}": "v" for i in range(101)}}]).status_code == 400
        assert post([{**gauge, "timestamp": now_ms - 49 * 3600_000}]).status_code == 202
        assert nr.dropped_for_age == 1 and len(nr.metrics) == 1
