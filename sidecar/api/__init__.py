"""The HTTP surface: Enterprise's Reporting API and the sidecar's own `/-/` endpoints.

`ROUTES` is the one routing table; `create_app` mounts it, then the catch-all for every
other path: `not_found`, or the proxy to Grafana when `proxy.enabled` is true. Handlers
read their collaborators from the app through the typed keys below.
"""

from __future__ import annotations

from aiohttp import web

from sidecar.api.health import healthy, ready
from sidecar.api.keys import AUTHORIZER, CONFIG, GRAFANA, SERVICE, STORE
from sidecar.api.middleware import error_middleware, not_found
from sidecar.api.reports import (
    create_report,
    delete_report,
    get_report,
    list_reports,
    render_csvs,
    render_pdfs,
    reports_for_dashboard,
    schedule_runs,
    send_report,
    send_test_email,
    update_report,
)
from sidecar.api.settings import get_image, get_settings, save_settings

# Enterprise's API (enterprise-reporting.md §1.1). Fixed paths come before `{id}`, which
# answers 400 for anything that is not a number, as Enterprise does.
_ENTERPRISE = [
    ("GET", "/api/reports", list_reports),
    ("POST", "/api/reports", create_report),
    ("POST", "/api/reports/email", send_report),
    ("POST", "/api/reports/test-email", send_test_email),
    ("GET", "/api/reports/settings", get_settings),
    ("POST", "/api/reports/settings", save_settings),
    ("GET", "/api/reports/images/{image}", get_image),
    ("GET", "/api/reports/render/pdfs", render_pdfs),
    ("GET", "/api/reports/render/csvs", render_csvs),
    ("GET", "/api/reports/dashboards/{uid}", reports_for_dashboard),
    ("GET", "/api/reports/{id}", get_report),
    ("PUT", "/api/reports/{id}", update_report),
    ("DELETE", "/api/reports/{id}", delete_report),
]

# The one routing table. Enterprise's paths work with and without a trailing slash (its
# UI uses both). Any other path is Grafana's: `create_app` adds the catch-all (404, or
# the proxy in front-proxy mode).
ROUTES = [
    web.get("/-/healthy", healthy),
    web.get("/-/ready", ready),
    web.get("/-/reports/{id}/runs", schedule_runs),
    *(
        web.route(method, path + slash, handler)
        for method, path, handler in _ENTERPRISE
        for slash in ("", "/")
    ),
]

__all__ = [
    "AUTHORIZER",
    "CONFIG",
    "GRAFANA",
    "ROUTES",
    "SERVICE",
    "STORE",
    "error_middleware",
    "not_found",
]
