"""The Python SDK: a typed client of the nas-service REST API (httpx + pydantic only; no torch, no ray).

>>> from nas.client import Client
>>> with Client() as client:                       # NAS_URL / NAS_TOKEN, or the local service and its admin token
...     search = client.submit("examples/digits-spos.yaml")
...     search.wait(progress=True)
...     folder = search.download("runs/digits")    # then: nas.load(folder)
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import random
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any, Literal, TypeVar
from urllib.parse import quote

import httpx
from httpx_sse import SSEError, connect_sse
from pydantic import TypeAdapter, ValidationError

from nas.client.config import default_token, default_url
from nas.client.errors import (
    APIError,
    AuthError,
    Conflict,
    ConnectionFailed,
    DownloadError,
    InvalidRequest,
    NotFound,
    ResultUnavailable,
    SearchFailed,
    ServerError,
    UnexpectedResponse,
    WaitTimeout,
)
from nas.client.models import (
    ArtifactOut,
    CandidateOut,
    CandidateSort,
    ClusterOut,
    DatasetOut,
    EventOut,
    FinalOut,
    Order,
    Page,
    Problem,
    ProblemField,
    SearchCreate,
    SearchOut,
    SearchSort,
    SpaceOut,
    StrategyOut,
    UserOut,
)
from nas.spec import SearchSpec

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

API_PREFIX = "/api/v1"
PAGE_SIZE = 100  # items per request when the SDK pages through a list
MAX_DELAY_S = 30.0  # longest pause between two attempts (also caps Retry-After)
SpecLike = SearchSpec | Mapping[str, Any] | str | os.PathLike[str]


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


def _validate(tp: type[T] | Any, content: str | bytes, what: str) -> T:
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


def load_search_spec(spec: SpecLike) -> SearchSpec:
    """A SearchSpec from a SearchSpec, a dict, or a YAML/JSON file; errors become InvalidRequest (``spec.<field>``)."""
    if isinstance(spec, SearchSpec):
        return spec
    from nas.errors import InvalidInput
    from nas.specio import load_spec, parse_spec  # imports yaml, not torch

    try:
        if isinstance(spec, Mapping):
            return parse_spec(dict(spec))
        if isinstance(spec, str | os.PathLike):
            return load_spec(Path(spec))
    except InvalidInput as exc:
        field = exc.field if exc.field == "spec" or exc.field.startswith("spec.") else f"spec.{exc.field}"
        problem = Problem(title="Invalid search spec", status=422, field=field, detail=exc.message)
        raise InvalidRequest(problem) from None
    raise TypeError(f"spec: expected a SearchSpec, a dict or a path to a YAML/JSON file, not {type(spec).__name__}")


class Client:
    """A client of one nas service.

    ``url`` defaults to ``NAS_URL`` (else the embedded service on this machine), ``token`` to ``NAS_TOKEN`` (else the
    admin token the embedded service wrote into its data directory). Every request is retried with exponential
    back-off on connection errors, 5xx and 429 (``retries`` times, first pause ``backoff`` seconds, honouring
    ``Retry-After``). ``http`` is an httpx.Client to send requests with (tests, proxies, custom TLS); when given, its
    own timeout applies and it is not closed by :meth:`close`.
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
    ) -> None:
        if retries < 0:
            raise ValueError(f"retries: must be >= 0, got {retries}")
        if backoff < 0:
            raise ValueError(f"backoff: must be >= 0, got {backoff}")
        if url is None and http is not None and str(http.base_url).strip("/"):
            url = str(http.base_url)
        base = (url or default_url()).rstrip("/")
        self.url = base.removesuffix(API_PREFIX).rstrip("/")
        self.token = token if token is not None else default_token()
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self._owns_http = http is None
        self._http = http if http is not None else httpx.Client(timeout=httpx.Timeout(timeout), follow_redirects=True)

    # ------------------------------------------------------------ lifecycle

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client(url={self.url!r}, token={'***' if self.token else None})"

    # ------------------------------------------------------------ searches

    def submit(
        self,
        spec: SpecLike,
        *,
        priority: int = 0,
        max_attempts: int | None = None,
        idempotency_key: str | None = None,
    ) -> Search:
        """Queue a search; ``spec`` is a SearchSpec, a dict, or a path to a YAML/JSON spec file.

        The spec is validated here first (InvalidRequest names the field, nothing is sent). The request carries an
        ``Idempotency-Key`` (a new uuid4 unless given) that stays the same across retries, so a retried submission
        never creates a second search.
        """
        search_spec = load_search_spec(spec)
        try:
            body = SearchCreate(spec=search_spec, priority=priority, max_attempts=max_attempts)
        except ValidationError as exc:
            e = exc.errors()[0]
            field = ".".join(str(p) for p in e["loc"])
            raise InvalidRequest(Problem(title="Invalid request", status=422, field=field, detail=e["msg"])) from None
        payload: dict[str, Any] = {
            "spec": body.spec.model_dump(mode="json", exclude_unset=True),
            "priority": body.priority,
        }
        if body.max_attempts is not None:
            payload["max_attempts"] = body.max_attempts
        key = idempotency_key or uuid.uuid4().hex
        response = self._request("POST", "/searches", json=payload, headers={"Idempotency-Key": key})
        return Search(self, self._parse(response, SearchOut))

    def search(self, search_id: str) -> Search:
        """A handle on an existing search (fetched now, so a wrong id fails here with NotFound)."""
        return Search(self, self._get_search(search_id))

    def searches(
        self,
        status: str | Sequence[str] | None = None,
        name: str | None = None,
        *,
        owner: str | None = None,
        sort: SearchSort = "created_at",
        order: Order = "desc",
        limit: int | None = 50,
    ) -> list[SearchOut]:
        """Searches visible to the token's user, newest first; ``limit=None`` pages through all of them."""
        statuses = [status] if isinstance(status, str) else list(status or [])
        params = {"status": statuses, "name": name, "owner": owner, "sort": sort, "order": order}
        return self._paged("/searches", params, SearchOut, limit)

    # ------------------------------------------------------------ catalogue and service

    def spaces(self) -> list[SpaceOut]:
        return self._get("/spaces", list[SpaceOut])

    def space(self, name: str) -> SpaceOut:
        return self._get(f"/spaces/{_segment(name)}", SpaceOut)

    def strategies(self) -> list[StrategyOut]:
        return self._get("/strategies", list[StrategyOut])

    def datasets(self) -> list[DatasetOut]:
        return self._get("/datasets", list[DatasetOut])

    def cluster(self) -> ClusterOut:
        return self._get("/cluster", ClusterOut)

    def me(self) -> UserOut:
        """The user the token belongs to (AuthError if the token is missing or wrong)."""
        return self._get("/me", UserOut)

    def health(self) -> bool:
        """Whether the service answers ``/healthz`` with 200 (one attempt, never raises)."""
        try:
            return self._request("GET", "/healthz", api=False, retries=0).status_code == 200
        except (APIError, ConnectionFailed):
            return False

    # ------------------------------------------------------------ plumbing

    def _url(self, path: str, api: bool = True) -> str:
        return f"{self.url}{API_PREFIX if api else ''}{path}"

    def _headers(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if extra:
            headers.update(extra)
        return headers

    def _delay(self, attempt: int, response: httpx.Response | None = None) -> float:
        retry_after = response.headers.get("Retry-After") if response is not None else None
        if retry_after:
            try:
                return min(max(float(retry_after), 0.0), MAX_DELAY_S)
            except ValueError:
                pass  # an HTTP date: fall back to our own back-off
        return min(self.backoff * 2**attempt, MAX_DELAY_S) * random.uniform(0.5, 1.0)

    def _retrying(self, what: str, attempt_once: Callable[[], R], retries: int | None = None) -> R:
        """Run ``attempt_once`` until it succeeds; transport errors and _RetryableStatus earn another attempt."""
        attempts = (self.retries if retries is None else retries) + 1
        for attempt in range(attempts):
            last = attempt == attempts - 1
            try:
                return attempt_once()
            except httpx.TransportError as exc:
                if last or isinstance(exc, httpx.UnsupportedProtocol):
                    raise ConnectionFailed(self.url, exc, attempt + 1) from exc
                delay, reason = self._delay(attempt), str(exc) or type(exc).__name__
            except _RetryableStatus as exc:
                if last:
                    raise self._error(exc.response) from None
                delay, reason = self._delay(attempt, exc.response), f"HTTP {exc.response.status_code}"
            log.info("%s: %s; attempt %d of %d in %.1f s", what, reason, attempt + 2, attempts, delay)
            time.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def _request(
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
        url = self._url(path, api)
        query = {k: v for k, v in (params or {}).items() if v is not None and v != []}
        hdrs = self._headers(headers)

        def once() -> httpx.Response:
            response = self._http.request(method, url, params=query, json=json, headers=hdrs)
            if _retryable(response.status_code):
                raise _RetryableStatus(response)
            if response.is_error:
                raise self._error(response)
            return response

        return self._retrying(f"{method} {url}", once, retries)

    def _error(self, response: httpx.Response) -> APIError:
        return error_for(problem_of(response), response.request.method, str(response.request.url))

    def _parse(self, response: httpx.Response, tp: type[T] | Any) -> T:
        return _validate(tp, response.content, f"the answer to {response.request.method} {response.request.url}")

    def _get(self, path: str, tp: type[T] | Any, params: Mapping[str, Any] | None = None) -> T:
        return self._parse(self._request("GET", path, params=params), tp)

    def _get_search(self, search_id: str) -> SearchOut:
        return self._get(f"/searches/{_segment(search_id)}", SearchOut)

    def _paged(self, path: str, params: Mapping[str, Any], item: type[T], limit: int | None) -> list[T]:
        """Follow limit/offset pages of ``Page[item]`` until ``limit`` items (None: all) or the end."""
        if limit is not None and limit < 1:
            raise ValueError(f"limit: must be at least 1 (or None for all), got {limit}")
        items: list[T] = []
        offset = 0
        while limit is None or len(items) < limit:
            size = PAGE_SIZE if limit is None else min(PAGE_SIZE, limit - len(items))
            page: Page[T] = self._get(path, Page[item], {**params, "limit": size, "offset": offset})  # type: ignore[valid-type]
            items.extend(page.items)
            offset += len(page.items)
            if not page.items or offset >= page.total:
                break
        return items


def _segment(value: str) -> str:
    """One URL path segment (a search id, a space name), percent-encoded; ids that would change the path are refused."""
    if not value or value in (".", ".."):
        raise ValueError(f"id: {value!r} is not a valid identifier")
    return quote(value, safe="")


class Search:
    """A handle on one search of the service. ``info`` is the last state fetched; :meth:`refresh` fetches it again."""

    def __init__(self, client: Client, info: SearchOut) -> None:
        self._client = client
        self._info = info
        self.id = info.id

    def __repr__(self) -> str:
        return f"Search(id={self.id!r}, name={self._info.name!r}, status={self._info.status!r})"

    @property
    def info(self) -> SearchOut:
        return self._info

    @property
    def status(self) -> str:
        """The status at the last fetch (call :meth:`refresh` for the current one)."""
        return self._info.status

    @property
    def name(self) -> str:
        return self._info.name

    def _path(self, rest: str = "") -> str:
        return f"/searches/{_segment(self.id)}{rest}"

    def refresh(self) -> SearchOut:
        self._info = self._client._get_search(self.id)
        return self._info

    def cancel(self) -> SearchOut:
        """Cancel: a queued search at once; a running one stops within seconds (Conflict if it already ended)."""
        self._info = self._client._parse(self._client._request("POST", self._path("/cancel")), SearchOut)
        return self._info

    def retry(self) -> SearchOut:
        """Queue a failed or cancelled search again; it resumes from its last checkpoint."""
        self._info = self._client._parse(self._client._request("POST", self._path("/retry")), SearchOut)
        return self._info

    # ------------------------------------------------------------ results

    def candidates(
        self, sort: CandidateSort = "accuracy", order: Order = "desc", pareto: bool = False, limit: int | None = None
    ) -> list[CandidateOut]:
        """Evaluated candidates, best first by default; ``limit=None`` returns all of them."""
        params = {"sort": sort, "order": order, "pareto": "true" if pareto else None}
        return self._client._paged(self._path("/candidates"), params, CandidateOut, limit)

    def pareto(self) -> list[CandidateOut]:
        """The Pareto front of the search's objectives."""
        return self._client._get(self._path("/pareto"), list[CandidateOut])

    def best(self) -> FinalOut:
        """The retrained winner of a succeeded search (SearchFailed or ResultUnavailable otherwise)."""
        info = self._info if self._info.done else self.refresh()
        return _finals(info)[0]

    def artifacts(self) -> list[ArtifactOut]:
        return self._client._get(self._path("/artifacts"), list[ArtifactOut])

    def download(self, dir: str | os.PathLike[str], *, what: Literal["final", "all"] = "final") -> Path:
        """Download the exported models (``final/``; ``what="all"``: every artifact) into ``dir``.

        Each file streams to a temporary file that is renamed into place once its size and sha256 match; files already
        there intact are skipped. Returns the folder of the first retrained model (``nas.load(folder)`` loads it), or
        ``dir`` itself for ``what="all"`` on a search without one.
        """
        if what not in ("final", "all"):
            raise ValueError(f"what: {what!r} is not allowed; allowed: 'final', 'all'")
        info = self.refresh()
        if what == "final":
            folder: str | None = _finals(info)[0].path
        else:
            folder = info.result.final[0].path if info.result and info.result.final else None
        chosen = [a for a in self.artifacts() if what == "all" or a.name.startswith("final/")]
        if what == "final" and not chosen:
            raise ResultUnavailable(f"search {self.id} succeeded but the service lists no artifacts under final/")
        if folder and not any(a.name.startswith(folder.rstrip("/") + "/") for a in chosen):
            raise ResultUnavailable(f"search {self.id}: its model folder {folder} has no artifacts on the service")
        root = Path(dir)
        targets = [(a, _target(root, a.name)) for a in chosen]  # check every name before writing anything
        for artifact, target in targets:
            self._download_one(artifact, target)
        return root / PurePosixPath(folder) if folder else root

    def _download_one(self, artifact: ArtifactOut, target: Path) -> None:
        if target.is_file() and target.stat().st_size == artifact.size and _sha256(target) == artifact.sha256:
            log.debug("%s is already intact; skipped", target)
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        client = self._client
        url = client._url(self._path(f"/artifacts/{artifact.id}"))
        headers = client._headers({"Accept": "application/octet-stream"})
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.part")

        def once() -> tuple[int, str]:
            digest, size = hashlib.sha256(), 0
            with client._http.stream("GET", url, headers=headers) as response:
                if _retryable(response.status_code):
                    response.read()
                    raise _RetryableStatus(response)
                if response.is_error:
                    response.read()
                    raise client._error(response)
                with open(tmp, "wb") as f:
                    for chunk in response.iter_bytes(1 << 20):
                        f.write(chunk)
                        digest.update(chunk)
                        size += len(chunk)
            return size, digest.hexdigest()

        try:
            size, sha = client._retrying(f"GET {url}", once)
            if size != artifact.size or sha != artifact.sha256:
                raise DownloadError(
                    f"artifact {artifact.name}: received {size} bytes with sha256 {sha}, expected "
                    f"{artifact.size} bytes with sha256 {artifact.sha256}; nothing was kept, try again"
                )
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)

    # ------------------------------------------------------------ events and waiting

    def events(self, follow: bool = True, after: int = 0) -> Iterator[EventOut]:
        """Progress events with an id above ``after``.

        ``follow=True`` streams them live (server-sent events) until the search ends, reconnecting with
        ``Last-Event-ID`` after a dropped connection; ``follow=False`` returns the stored ones and stops.
        """
        if follow:
            return self._stream(after, None, None)
        return self._stored_events(after)

    def _stored_events(self, after: int) -> Iterator[EventOut]:
        while True:
            params = {"after": after, "limit": PAGE_SIZE}
            batch: list[EventOut] = self._client._get(self._path("/events"), list[EventOut], params)
            batch = [e for e in batch if e.id > after]
            if not batch:
                return
            yield from batch
            after = batch[-1].id

    def _stream(self, after: int, deadline: float | None, timeout: float | None) -> Iterator[EventOut]:
        """Follow the SSE stream until its ``end`` event (which refreshes ``info``), resuming after drops."""
        client = self._client
        url = client._url(self._path("/events/stream"))
        last_id = after
        failures = 0
        reconnect_s: float | None = None
        while True:
            kwargs: dict[str, Any] = {}
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise self._wait_timeout(timeout)
                if remaining < client.timeout:
                    kwargs["timeout"] = httpx.Timeout(client.timeout, read=remaining)
            headers = client._headers({"Last-Event-ID": str(last_id)} if last_id else None)
            received = False
            cause: Exception | str = "the event stream closed before its end event"
            try:
                with connect_sse(client._http, "GET", url, headers=headers, **kwargs) as source:
                    response = source.response
                    if response.is_error:
                        response.read()
                        if not _retryable(response.status_code):
                            raise client._error(response)
                        raise _RetryableStatus(response)
                    for sse in source.iter_sse():
                        if sse.retry is not None:
                            reconnect_s = sse.retry / 1000
                        if sse.event == "end":
                            self._info = _validate(SearchOut, sse.data, f"the end event of {url}")
                            return
                        if not sse.data:
                            continue
                        event: EventOut = _validate(EventOut, sse.data, f"an event of {url}")
                        if event.id <= last_id:
                            continue  # already seen before a reconnect
                        last_id, received, failures = event.id, True, 0
                        yield event
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
                if failures > client.retries:
                    if isinstance(cause, _RetryableStatus):
                        raise client._error(cause.response) from None
                    raise ConnectionFailed(client.url, cause, failures)
            if deadline is not None and time.monotonic() >= deadline:
                raise self._wait_timeout(timeout)
            delay = max(reconnect_s or 0.0, client._delay(failures - 1) if failures else 0.0)
            log.info("event stream of %s: %s; reconnecting after event %d in %.1f s", self.id, cause, last_id, delay)
            time.sleep(delay)

    def wait(
        self,
        progress: bool = False,
        timeout: float | None = None,
        poll: float = 1.0,
        *,
        raise_on_failure: bool = True,
    ) -> SearchOut:
        """Block until the search ends and return its final state.

        Follows the live event stream (falling back to polling every ``poll`` seconds where streaming does not work).
        ``progress=True`` draws a progress bar (phase, step/total, key metrics) on stderr. Raises SearchFailed if the
        search ends failed or cancelled (unless ``raise_on_failure=False``) and WaitTimeout after ``timeout`` seconds.
        """
        if timeout is not None and timeout < 0:
            raise ValueError(f"timeout: must be >= 0 seconds or None, got {timeout}")
        if poll <= 0:
            raise ValueError(f"poll: must be > 0 seconds, got {poll}")
        deadline = None if timeout is None else time.monotonic() + timeout
        view = _view(self, progress)
        with view:
            info = self.refresh()
            view.status(info)
            if not info.done:
                try:
                    for event in self._stream(0, deadline, timeout):
                        view.emit(event)
                    info = self._info
                except (UnexpectedResponse, ConnectionFailed, NotFound, ServerError) as exc:
                    log.warning("following search %s: %s; polling every %g s instead", self.id, exc, poll)
                    info = self._poll(view, deadline, timeout, poll)
            view.status(info)
        if raise_on_failure and info.status != "succeeded":
            raise SearchFailed(info)
        return info

    def _poll(self, view: Any, deadline: float | None, timeout: float | None, poll: float) -> SearchOut:
        while True:
            info = self.refresh()
            if view.enabled:
                for event in self._stored_events(view.last_id):
                    view.emit(event)
            view.status(info)
            if info.done:
                return info
            pause = poll
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise self._wait_timeout(timeout)
                pause = min(poll, remaining)
            time.sleep(pause)

    def _wait_timeout(self, timeout: float | None) -> WaitTimeout:
        return WaitTimeout(
            f"search {self.id} is still {self._info.status} after {timeout:g} s; it keeps going on the service: "
            "wait() again, or cancel() it"
        )


def _view(search: Search, progress: bool) -> Any:
    if progress:
        from nas.client.progress import ProgressView  # rich, imported only when asked for

        return ProgressView(search)
    from nas.client.progress import NullView

    return NullView()


def _finals(info: SearchOut) -> list[FinalOut]:
    if info.status in ("failed", "cancelled"):
        raise SearchFailed(info)
    if info.status != "succeeded":
        raise ResultUnavailable(f"search {info.id} is {info.status}; wait for it to finish first (search.wait())")
    if info.result is None or not info.result.final:
        raise ResultUnavailable(
            f"search {info.id} succeeded without a retrained model (final.enabled is off in its spec); "
            "use candidates() or pareto() for its architectures"
        )
    return info.result.final


def _target(root: Path, name: str) -> Path:
    """Where artifact ``name`` goes below ``root``; names that would escape it are refused."""
    path = PurePosixPath(name)
    if not name or path.is_absolute() or "\\" in name or any(part in ("..", "") for part in path.parts):
        raise UnexpectedResponse(f"artifact name {name!r} is not a relative path inside the search; refusing it")
    return root.joinpath(*path.parts)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
