"""How Grafana writes its answers: the three JSON writers, error pages, redirects, PNGs.

Grafana has three ways to write JSON, and clients can tell them apart:

* `ctx.JSON` (`c.JSON`, `c.JsonApiErr`, middleware): `application/json; charset=UTF-8`,
  written by Go's `json.Encoder`, so maps are sorted and a newline ends the body;
* `response.JSON` (handlers): `application/json`, `json.Marshal`, no newline; given a Go
  string it writes the string's bytes as they are;
* `response.Error`: `{"message"}`, plus `"traceID":""` when Grafana passed a cause.
"""

from __future__ import annotations

import html
import json
import secrets
from typing import Any, Final

from aiohttp import web

JSON_UTF8: Final = "application/json; charset=UTF-8"
JSON_PLAIN: Final = "application/json"
HTML_UTF8: Final = "text/html; charset=UTF-8"


def go_json(value: Any, *, sort_keys: bool) -> bytes:
    """JSON as Go's encoder writes it: compact, UTF-8, `<`, `>`, `&` escaped."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=sort_keys)
    for char, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        text = text.replace(char, escaped)
    return text.encode()


def ctx_json(status: int, value: Any, *, sort_keys: bool = True) -> web.Response:
    """`c.JSON`: `application/json; charset=UTF-8` and a trailing newline; maps sorted."""
    body = go_json(value, sort_keys=sort_keys) + b"\n"
    return web.Response(status=status, body=body, headers={"Content-Type": JSON_UTF8})


def response_json(status: int, value: Any) -> web.Response:
    """`response.JSON`: `application/json`, no trailing newline, struct field order kept."""
    body = go_json(value, sort_keys=False)
    return web.Response(status=status, body=body, headers={"Content-Type": JSON_PLAIN})


def raw_json(status: int, text: str) -> web.Response:
    """`response.JSON` given a Go string: the bytes as they are, not a JSON string."""
    return web.Response(status=status, body=text.encode(), headers={"Content-Type": JSON_PLAIN})


def response_error(status: int, message: str, *, cause: bool = False) -> web.Response:
    """`response.Error`: `{"message"}`, plus `"traceID":""` when Grafana passed a cause."""
    body: dict[str, str] = {"message": message}
    if cause:
        body["traceID"] = ""
    return response_json(status, body)


def access_denied(action: str) -> web.Response:
    """The RBAC middleware's 403 with a fresh `ACE` + 10 digits id."""
    return ctx_json(
        403,
        {
            "accessErrorId": f"ACE{secrets.randbelow(10**10):010d}",
            "message": "You'll need additional permissions to perform this action. "
            f"Permissions needed: {action}",
            "title": "Access denied",
        },
    )


def plain_text(status: int, text: str) -> web.Response:
    """`http.Error`-style plain text."""
    return web.Response(
        status=status,
        body=text.encode(),
        headers={"Content-Type": "text/plain; charset=utf-8", "X-Content-Type-Options": "nosniff"},
    )


def html_error(status: int, title: str) -> web.Response:
    """`c.Handle`: Grafana's HTML error page with `title` as its message."""
    page = (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<title>Grafana</title>\n</head>\n<body>\n<div class="page-container">\n'
        f"<h1>{html.escape(title)}</h1>\n"
        "<p>Check the Grafana server logs for the detailed error message.</p>\n"
        "</div>\n</body>\n</html>\n"
    )
    return web.Response(status=status, body=page.encode(), headers={"Content-Type": HTML_UTF8})


def redirect(location: str) -> web.Response:
    """`http.Redirect` 302 with Go's small HTML body."""
    body = f'<a href="{html.escape(location)}">Found</a>.\n\n'.encode()
    return web.Response(
        status=302,
        body=body,
        headers={"Location": location, "Content-Type": "text/html; charset=utf-8"},
    )


def png_response(image: bytes) -> web.Response:
    """A 200 `image/png` answer."""
    return web.Response(
        status=200, body=image, headers={"Content-Type": "image/png", "Cache-Control": "private"}
    )
