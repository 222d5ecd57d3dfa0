"""The README's Django quick start works as printed, and its configuration table is complete."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

from logging_apm.conf import ENV_VARS
from logging_apm.testing import read_events

ROOT = Path(__file__).resolve().parents[2]


def _section(title: str) -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end != -1 else len(text)]


def quick_start_snippet() -> str:
    match = re.search(r"```python\n(.*?)```", _section("Django quick start"), re.S)
    assert match, "README's Django quick start has no ```python block"
    return match.group(1)


def test_quick_start_snippet_works_as_printed(tmp_path: Path) -> None:
    """A project whose settings are the snippet (plus only what any Django project has: a secret key and a
    URLconf) emits a valid request event for a request, to the file named by APM_LOG_FILE."""
    snippet = quick_start_snippet()
    (tmp_path / "quick_settings.py").write_text(
        'SECRET_KEY = "x"\nROOT_URLCONF = "quick_urls"\nALLOWED_HOSTS = ["*"]\n\n' + snippet)
    (tmp_path / "quick_urls.py").write_text(textwrap.dedent("""
        from django.http import HttpResponse
        from django.urls import path
        urlpatterns = [path("hello/<slug:name>/", lambda request, name: HttpResponse("hi"))]
    """))
    log = tmp_path / "events.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("APM_", "DJANGO"))}
    env.update(PYTHONPATH=os.pathsep.join([str(tmp_path), str(ROOT)]), APM_LOG_FILE=str(log),
               DJANGO_SETTINGS_MODULE="quick_settings", APM_SERVICE_NAME="quick")
    code = ("import django; django.setup()\n"
            "from django.test import Client\n"
            "assert Client().get('/hello/world/').status_code == 200\n")
    subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, check=True, timeout=120)
    [event] = read_events(log)
    assert event["apm.kind"] == "request" and event["http.route"] == "hello/<slug:name>/"
    assert event["service.name"] == "quick"


def test_configuration_table_lists_every_app_side_variable() -> None:
    """Every environment variable the app side reads (conf.ENV_VARS) is in the README with its default."""
    section = _section("Configuration (app side)")
    for var in ENV_VARS:
        assert f"| `{var.name}` | {var.default} |" in section, var.name
