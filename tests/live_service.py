"""A real nas service for the SDK and CLI tests: the FastAPI app of ``api.app`` served by uvicorn in a thread.

The app runs on a migrated SQLite database with no executor and no scheduler, so nothing runs a search: the tests
play the runner's part by writing through the store (``LiveService.finish``, ``add_events``, ``add_artifact``, ...),
and the app serves what they wrote over HTTP, server-sent events included.

``Proxy`` is an httpx transport between the SDK and that server: it records every request and, for the faults a
working service cannot produce (connection refused, 5xx, 429, dropped or malformed answers), answers some requests
itself before or instead of forwarding them. Everything else is answered by the real app.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy import update

from api.app import create_app
from nas.events import Event
from service.settings import Settings
from service.store import Database, repo, upgrade
from service.store.models import Artifact, Search

MAX_BODY_BYTES = 64_000  # small, so that a test can send a body the service refuses with 413

# A spec the service accepts (tests.toy_space registers 'toyconv'; plan_search needs no data).
SPEC: dict[str, Any] = {
    "name": "toy",
    "device": "cpu",
    "space": {"name": "toyconv", "macro": {"width": 4}},
    "dataset": {"name": "digits", "image_size": 8, "limit": 120},
    "strategy": {"name": "spos", "options": {"epochs": 1}},
}
FINAL_DIR = "final/1-abc123"
RESULT: dict[str, Any] = {
    "elapsed_s": 12.5,
    "best": {"hash": "abc123"},
    "final": [{"arch": {"hash": "abc123"}, "metrics": {"test_accuracy": 0.91}, "path": FINAL_DIR}],
}
ERRORS = {"failed": "RuntimeError: CUDA out of memory", "cancelled": "cancelled by its owner"}

_names = itertools.count(1)


@dataclass
class LiveService:
    """A running service at ``url`` and its database; the methods act as its users and its runners would."""

    url: str
    db: Database
    data_dir: Path
    dataset_root: Path

    # ------------------------------------------------------------ users

    def new_user(self, prefix: str = "user", *, admin: bool = False) -> tuple[str, str]:
        """A new user of its own (so that tests sharing the service do not see each other's searches): (name, token)."""
        name = f"{prefix}{next(_names)}"
        with self.db.session() as s:
            token = repo.create_token(s, repo.create_user(s, name, admin=admin))
        return name, token

    # ------------------------------------------------------------ searches, as the runner would change them

    def create_search(
        self, owner: str, spec: dict[str, Any] | None = None, *, status: str = "queued", **values: Any
    ) -> str:
        """Store a search of ``owner`` (as the API does on a submit), then give it ``status`` and ``values``."""
        with self.db.session() as s:
            row, _ = repo.create_search(s, repo.get_user(s, owner), spec or SPEC)
            search_id = row.id
        self.set_search(search_id, status=status, **values)
        return search_id

    def create_searches(self, owner: str, specs: Sequence[dict[str, Any]], statuses: Sequence[str]) -> list[str]:
        """Many searches in one transaction, oldest first (one second apart, so the listing order is certain)."""
        start = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
        ids = []
        with self.db.session() as s:
            user = repo.get_user(s, owner)
            for i, (spec, status) in enumerate(zip(specs, statuses, strict=True)):
                row, _ = repo.create_search(s, user, spec)
                row.status = status
                row.created_at = start + dt.timedelta(seconds=i)
                ids.append(row.id)
        return ids

    def set_search(self, search_id: str, **values: Any) -> None:
        if values:
            with self.db.session() as s:
                s.execute(update(Search).where(Search.id == search_id).values(**values))

    def start(self, search_id: str, **values: Any) -> None:
        """The scheduler started it: running, attempt 1, with an output folder."""
        output = self.data_dir / "runs" / search_id
        output.mkdir(parents=True, exist_ok=True)
        self.set_search(search_id, status="running", attempts=1, output_dir=str(output), **values)

    def finish(self, search_id: str, status: str, **values: Any) -> None:
        """It ended: ``succeeded`` with RESULT, or ``failed``/``cancelled`` with an error (unless ``values`` say)."""
        if status == "succeeded":
            values.setdefault("result", RESULT)
        elif status in ERRORS:
            values.setdefault("error", ERRORS[status])
        self.set_search(search_id, status=status, finished_at=dt.datetime.now(dt.UTC), **values)

    def add_events(self, search_id: str, events: Sequence[Event], attempt: int = 1) -> list[int]:
        """Store events as the runner does; their ids (given by the database, increasing)."""
        with self.db.session() as s:
            before = self.event_ids(search_id)
            repo.add_events(s, search_id, attempt, events)
        return [i for i in self.event_ids(search_id) if i not in before]

    def event_ids(self, search_id: str) -> list[int]:
        with self.db.session() as s:
            return [e.id for e in repo.list_events(s, search_id, limit=1_000_000)]

    def add_candidates(self, search_id: str, candidates: Sequence[dict[str, Any]]) -> None:
        with self.db.session() as s:
            repo.upsert_candidates(s, search_id, candidates)

    def output_dir(self, search_id: str) -> Path:
        with self.db.session() as s:
            folder = repo.get_search(s, search_id).output_dir
        if folder is None:
            self.start(search_id)
            return self.output_dir(search_id)
        return Path(folder)

    def add_artifact(self, search_id: str, name: str, data: bytes, kind: str = "model") -> None:
        """Write ``name`` into the search's folder and register it (size and sha256 of ``data``)."""
        path = self.output_dir(search_id) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        with self.db.session() as s:
            repo.register_artifacts(s, search_id, self.output_dir(search_id), [path], kind)

    def add_artifact_row(self, search_id: str, name: str, data: bytes) -> None:
        """Only the database row of an artifact, whatever its name (as a buggy or hostile runner could write it)."""
        with self.db.session() as s:
            digest = hashlib.sha256(data).hexdigest()
            s.add(Artifact(search_id=search_id, name=name, kind="log", size=len(data), sha256=digest))

    def overwrite_artifact(self, search_id: str, name: str, data: bytes) -> None:
        """Change the file on disk but not its registered size and sha256: what the service sends is corrupt."""
        (self.output_dir(search_id) / name).write_bytes(data)


def event(i: int, type_: str = "progress", **values: Any) -> Event:
    """Event ``i`` of a made-up supernet phase; ``type_`` may be a type this version does not know."""
    data: dict[str, Any] = {"phase": "supernet", "step": i, "total": 10, "metrics": {"loss": 1.0 / i},
                            "message": None, "data": {}, "time": 1_700_000_000.0 + i, **values}  # fmt: skip
    return Event.model_construct(**{**data, "type": type_})  # a str: unknown types are allowed on purpose


def later(delay: float, fn: Callable[[], Any]) -> threading.Thread:
    """Run ``fn`` in a thread after ``delay`` seconds (a runner making progress while a client waits)."""

    def run() -> None:
        time.sleep(delay)
        fn()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@contextmanager
def uvicorn_in_thread(config: uvicorn.Config, start_timeout: float = 30.0) -> Iterator[str]:
    """Serve ``config`` (give it ``port=0``: a free port) in a daemon thread; yields ``http://HOST:PORT`` once it
    listens, and stops the server on exit."""
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + start_timeout
        while not (server.started and server.servers):
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        host, port = server.servers[0].sockets[0].getsockname()[:2]
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@contextmanager
def serve(data_dir: Path) -> Iterator[LiveService]:
    """The API app on a fresh SQLite database in ``data_dir``, served on a free port of 127.0.0.1 until exit."""
    root = data_dir / "datasets"
    root.mkdir(parents=True, exist_ok=True)
    db = Database(f"sqlite:///{data_dir / 'nas.db'}")
    upgrade(db.engine)
    settings = Settings(data_dir=data_dir, dataset_roots=[root], scheduler=False, max_body_bytes=MAX_BODY_BYTES)
    app = create_app(settings, db=db)
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", access_log=False,
                            timeout_graceful_shutdown=2)  # fmt: skip
    try:
        with uvicorn_in_thread(config) as url:
            yield LiveService(url, db, data_dir, root)
    finally:
        db.dispose()


# ---------------------------------------------------------------- between the SDK and the service

Fault = str | int | tuple[int, dict[str, str]]
Handler = Callable[[httpx.Request, re.Match[str], Callable[[], httpx.Response]], httpx.Response]


@dataclass
class Proxy(httpx.BaseTransport):
    """Records the requests to the live service and injects what it cannot produce.

    ``failures`` are served first, one per request, instead of forwarding it: "connect" (connection refused),
    "read" (the request reaches the service, its answer is lost), a status (a problem document with that status), or
    (status, headers). ``routes`` override a path: {(method, regex on the URL path): handler(request, match,
    forward)}, where ``forward()`` gets the real answer.
    """

    failures: list[Fault] = field(default_factory=list)
    routes: dict[tuple[str, str], Handler] = field(default_factory=dict)
    requests: list[httpx.Request] = field(default_factory=list)
    times: list[float] = field(default_factory=list)  # time.monotonic() of each request
    upstream: httpx.BaseTransport = field(default_factory=httpx.HTTPTransport)

    def calls(self, method: str, path: str) -> list[httpx.Request]:
        return [r for r in self.requests if r.method == method and r.url.path == path]

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        self.times.append(time.monotonic())

        def forward() -> httpx.Response:
            return self.upstream.handle_request(request)

        if self.failures:
            failure = self.failures.pop(0)
            if failure == "connect":
                raise httpx.ConnectError("[Errno 111] Connection refused", request=request)
            if failure == "read":
                forward().close()
                raise httpx.ReadError("connection reset by peer", request=request)
            status, headers = failure if isinstance(failure, tuple) else (int(failure), {})
            return problem(status, "Service Unavailable", "try again later", headers=headers)
        for (method, pattern), handler in self.routes.items():
            if request.method == method and (m := re.fullmatch(pattern, request.url.path)):
                return handler(request, m, forward)
        return forward()

    def close(self) -> None:
        self.upstream.close()


def problem(status: int, title: str, detail: str, field: str | None = None, **extra: Any) -> httpx.Response:
    """A problem document (RFC 9457) as the service sends them."""
    headers = extra.pop("headers", {})
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, "field": field, **extra}
    return httpx.Response(status, json=body, headers={"content-type": "application/problem+json", **headers})


def sse_response(body: str | Iterator[bytes]) -> httpx.Response:
    content = body.encode() if isinstance(body, str) else body
    return httpx.Response(200, content=content, headers={"content-type": "text/event-stream"})


STREAM = r"/api/v1/searches/([0-9a-f]{32})/events/stream"


def finish_when_followed(
    live: LiveService, proxy: Proxy, status: str, *, events: Sequence[Event] = (), delay: float = 0.3
) -> None:
    """When a client first follows a search's event stream, the 'runner' adds ``events`` and ends it ``status``.

    The client is connected by then: the events and the end reach it live, over the open stream.
    """
    followed: set[str] = set()

    def follow(request: httpx.Request, m: re.Match[str], forward: Callable[[], httpx.Response]) -> httpx.Response:
        search_id = m[1]
        if search_id not in followed:
            followed.add(search_id)

            def finish() -> None:
                if events:
                    live.add_events(search_id, events)
                live.finish(search_id, status)

            later(delay, finish)
        return forward()

    proxy.routes[("GET", STREAM)] = follow


def drop_after_events(response: httpx.Response, events: int) -> httpx.Response:
    """The real event stream, but the connection drops after its first ``events`` events."""

    def body() -> Iterator[bytes]:
        buffer, sent = b"", 0
        try:
            for chunk in response.iter_raw():
                buffer += chunk.replace(b"\r\n", b"\n")
                while b"\n\n" in buffer:
                    block, buffer = buffer.split(b"\n\n", 1)
                    yield block + b"\n\n"
                    sent += b"data:" in block
                    if sent >= events:
                        raise httpx.ReadError("connection reset by peer")
        finally:
            response.close()

    return httpx.Response(response.status_code, headers=response.headers, content=body())


def drop_after_bytes(response: httpx.Response, size: int) -> httpx.Response:
    """The real answer, read in full, but only its first ``size`` bytes arrive before the connection drops."""
    data = response.read()
    response.close()

    def body() -> Iterator[bytes]:
        yield data[:size]
        raise httpx.ReadError("connection reset by peer")

    return httpx.Response(response.status_code, headers={"content-type": "application/octet-stream"}, content=body())


# ---------------------------------------------------------------- fixtures (imported by the test modules that use them)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveService]:
    """One live service per test module."""
    with serve(tmp_path_factory.mktemp("live")) as service:
        yield service


@pytest.fixture
def user(live: LiveService) -> tuple[str, str]:
    """A user of this test alone (name, token): the searches it sees are the test's own."""
    return live.new_user()
