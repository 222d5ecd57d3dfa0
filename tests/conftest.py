"""Shared fixtures: the conformance data in ../shared, and the real local services.

Under ``CI=true`` a missing service or missing ``../shared`` is a failure, never a skip: CI must prove the
tests that need them ran. On a developer's fresh clone without them, those tests skip with the reason.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}

SERVICES = {
    "postgres": ("127.0.0.1", 5432),
    "redis": ("127.0.0.1", 6379),
    "rabbitmq": ("127.0.0.1", 5672),
}


def unavailable(reason: str) -> None:
    """Skip locally, fail under CI."""
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: this must run, not skip)")
    pytest.skip(reason)


def service_up(name: str) -> bool:
    host, port = SERVICES[name]
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def require_service(name: str) -> tuple[str, int]:
    if not service_up(name):
        unavailable(f"{name} is not reachable at {SERVICES[name][0]}:{SERVICES[name][1]}")
    return SERVICES[name]


@pytest.fixture(scope="session")
def skip_or_fail() -> Callable[[str], None]:
    """``unavailable`` for test modules, which cannot import this conftest by name (a folder's own conftest
    shadows it in a full run)."""
    return unavailable


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        unavailable(f"{SHARED} is not there (a fresh clone has no ../shared)")
    return SHARED


@pytest.fixture(scope="session")
def postgres() -> tuple[str, int]:
    return require_service("postgres")


@pytest.fixture(scope="session")
def redis_server() -> tuple[str, int]:
    return require_service("redis")


@pytest.fixture(scope="session")
def rabbitmq() -> tuple[str, int]:
    return require_service("rabbitmq")
