"""Loopback stand-ins for tests and `sidecar demo`: a Grafana (grafana.py), an SMTP sink."""
