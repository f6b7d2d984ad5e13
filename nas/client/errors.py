"""Exceptions of the SDK. Each one says what went wrong and, where there is one, what to do about it.

``NASClientError``
├── ``APIError``: the service answered with an error (``status``, ``problem``, ``method``, ``url``)
│   ├── ``InvalidRequest``: 400, 413, 422 (the message starts with the offending field: ``spec.dataset.path: ...``)
│   ├── ``AuthError``: 401, 403
│   ├── ``NotFound``: 404
│   ├── ``Conflict``: 409
│   └── ``ServerError``: 5xx (after the retries)
├── ``ConnectionFailed``: the service could not be reached (after the retries)
├── ``UnexpectedResponse``: the service answered something that does not match the API's models
├── ``SearchFailed``: a search ended ``failed`` or ``cancelled`` where a result was expected
├── ``ResultUnavailable``: a result was asked for that the search does not have (yet)
├── ``DownloadError``: an artifact arrived corrupt (size or sha256 differs); nothing half-written is kept
└── ``WaitTimeout`` (also a ``TimeoutError``): ``Search.wait(timeout=...)`` ran out
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nas.client.models import Problem, SearchOut


class NASClientError(Exception):
    """Base class of every error the SDK raises on purpose."""


class APIError(NASClientError):
    """The service answered ``status`` with a problem document (RFC 9457)."""

    def __init__(self, problem: Problem, *, method: str | None = None, url: str | None = None) -> None:
        self.problem = problem
        self.status = problem.status
        self.method = method
        self.url = url
        super().__init__(self._message())

    @property
    def field(self) -> str | None:
        """The offending input, when the service named one."""
        if self.problem.field:
            return self.problem.field
        return self.problem.errors[0].field if self.problem.errors else None

    @property
    def detail(self) -> str:
        """What went wrong, without the field."""
        p = self.problem
        if p.errors:
            return p.errors[0].message
        return p.detail or p.title

    def _message(self) -> str:
        p = self.problem
        if len(p.errors) > 1:
            return "; ".join(f"{e.field}: {e.message}" for e in p.errors)
        return f"{self.field}: {self.detail}" if self.field else self.detail

    def __reduce__(self):  # type: ignore[no-untyped-def]  # picklable despite the keyword-only arguments
        return _rebuild, (type(self), self.problem, self.method, self.url)


def _rebuild(cls: type[APIError], problem: Problem, method: str | None, url: str | None) -> APIError:
    return cls(problem, method=method, url=url)


class InvalidRequest(APIError):
    """The service refused the request's content (400, 413, 422): the message names the field and what is allowed.

    Also raised before sending anything when a spec does not validate locally (then ``method`` and ``url`` are None).
    """


class AuthError(APIError):
    """The token is missing or wrong (401), or its user may not do this (403)."""

    def _message(self) -> str:
        if self.status == 403:
            return f"forbidden: {super()._message()}"
        base = super()._message() if self.field else f"token: {super()._message()}"
        return (
            f"{base}; pass a valid API token (NAS_TOKEN, --token, or Client(token=...)); "
            "the embedded service writes its admin token to <data dir>/admin.token (NAS_DATA_DIR, default ~/.nas)"
        )


class NotFound(APIError):
    """No such resource, or one the token's user may not see (404)."""


class Conflict(APIError):
    """The request conflicts with the resource's state (409), e.g. cancelling a finished search."""


class ServerError(APIError):
    """The service failed (5xx) on every attempt."""

    def _message(self) -> str:
        return f"server error {self.status} on {self.method} {self.url}: {super()._message()}"


class ConnectionFailed(NASClientError):
    """The service could not be reached at ``url`` after ``attempts`` tries."""

    def __init__(self, url: str, cause: BaseException | str, attempts: int) -> None:
        self.url = url
        self.cause = cause
        self.attempts = attempts
        reason = cause if isinstance(cause, str) else (str(cause) or type(cause).__name__)
        super().__init__(
            f"cannot reach the nas service at {url} ({reason}) after {attempts} attempt{'s' * (attempts != 1)}; "
            "start it with `nas up`, or point NAS_URL (or --url, or Client(url=...)) at a running one"
        )

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return type(self), (self.url, str(self.cause), self.attempts)


class UnexpectedResponse(NASClientError):
    """The service's answer does not match the API (a different version, or not a nas service at all)."""


class SearchFailed(NASClientError):
    """A search ended ``failed`` or ``cancelled``; ``search`` is its final state and ``error`` the reason."""

    def __init__(self, search: SearchOut) -> None:
        self.search = search
        self.error = search.error
        reason = f": {search.error}" if search.error else ""
        super().__init__(f"search {search.id} ({search.name!r}) {search.status}{reason}")

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return type(self), (self.search,)


class ResultUnavailable(NASClientError):
    """The search has no result of the kind asked for (still running, or nothing retrained)."""


class DownloadError(NASClientError):
    """An artifact could not be stored intact; the partial file has been removed."""


class WaitTimeout(NASClientError, TimeoutError):
    """``Search.wait`` gave up; the search itself keeps going."""


__all__ = [
    "APIError",
    "AuthError",
    "Conflict",
    "ConnectionFailed",
    "DownloadError",
    "InvalidRequest",
    "NASClientError",
    "NotFound",
    "ResultUnavailable",
    "SearchFailed",
    "ServerError",
    "UnexpectedResponse",
    "WaitTimeout",
]
