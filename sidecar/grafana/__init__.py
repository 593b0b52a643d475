"""The one Grafana client and the shapes of its answers."""

from sidecar.grafana.client import Credentials, GrafanaClient, PanelPng, Reply

__all__ = ["Credentials", "GrafanaClient", "PanelPng", "Reply"]
