"""HTTP to one nas service: base URL, bearer token, retries, error mapping, streamed downloads and server-sent events.

Everything the resource classes (:class:`nas.client.Client`, :class:`nas.client.Search`) send goes through a
:class:`Transport`; they never see httpx exceptions or error responses, only the exceptions of
:mod:`nas.client.errors` and validated models.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import random
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import httpx
from httpx_sse import ServerSentEvent, SSEError, connect_sse
from pydantic import TypeAdapter, ValidationError

from nas.client.config import default_token, default_url
from nas.client.errors import (
    APIError,
    AuthError,
    Conflict,
    ConnectionFailed,
    InvalidRequest,
    NotFound,
    ServerError,
    UnexpectedResponse,
)
from nas.client.models import Page, Problem, ProblemField

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

API_PREFIX = "/api/v1"
PAGE_SIZE = 100  # items per request when the SDK pages through a list
MAX_DELAY_S = 30.0  # longest pause between two attempts (also caps Retry-After)
END_EVENT = "end"  # the last event of a stream: the server closes it after this one


class _RetryableStatus(Exception):
    """A response worth another attempt (5xx, 429)."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__(f"HTTP {response.status_code}")
        self.response = response


def _retryable(status: int) -> bool:
    return status >= 500 or status == 429


@functools.cache
def _adapter(tp: Any) -> TypeAdapter[Any]:
    return TypeAdapter(tp)


def validate(tp: type[T] | Any, content: str | bytes, what: str) -> T:
    """``content`` (JSON) as a ``tp``; UnexpectedResponse naming ``what`` and the first wrong field otherwise."""
    try:
        adapter: TypeAdapter[T] = _adapter(tp)  # type: ignore[arg-type]  # types are hashable
        return adapter.validate_json(content)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        name = getattr(tp, "__name__", str(tp))
        raise UnexpectedResponse(
            f"{what} is not a valid {name} ({where}: {first['msg']}); is the URL a nas service of the same version?"
        ) from exc


def problem_of(response: httpx.Response) -> Problem:
    """The problem document of an error response; FastAPI's plain ``{"detail": ...}`` and non-JSON bodies too."""
    status = response.status_code
    title = response.reason_phrase or f"HTTP {status}"
    try:
        data = response.json()
    except ValueError:
        text = response.text.strip()
        return Problem(title=title, status=status, detail=text[:500] or None)
    if isinstance(data, dict):
        try:
            return Problem.model_validate({"title": title, **data, "status": status})
        except ValidationError:
            pass
        detail = data.get("detail")
        if isinstance(detail, list):  # FastAPI's default validation error
            errors = [
                ProblemField(
                    field=".".join(str(p) for p in e.get("loc", [])[1:] or e.get("loc", [])),
                    message=str(e.get("msg", "")),
                )
                for e in detail
                if isinstance(e, dict)
            ]
            return Problem(title=title, status=status, errors=errors)
        if detail is not None:
            return Problem(title=title, status=status, detail=str(detail))
    return Problem(title=title, status=status, detail=str(data)[:500])


def error_for(problem: Problem, method: str | None = None, url: str | None = None) -> APIError:
    """The exception of the SDK that matches ``problem.status``."""
    status = problem.status
    cls: type[APIError]
    if status in (400, 413, 422):
        cls = InvalidRequest
    elif status in (401, 403):
        cls = AuthError
    elif status == 404:
        cls = NotFound
    elif status == 409:
        cls = Conflict
    elif status >= 500:
        cls = ServerError
    else:
        cls = APIError
    return cls(problem, method=method, url=url)


class Transport:
    """Requests to the nas service at ``url`` (default ``NAS_URL``, else the local one) as ``token``'s user.

    Every request is retried with exponential back-off on connection errors, 5xx and 429 (``retries`` times, first
    pause ``backoff`` seconds, honouring ``Retry-After``); other error responses raise the matching
    :class:`~nas.client.errors.APIError` at once. Requests go through ``http`` (an httpx.Client, not closed by
    :meth:`close`) if given, else through a new httpx.Client with ``timeout`` on ``transport`` (an
    httpx.BaseTransport, e.g. httpx.MockTransport; default: the network).
    """

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        retries: int = 5,
        backoff: float = 0.5,
        http: httpx.Client | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if retries < 0:
            raise ValueError(f"retries: must be >= 0, got {retries}")
        if backoff < 0:
            raise ValueError(f"backoff: must be >= 0, got {backoff}")
        if http is not None and transport is not None:
            raise ValueError("http, transport: pass one or the other (an httpx.Client already has its transport)")
        if url is None and http is not None and str(http.base_url).strip("/"):
            url = str(http.base_url)
        base = (url or default_url()).rstrip("/")
        self.url = base.removesuffix(API_PREFIX).rstrip("/")
        self.token = token if token is not None else default_token()
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self._owns_http = http is None
        self.http = (
            http
            if http is not None
            else httpx.Client(timeout=httpx.Timeout(timeout), follow_redirects=True, transport=transport)
        )

    def close(self) -> None:
        if self._owns_http:
            self.http.close()

    # ------------------------------------------------------------ building requests

    def url_for(self, path: str, api: bool = True) -> str:
        """The absolute URL of ``path`` (below ``/api/v1`` unless ``api=False``)."""
        return f"{self.url}{API_PREFIX if api else ''}{path}"

    def headers(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if extra:
            headers.update(extra)
        return headers

    # ------------------------------------------------------------ retries and errors

    def delay(self, attempt: int, response: httpx.Response | None = None) -> float:
        """The pause before attempt ``attempt + 2``: ``Retry-After``, else exponential back-off with jitter."""
        retry_after = response.headers.get("Retry-After") if response is not None else None
        if retry_after:
            try:
                return min(max(float(retry_after), 0.0), MAX_DELAY_S)
            except ValueError:
                pass  # an HTTP date: fall back to our own back-off
        return min(self.backoff * 2**attempt, MAX_DELAY_S) * random.uniform(0.5, 1.0)

    def retrying(self, what: str, attempt_once: Callable[[], R], retries: int | None = None) -> R:
        """Run ``attempt_once`` until it succeeds; transport errors and retryable statuses earn another attempt."""
        attempts = (self.retries if retries is None else retries) + 1
        for attempt in range(attempts):
            last = attempt == attempts - 1
            try:
                return attempt_once()
            except httpx.TransportError as exc:
                if last or isinstance(exc, httpx.UnsupportedProtocol):
                    raise ConnectionFailed(self.url, exc, attempt + 1) from exc
                delay, reason = self.delay(attempt), str(exc) or type(exc).__name__
            except _RetryableStatus as exc:
                if last:
                    raise self.error(exc.response) from None
                delay, reason = self.delay(attempt, exc.response), f"HTTP {exc.response.status_code}"
            log.info("%s: %s; attempt %d of %d in %.1f s", what, reason, attempt + 2, attempts, delay)
            time.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def error(self, response: httpx.Response) -> APIError:
        """The SDK exception for an error response (its body must have been read)."""
        return error_for(problem_of(response), response.request.method, str(response.request.url))

    def _check(self, response: httpx.Response) -> None:
        """Raise for an error response: _RetryableStatus (worth another attempt) or the APIError."""
        if _retryable(response.status_code) or response.is_error:
            response.read()
            if _retryable(response.status_code):
                raise _RetryableStatus(response)
            raise self.error(response)

    # ------------------------------------------------------------ requests

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        api: bool = True,
        retries: int | None = None,
    ) -> httpx.Response:
        """One API call with retries; the successful response, or the SDK exception. None/[] params are left out."""
        url = self.url_for(path, api)
        query = {k: v for k, v in (params or {}).items() if v is not None and v != []}
        hdrs = self.headers(headers)

        def once() -> httpx.Response:
            response = self.http.request(method, url, params=query, json=json, headers=hdrs)
            self._check(response)
            return response

        return self.retrying(f"{method} {url}", once, retries)

    def parse(self, response: httpx.Response, tp: type[T] | Any) -> T:
        return validate(tp, response.content, f"the answer to {response.request.method} {response.request.url}")

    def get(self, path: str, tp: type[T] | Any, params: Mapping[str, Any] | None = None) -> T:
        """GET ``path`` and validate the answer as a ``tp``."""
        return self.parse(self.request("GET", path, params=params), tp)

    def get_pages(self, path: str, params: Mapping[str, Any], item: type[T], limit: int | None) -> list[T]:
        """GET the limit/offset pages of ``Page[item]`` at ``path`` until ``limit`` items (None: all) or the end."""
        if limit is not None and limit < 1:
            raise ValueError(f"limit: must be at least 1 (or None for all), got {limit}")
        items: list[T] = []
        offset = 0
        while limit is None or len(items) < limit:
            size = PAGE_SIZE if limit is None else min(PAGE_SIZE, limit - len(items))
            page: Page[T] = self.get(path, Page[item], {**params, "limit": size, "offset": offset})  # type: ignore[valid-type]
            items.extend(page.items)
            offset += len(page.items)
            if not page.items or offset >= page.total:
                break
        return items

    def download(self, path: str, tmp: Path) -> tuple[int, str]:
        """Stream GET ``path`` into the file ``tmp`` (rewritten on each attempt); its size and sha256."""
        url = self.url_for(path)
        headers = self.headers({"Accept": "application/octet-stream"})

        def once() -> tuple[int, str]:
            digest, size = hashlib.sha256(), 0
            with self.http.stream("GET", url, headers=headers) as response:
                self._check(response)
                with open(tmp, "wb") as f:
                    for chunk in response.iter_bytes(1 << 20):
                        f.write(chunk)
                        digest.update(chunk)
                        size += len(chunk)
            return size, digest.hexdigest()

        return self.retrying(f"GET {url}", once)

    # ------------------------------------------------------------ server-sent events

    def follow_events(
        self,
        path: str,
        *,
        after: int = 0,
        deadline: float | None = None,
        expired: Callable[[], Exception] = TimeoutError,
    ) -> Iterator[ServerSentEvent]:
        """Follow the event stream at ``path``: every event with an ``id`` above ``after``, then the ``end`` event.

        After a dropped connection, a quiet stream or a retryable status it reconnects with ``Last-Event-ID`` (the
        last id seen) and skips events replayed at or below it, so none is lost or repeated. Gives up after
        ``retries`` reconnections in a row that brought no new event (ConnectionFailed, or the last ServerError);
        raises ``expired()`` once ``time.monotonic()`` passes ``deadline``. Comments (keep-alive pings) and events
        without data are skipped. A stream that is not ``text/event-stream`` raises UnexpectedResponse at once.
        """
        url = self.url_for(path)
        last_id = after
        failures = 0
        reconnect_s: float | None = None
        while True:
            kwargs: dict[str, Any] = {}
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise expired()
                if remaining < self.timeout:
                    kwargs["timeout"] = httpx.Timeout(self.timeout, read=remaining)
            headers = self.headers({"Last-Event-ID": str(last_id)} if last_id else None)
            received = False
            cause: Exception | str = "the event stream closed before its end event"
            try:
                with connect_sse(self.http, "GET", url, headers=headers, **kwargs) as source:
                    self._check(source.response)
                    for sse in source.iter_sse():
                        if sse.retry is not None:
                            reconnect_s = sse.retry / 1000
                        if sse.event == END_EVENT:
                            yield sse
                            return
                        if not sse.data:
                            continue
                        event_id = _int_or_none(sse.id)
                        if event_id is not None:
                            if event_id <= last_id:
                                continue  # already seen before a reconnect
                            last_id = event_id
                        received, failures = True, 0
                        yield sse
            except SSEError as exc:  # an SSEError is an httpx.TransportError: not worth retrying
                raise UnexpectedResponse(f"{url} is not an event stream: {exc}") from exc
            except httpx.ReadTimeout as exc:
                cause, received = exc, True  # a quiet stream: the service is there, just reconnect
            except httpx.TransportError as exc:
                cause = exc
            except _RetryableStatus as exc:
                cause = exc
            if not received:
                failures += 1
                if failures > self.retries:
                    if isinstance(cause, _RetryableStatus):
                        raise self.error(cause.response) from None
                    raise ConnectionFailed(self.url, cause, failures)
            if deadline is not None and time.monotonic() >= deadline:
                raise expired()
            delay = max(reconnect_s or 0.0, self.delay(failures - 1) if failures else 0.0)
            log.info("event stream %s: %s; reconnecting after event %d in %.1f s", url, cause, last_id, delay)
            time.sleep(delay)


def _int_or_none(value: str | None) -> int | None:
    try:
        return int(value) if value else None
    except ValueError:
        return None
