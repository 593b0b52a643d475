"""The one exception tree of the sidecar. No HTTP in it: `api` maps it to responses.

```
SidecarError
├── ConfigError                  invalid sidecar.yaml / environment (exit 2)
├── InvalidInput                 400: bad body, bad field, bad address
├── AuthenticationFailed         401: Grafana refused the caller's credentials (body relayed)
├── PermissionDenied             403: the caller may not do this
├── NotFound                     404: no such report
├── UpstreamError                something outside failed; `retryable` says if trying again may help
│   ├── GrafanaError             Grafana answered badly or not at all
│   ├── RenderError              one or more panels did not render (names them)
│   └── MailError                the SMTP server refused or could not be reached
└── (anything else)              500, logged with its traceback
```
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence


class SidecarError(Exception):
    """Base of every error the sidecar raises on purpose."""


class ConfigError(SidecarError):
    """The configuration is invalid; `problems` holds one line per error, key path first."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(self.problems))


class InvalidInput(SidecarError):
    """The request is malformed or a field is invalid (HTTP 400)."""


class AuthenticationFailed(SidecarError):
    """Grafana did not accept the caller's credentials (HTTP 401).

    `body` and `headers` are Grafana's own answer, relayed to the caller unchanged so that
    clients see the same 401 as from Grafana (messageId included).
    """

    def __init__(
        self,
        body: bytes,
        *,
        content_type: str = "application/json; charset=UTF-8",
        set_cookies: Sequence[str] = (),
    ) -> None:
        self.body = body
        self.content_type = content_type
        self.set_cookies = tuple(set_cookies)
        super().__init__("Grafana refused the caller's credentials")


class PermissionDenied(SidecarError):
    """The caller is known but may not do this (HTTP 403)."""


class NotFound(SidecarError):
    """The thing asked for does not exist, or not in the caller's org (HTTP 404)."""


class UpstreamError(SidecarError):
    """A system the sidecar depends on failed. `retryable` tells whether a retry may help."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        self.retryable = retryable
        super().__init__(message)


class GrafanaError(UpstreamError):
    """Grafana could not be reached, timed out, or answered with an unexpected status."""


class RenderError(UpstreamError):
    """Panels failed to render; `failures` maps each panel's name to why."""

    def __init__(self, failures: Mapping[str, str], *, retryable: bool) -> None:
        self.failures = dict(failures)
        listed = "; ".join(f"{name}: {why}" for name, why in self.failures.items())
        super().__init__(
            f"Failed to render {len(self.failures)} panel(s): {listed}", retryable=retryable
        )


class MailError(UpstreamError):
    """The email could not be sent."""
