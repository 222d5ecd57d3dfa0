"""boto3/botocore calls timed through botocore's events, against moto running as a real local server."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import boto3
import botocore.exceptions
import pytest

from logging_apm import aws, tracing
from logging_apm.testing import capture_events


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def session(monkeypatch: pytest.MonkeyPatch) -> boto3.Session:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    return boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1")


@pytest.fixture
def installed() -> Iterator[None]:
    aws.install()
    yield
    aws.uninstall()


def test_s3_operations_are_timed(moto_url: str, session: boto3.Session, installed: None) -> None:
    """S3 calls give one event each: peer.service s3, the AWS operation name, status, server, and the trace."""
    s3 = session.client("s3", endpoint_url=moto_url)
    with capture_events() as events, tracing.start_span() as span:
        s3.create_bucket(Bucket="media")
        s3.put_object(Bucket="media", Key="a.txt", Body=b"hello")
        assert s3.get_object(Bucket="media", Key="a.txt")["Body"].read() == b"hello"
    assert [e["external.operation"] for e in events] == ["CreateBucket", "PutObject", "GetObject"]
    for e in events:
        assert e["peer.service"] == "s3" and e["outcome"] == "success"
        assert e["http.response.status_code"] == 200 and e["server.address"] == "127.0.0.1"
        assert e["trace_id"] == span.trace_id and e["parent_span_id"] == span.span_id


def test_s3_error_response_is_a_failure(moto_url: str, session: boto3.Session, installed: None) -> None:
    """A missing key (404 ClientError) is a failure event, and the app still gets the ClientError."""
    s3 = session.client("s3", endpoint_url=moto_url)
    s3.create_bucket(Bucket="err")
    with capture_events() as events:
        with pytest.raises(botocore.exceptions.ClientError):
            s3.get_object(Bucket="err", Key="missing")
    (event,) = events
    assert event["outcome"] == "failure" and event["http.response.status_code"] == 404


def test_rekognition_detect_labels(moto_url: str, session: boto3.Session, installed: None) -> None:
    """Rekognition (moto answers DetectLabels) is peer.service rekognition, operation DetectLabels."""
    rek = session.client("rekognition", endpoint_url=moto_url)
    with capture_events() as events:
        rek.detect_labels(Image={"S3Object": {"Bucket": "media", "Name": "a.jpg"}})
    (event,) = events
    assert (event["peer.service"], event["external.operation"]) == ("rekognition", "DetectLabels")


def test_connection_error_is_a_failure(session: boto3.Session, installed: None) -> None:
    """An endpoint that refuses connections gives a failure event (after-call-error) with the error type."""
    from botocore.config import Config

    s3 = session.client("s3", endpoint_url=f"http://127.0.0.1:{_free_port()}",
                        config=Config(retries={"max_attempts": 1}, connect_timeout=2))
    with capture_events() as events:
        with pytest.raises(botocore.exceptions.EndpointConnectionError):
            s3.list_buckets()
    (event,) = events
    assert event["outcome"] == "failure" and event["peer.service"] == "s3"
    assert event["external.operation"] == "ListBuckets" and event["error.type"] == "EndpointConnectionError"


def test_install_twice_uninstall_twice(moto_url: str, session: boto3.Session) -> None:
    """Installing twice gives one event per call; after uninstall (twice) no events, even on a client made
    while installed; a client made before install can be added with instrument_client."""
    early = session.client("s3", endpoint_url=moto_url)
    aws.install()
    aws.install()
    try:
        s3 = session.client("s3", endpoint_url=moto_url)
        aws.instrument_client(early)
        aws.instrument_client(early)
        with capture_events() as events:
            s3.list_buckets()
            early.list_buckets()
        assert len(events) == 2
    finally:
        aws.uninstall()
        aws.uninstall()
    with capture_events() as events:
        s3.list_buckets()
        session.client("s3", endpoint_url=moto_url).list_buckets()
    assert events == []
