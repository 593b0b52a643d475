"""Typed keys under which the composition root publishes what handlers use."""

from __future__ import annotations

from aiohttp import web

from sidecar.auth import Authorizer
from sidecar.config import Config
from sidecar.grafana import GrafanaClient
from sidecar.service import ReportService
from sidecar.store import Store

CONFIG = web.AppKey("config", Config)
GRAFANA = web.AppKey("grafana", GrafanaClient)
AUTHORIZER = web.AppKey("authorizer", Authorizer)
STORE = web.AppKey("store", Store)
SERVICE = web.AppKey("service", ReportService)
