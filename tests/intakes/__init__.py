"""Local stand-ins for the vendors' intakes, enforcing the documented wire contract (see
``../shared/vendor-apis.md`` and ``docs/sinks.md``): auth header, body shape, compression, size and age
limits, status codes, and failures scripted per request. They record what they accepted."""

from .base import Fail, HTTPIntake
from .datadog import DatadogIntake
from .newrelic import NerdGraphIntake, NewRelicIntake
from .tls import SelfSignedCert, make_cert

__all__ = ["DatadogIntake", "Fail", "HTTPIntake", "NerdGraphIntake", "NewRelicIntake", "SelfSignedCert",
           "make_cert"]
