"""Grafana Enterprise's Reporting API for OSS Grafana."""

__version__ = "0.1.0"
