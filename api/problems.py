"""Errors as RFC 9457 problem details (``application/problem+json``), with the offending field named.

Every 4xx/5xx response of the API comes from here: validation errors, HTTP errors raised by Starlette (404, 405),
the store's refusals (conflict, not found), the engine's InvalidInput, request bodies over the size limit and
unhandled exceptions (logged; the body says only that something went wrong).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from nas.client.models import Problem, ProblemField
from nas.errors import InvalidInput
from service.store.repo import StoreError

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"

# on every response (api.security.SecurityHeadersMiddleware; here too for the 500s answered outside the middleware)
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}

TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    500: "Internal Server Error",
    503: "Service Unavailable",
}

_LOCATIONS = ("body", "query", "path", "header", "cookie")
# A validator's message that starts with "field: ..." names a sub-field (pydantic puts the model's location in loc).
_FIELD_PREFIX = re.compile(r"^([A-Za-z_][\w]*(?:\.[A-Za-z_]\w*)*): (.+)$", re.DOTALL)


def title(status: int) -> str:
    if status in TITLES:
        return TITLES[status]
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


class ProblemError(StarletteHTTPException):
    """An HTTP error that becomes a problem document; ``field`` names the offending input."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        field: str | None = None,
        errors: Sequence[ProblemField] = (),
        message: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(status_code=status, detail=detail, headers=headers)
        self.field = field
        self.errors = list(errors) or ([ProblemField(field=field, message=message or detail)] if field else [])


def problem_response(
    status: int,
    detail: str | None = None,
    *,
    field: str | None = None,
    errors: Iterable[ProblemField] = (),
    instance: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = Problem(
        title=title(status), status=status, detail=detail, instance=instance, field=field, errors=list(errors)
    )
    return JSONResponse(
        body.model_dump(mode="json", exclude_none=True), status_code=status, headers=headers, media_type=PROBLEM_JSON
    )


# ---------------------------------------------------------------- field names of validation errors


def format_loc(parts: Iterable[Any]) -> str:
    """('spec', 'objectives', 0) -> 'spec.objectives[0]'."""
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            out += f".{p}" if out else str(p)
    return out


def field_error(err: dict[str, Any]) -> ProblemField:
    """One pydantic/FastAPI error as (field, message); the location prefix (body, query, ...) is dropped."""
    loc = list(err.get("loc", ()))
    if loc and loc[0] in _LOCATIONS:
        kind = loc.pop(0)
        if not loc:
            loc = [kind]
    message = str(err.get("msg", "invalid"))
    for prefix in ("Value error, ", "Assertion failed, "):
        if message.startswith(prefix):
            message = message[len(prefix) :]
            match = _FIELD_PREFIX.match(message)
            if match:
                loc.extend(match.group(1).split("."))
                message = match.group(2)
    if err.get("type") == "missing":
        message = "required"
    elif err.get("type") == "extra_forbidden":
        message = "unknown field; not allowed here"
    return ProblemField(field=format_loc(loc) or "body", message=message)


# ---------------------------------------------------------------- exception handlers


async def _validation_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    raw = list(exc.errors())
    if any(e.get("type") == "json_invalid" for e in raw):
        err = next(e for e in raw if e.get("type") == "json_invalid")
        reason = (err.get("ctx") or {}).get("error", "invalid JSON")
        pos = err["loc"][1] if len(err.get("loc", ())) > 1 else None
        detail = f"the body is not valid JSON: {reason}" + (f" at character {pos}" if pos is not None else "")
        fe = ProblemField(field="body", message=detail)
        return problem_response(400, detail, field="body", errors=[fe], instance=request.url.path)
    errors = [field_error(e) for e in raw]
    shown = "; ".join(f"{e.field}: {e.message}" for e in errors[:5])
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    field = errors[0].field if errors else None
    return problem_response(422, shown + more, field=field, errors=errors, instance=request.url.path)


async def _http_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    field = getattr(exc, "field", None)
    errors = getattr(exc, "errors", [])
    detail = exc.detail if isinstance(exc.detail, str) else None
    if status == 400 and not isinstance(exc, ProblemError):  # FastAPI could not read the body (e.g. nested too deep)
        field = "body"
        errors = [ProblemField(field="body", message=detail or "the body cannot be read")]
    if status == 404 and not isinstance(exc, ProblemError):
        detail = f"no resource at {request.url.path!r}; see /api/v1/docs for the routes"
    headers = dict(exc.headers or {})
    if status == 405 and not isinstance(exc, ProblemError):
        allowed = _allowed_methods(request)
        if allowed:
            headers = {k: v for k, v in headers.items() if k.lower() != "allow"} | {"Allow": ", ".join(allowed)}
        detail = f"{request.method} is not allowed here" + (f"; allowed: {', '.join(allowed)}" if allowed else "")
    return problem_response(status, detail, field=field, errors=errors, instance=request.url.path, headers=headers)


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route accepts at this path (Starlette's Allow names only the first route that matches)."""
    methods: set[str] = set()
    routes = getattr(request.app.state, "routes", None) or request.app.router.routes
    for route in routes:
        match, _ = route.matches({**request.scope, "type": "http"})
        if match != Match.NONE:
            methods |= set(getattr(route, "methods", None) or ())
    return sorted(methods)


async def _store_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StoreError)
    errors = [ProblemField(field=exc.field, message=str(exc))] if exc.field else []
    return problem_response(exc.status, str(exc), field=exc.field, errors=errors, instance=request.url.path)


async def _invalid_input_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, InvalidInput)
    fe = ProblemField(field=exc.field, message=exc.message)
    return problem_response(422, str(exc), field=exc.field, errors=[fe], instance=request.url.path)


async def _unhandled_handler(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error in %s %s", request.method, request.url.path, exc_info=exc)
    detail = "an unexpected error happened on the server; it was logged"
    return problem_response(500, detail, instance=request.url.path, headers=dict(SECURITY_HEADERS))


def install_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation_handler)
    app.add_exception_handler(StarletteHTTPException, _http_handler)
    app.add_exception_handler(StoreError, _store_handler)
    app.add_exception_handler(InvalidInput, _invalid_input_handler)
    app.add_exception_handler(Exception, _unhandled_handler)


# ---------------------------------------------------------------- request body limit


class BodyLimitMiddleware:
    """Refuse request bodies over ``max_bytes`` with 413: at once by Content-Length, else by counting what arrives
    (chunked or streamed bodies), which raises a ProblemError while the endpoint reads the body."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        path = scope.get("path", "")
        if declared == -1:
            detail = "the Content-Length header is not a non-negative integer"
            fe = ProblemField(field="Content-Length", message=detail)
            response = problem_response(400, detail, field="Content-Length", errors=[fe], instance=path)
            await response(scope, receive, send)
            return
        if declared is not None and declared > self.max_bytes:
            detail = self._detail(declared)
            fe = ProblemField(field="body", message=detail)
            response = problem_response(413, detail, field="body", errors=[fe], instance=path)
            await response(scope, receive, send)
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise ProblemError(413, self._detail(received, more=True), field="body")
            return message

        await self.app(scope, counting_receive, send)

    def _detail(self, size: int, *, more: bool = False) -> str:
        got = f"more than {self.max_bytes}" if more else str(size)
        return f"the request body has {got} bytes; the limit is {self.max_bytes} (NAS_MAX_BODY_BYTES)"


def _content_length(scope: Scope) -> int | None:
    """The declared body size; None when absent, -1 when unreadable."""
    for key, value in scope.get("headers", ()):
        if key == b"content-length":
            try:
                n = int(value)
            except ValueError:
                return -1
            return n if n >= 0 else -1
    return None


# ---------------------------------------------------------------- OpenAPI


_DESCRIPTIONS = {
    400: "Malformed request (e.g. the body is not JSON)",
    401: "Missing, unknown, revoked or expired API token, or a disabled user",
    404: "No such resource (or one the caller may not see)",
    409: "Conflict with the resource's state",
    413: "Request body too large",
    422: "Invalid input; `field` names it",
    500: "Unexpected server error",
    503: "Not ready",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` entries documenting problem+json errors (the media type is fixed up in the OpenAPI)."""
    out: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        entry: dict[str, Any] = {"model": Problem, "description": _DESCRIPTIONS.get(code, title(code))}
        if code == 401:
            entry["headers"] = {"WWW-Authenticate": {"description": "Bearer challenge", "schema": {"type": "string"}}}
        out[code] = entry
    return out


def problem_media_types(openapi: dict[str, Any]) -> dict[str, Any]:
    """Error responses are served as application/problem+json: say so in the OpenAPI document."""
    for item in openapi.get("paths", {}).values():
        for operation in item.values():
            if not isinstance(operation, dict):
                continue
            for code, response in operation.get("responses", {}).items():
                content = response.get("content")
                if str(code)[:1] in ("4", "5") and content and "application/json" in content:
                    media = content.pop("application/json")
                    if media.get("schema", {}).get("$ref", "").endswith("/HTTPValidationError"):
                        media["schema"] = {"$ref": "#/components/schemas/Problem"}  # FastAPI's default 422
                        response["description"] = _DESCRIPTIONS[422]
                    content[PROBLEM_JSON] = media
    schemas = openapi.get("components", {}).get("schemas", {})
    text = json.dumps(openapi.get("paths", {}))
    if "#/components/schemas/HTTPValidationError" not in text:
        schemas.pop("HTTPValidationError", None)
        schemas.pop("ValidationError", None)
    return openapi
