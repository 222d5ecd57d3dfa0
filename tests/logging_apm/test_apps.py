"""The app config installs the optional instrumentations as configured, each one switchable."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import django
from django.conf import settings
settings.configure(
    INSTALLED_APPS=["logging_apm"],
    DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
    LOGGING_APM=%(options)s,
)
django.setup()
from logging_apm import aws, celery, http, samplers
print("http", http.installed())
print("aws", aws.installed())
print("celery", celery.installed())
print("sampler", samplers._background is not None)
"""


def _run(options: str, **env: str) -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("APM_")}
    environ.update(env, PYTHONPATH=str(ROOT))
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT % {"options": options}],
        capture_output=True, text=True, env=environ, timeout=120, check=True,
    ).stdout
    return dict(line.split(" ", 1) for line in out.strip().splitlines())


def test_optional_instrumentations_are_on_by_default() -> None:
    """With the app installed and nothing said, outgoing HTTP, boto3 and Celery are instrumented."""
    assert _run("{}") == {"http": "True", "aws": "True", "celery": "True", "sampler": "False"}


@pytest.mark.parametrize("how", ["settings", "env"])
@pytest.mark.parametrize("part", ["http", "aws", "celery"])
def test_each_optional_instrumentation_can_be_switched_off(how: str, part: str) -> None:
    """instrument_<part> in LOGGING_APM, or APM_INSTRUMENT_<PART>, turns that one off and only that one
    (switched one at a time, so that a switch read for the wrong part would fail)."""
    if how == "settings":
        got = _run(f'{{"instrument_{part}": False}}')
    else:
        spelling = {"http": "false", "aws": "0", "celery": "no"}[part]
        got = _run("{}", **{f"APM_INSTRUMENT_{part.upper()}": spelling})
    assert got == {"http": "True", "aws": "True", "celery": "True", "sampler": "False", part: "False"}


def test_background_sampler_starts_when_asked() -> None:
    """sample_every starts the in-process pool/queue sampler thread."""
    assert _run('{"sample_every": 30}')["sampler"] == "True"


def test_disabled_installs_nothing() -> None:
    """APM_ENABLED=false: nothing is installed at all."""
    got = _run("{}", APM_ENABLED="false")
    assert got == {"http": "False", "aws": "False", "celery": "False", "sampler": "False"}
