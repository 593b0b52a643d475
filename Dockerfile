# syntax=docker/dockerfile:1
#
# grafana-reporting-sidecar: Grafana Enterprise's Reporting API for OSS Grafana.
#
#   docker build -t grafana-reporting-sidecar:0.1.0 .
#   docker run --rm -p 3001:3001 -e SIDECAR_GRAFANA_URL=http://grafana:3000 ... \
#       grafana-reporting-sidecar:0.1.0
#
# Stage "build" makes the wheel from the sources; the final stage installs that wheel with
# pip, as the README installs the package, into a slim image running as a numeric
# non-root user. Both stages use the same base, pinned to a patch release so that a
# rebuild is repeatable and an upgrade is a visible change.

FROM python:3.11.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY sidecar ./sidecar
RUN python -m pip wheel --no-cache-dir --no-deps --wheel-dir /dist .

FROM python:3.11.11-slim-bookworm
LABEL org.opencontainers.image.title="grafana-reporting-sidecar" \
      org.opencontainers.image.description="Grafana Enterprise's Reporting API (PDF reports by email) for OSS Grafana" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/OWNER/grafana-reporting-sidecar"

# DejaVu: fonts covering many scripts (Latin, Greek, Cyrillic, Arabic, Hebrew, ...) for
# text in PDFs beyond Latin-1, which the PDF writer's standard Helvetica lacks. Pinned to
# bookworm's version, like the base image.
# The user: numeric ids, so that Kubernetes' runAsNonRoot can verify it without a passwd
# lookup; it owns only the default storage folder (storage.url).
RUN apt-get update \
 && apt-get install -y --no-install-recommends fonts-dejavu-core=2.37-6 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 sidecar \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin sidecar \
 && mkdir -p /var/lib/grafana-reporting \
 && chown 10001:10001 /var/lib/grafana-reporting

# The wheel is mounted from the build stage, not copied, so no layer keeps it.
RUN --mount=type=bind,from=build,source=/dist,target=/dist \
    python -m pip install --no-cache-dir /dist/*.whl

# The repository's sidecar.yaml (every key documented) as the default configuration: set
# keys with SIDECAR_<SECTION>_<KEY> variables, or mount your own file over it.
COPY sidecar.yaml /etc/grafana-reporting/sidecar.yaml
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    SIDECAR_CONFIG=/etc/grafana-reporting/sidecar.yaml
VOLUME ["/var/lib/grafana-reporting"]

USER 10001:10001
EXPOSE 3001
# Liveness through Python itself (the image has no curl): GET /-/healthy on the port the
# sidecar listens on, bypassing any HTTP proxy set in the environment.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["sidecar", "healthcheck"]
ENTRYPOINT ["sidecar"]
CMD ["serve", "--config", "/etc/grafana-reporting/sidecar.yaml"]
