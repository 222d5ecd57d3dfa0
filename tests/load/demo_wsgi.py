"""WSGI entry point for the load test: the demo app (aggregator/demo) configured once in gunicorn's master
(``--preload``), its payments stand-in running there, writing JSON lines to ``LOAD_LOG``."""

from __future__ import annotations

import os
from pathlib import Path

from django.core.wsgi import get_wsgi_application

from aggregator.demo import app as demo_app
from aggregator.demo.standin import PaymentsStandIn
from logging_apm import http

_payments = PaymentsStandIn(seed=3).start()
_dir = Path(os.environ["LOAD_DIR"])
demo_app.start_app(log_path=_dir / "app.log", db_path=_dir / "demo.sqlite3", seed=3, scenario={
    "incident": (0.0, 0.0), "search_ms": 5.0, "search_incident_ms": 5.0, "payments_url": _payments.url,
    "export_failure_rate": 0.3, "cache_seconds": 600, "celery": False,
})
http.install(services={_payments.host_port: "payments"})
application = get_wsgi_application()
