"""Hardening of every response: security headers, the Host check and the self-hosted Swagger UI.

- ``SecurityHeadersMiddleware`` adds ``SECURITY_HEADERS`` (CSP, nosniff, no referrer, no framing) to every response,
  errors and /metrics included.
- ``HostCheckMiddleware`` refuses requests whose Host header is not allowed: with auth off only loopback names
  (127.0.0.1, localhost, [::1]) are, so a DNS-rebinding page in the operator's browser cannot reach the API as admin;
  ``NAS_ALLOWED_HOSTS`` restricts the names in any mode.
- ``install_docs`` serves /api/v1/docs from the ``swagger-ui-bundle`` package's own files (no CDN).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.deps import API_PREFIX
from api.problems import SECURITY_HEADERS, problem_response
from nas.client.models import ProblemField

DOCS_ASSETS = f"{API_PREFIX}/docs-assets"
LOOPBACK_NAMES = ("localhost",)


class SecurityHeadersMiddleware:
    """Adds the security headers to every HTTP response (keeping any the endpoint set itself)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in SECURITY_HEADERS.items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {k.lower() for k, _ in headers}
                headers += [(k, v) for k, v in self.raw if k not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def host_name(header: str) -> str:
    """The name in a Host header without its port: 'localhost:8000' -> 'localhost', '[::1]:80' -> '::1'."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else header
    if header.count(":") == 1:
        return header.split(":", 1)[0]
    return header


def is_loopback_name(name: str) -> bool:
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class HostCheckMiddleware:
    """Refuses (400 problem+json, field ``Host``) a Host header that is not allowed.

    ``allowed`` (lower-case names, ``*.example.org`` for subdomains) when given, else with ``loopback_only`` the
    loopback names, else any host.
    """

    def __init__(self, app: ASGIApp, *, allowed: Sequence[str], loopback_only: bool) -> None:
        self.app = app
        self.allowed = [a.strip().lower() for a in allowed if a.strip()]
        self.loopback_only = loopback_only

    def accepts(self, name: str) -> bool:
        if self.allowed:
            return any(a == "*" or name == a or (a.startswith("*.") and name.endswith(a[1:])) for a in self.allowed)
        if self.loopback_only:
            return is_loopback_name(name)
        return True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or (not self.allowed and not self.loopback_only):
            await self.app(scope, receive, send)
            return
        header = ""
        for key, value in scope.get("headers", ()):
            if key == b"host":
                header = value.decode("latin-1")
                break
        if self.accepts(host_name(header)):
            await self.app(scope, receive, send)
            return
        why = "NAS_ALLOWED_HOSTS" if self.allowed else "with auth off only loopback names (127.0.0.1, localhost, [::1])"
        detail = f"the Host header {header!r} is not allowed here ({why})"
        fe = ProblemField(field="Host", message=detail)
        response = problem_response(400, detail, field="Host", errors=[fe], instance=scope.get("path", ""))
        await response(scope, receive, send)


# ---------------------------------------------------------------- Swagger UI without a CDN

_DOCS_HTML = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title} - Swagger UI</title>
<link rel="stylesheet" type="text/css" href="{assets}/swagger-ui.css">
<link rel="icon" type="image/png" href="{assets}/favicon-32x32.png">
</head>
<body>
<div id="swagger-ui"></div>
<script src="{assets}/swagger-ui-bundle.js"></script>
<script src="{prefix}/docs-init.js"></script>
</body>
</html>
"""

# a file of its own, not an inline script: the Content-Security-Policy allows scripts from 'self' only
_DOCS_INIT_JS = """window.ui = SwaggerUIBundle({{
  url: "{openapi}",
  dom_id: "#swagger-ui",
  layout: "BaseLayout",
  deepLinking: true,
  showExtensions: true,
  showCommonExtensions: true,
  presets: [SwaggerUIBundle.presets.apis]
}});
"""


def swagger_ui_dir() -> Path | None:
    """The folder of swagger-ui's dist files shipped by the ``swagger-ui-bundle`` package (None if not installed)."""
    try:
        import swagger_ui_bundle
    except ImportError:
        return None
    path = Path(swagger_ui_bundle.swagger_ui_path)
    return path if (path / "swagger-ui-bundle.js").is_file() else None


def install_docs(app: FastAPI) -> None:
    """/api/v1/docs from local files; without the swagger-ui-bundle package only /api/v1/openapi.json is served."""
    assets = swagger_ui_dir()
    if assets is None:
        return
    app.mount(DOCS_ASSETS, StaticFiles(directory=assets), name="docs-assets")
    html = _DOCS_HTML.format(title=app.title, assets=DOCS_ASSETS, prefix=API_PREFIX)
    init_js = _DOCS_INIT_JS.format(openapi=app.openapi_url)

    @app.get(f"{API_PREFIX}/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return HTMLResponse(html)

    @app.get(f"{API_PREFIX}/docs-init.js", include_in_schema=False)
    async def docs_init() -> Response:
        return Response(init_js, media_type="text/javascript")
