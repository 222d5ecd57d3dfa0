"""Monitors and dashboards as code: the local alert rules and a standard dashboard, rendered for Datadog
and New Relic, exported as JSON or applied idempotently through their APIs.

``common`` holds what is vendor-neutral (the dashboard's panels, the result of an apply); ``datadog`` and
``newrelic`` render and apply. Every object we manage carries a marker (Datadog tag ``managed-by:logapm``,
New Relic policy and dashboard names) so an apply finds what it made before and changes only what differs:
running it twice changes nothing the second time.
"""

from alerting.vendor.common import ApplyReport, VendorError

VENDORS = ("datadog", "newrelic")

__all__ = ["VENDORS", "ApplyReport", "VendorError"]
