"""The HTTP surface: Enterprise's Reporting API and the sidecar's own `/-/` endpoints.

`ROUTES` is the one routing table; `create_app` mounts it. Handlers read their
collaborators from the app through the typed keys below.
"""

from __future__ import annotations

from aiohttp import web

from sidecar.api.health import healthy, ready
from sidecar.api.keys import AUTHORIZER, CONFIG, GRAFANA, SERVICE, STORE
from sidecar.api.middleware import error_middleware, not_found
from sidecar.api.reports import send_report

# Enterprise's paths work with and without a trailing slash (its UI uses both).
ROUTES = [
    web.get("/-/healthy", healthy),
    web.get("/-/ready", ready),
    web.post("/api/reports/email", send_report),
    web.post("/api/reports/email/", send_report),
    web.route("*", "/{tail:.*}", not_found),
]

__all__ = ["AUTHORIZER", "CONFIG", "GRAFANA", "ROUTES", "SERVICE", "STORE", "error_middleware"]
