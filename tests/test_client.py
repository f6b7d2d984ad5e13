"""The Python SDK (nas.client) against a fake service on httpx.MockTransport: no server, no torch."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from nas.client import (
    APIError,
    AuthError,
    Client,
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

BASE = "http://nas.test"
TOKEN = "nas_test-token"
SPEC = {
    "name": "toy",
    "device": "cpu",
    "space": {"name": "toyconv", "macro": {"width": 4}},
    "dataset": {"name": "digits", "image_size": 8, "limit": 120},
    "strategy": {"name": "spos", "options": {"epochs": 1}},
}
FINAL_DIR = "final/1-abc123"


def search_json(search_id: str = "s1", status: str = "queued", **extra: Any) -> dict[str, Any]:
    now = "2025-01-01T00:00:00Z"
    data: dict[str, Any] = {
        "id": search_id, "name": "toy", "owner": "alice", "status": status, "priority": 0, "attempts": 0,
        "max_attempts": 3, "cancel_requested": False, "resources": {"cpus": 1.0, "gpus": 0.0}, "spec": SPEC,
        "created_at": now, "updated_at": now,
    }  # fmt: skip
    if status == "succeeded":
        data["result"] = {
            "elapsed_s": 12.5,
            "best": {"hash": "abc123"},
            "final": [{"arch": {"hash": "abc123"}, "metrics": {"test_accuracy": 0.91}, "path": FINAL_DIR}],
        }
    if status in ("failed", "cancelled"):
        data["error"] = "RuntimeError: CUDA out of memory" if status == "failed" else "cancelled by alice"
    data.update(extra)
    return data


def event_json(search_id: str, i: int, type_: str = "progress", **extra: Any) -> dict[str, Any]:
    return {"id": i, "search_id": search_id, "attempt": 1, "type": type_, "phase": "supernet", "step": i,
            "total": 10, "metrics": {"loss": 1.0 / i}, "time": 1_700_000_000.0 + i, **extra}  # fmt: skip


def problem(status: int, title: str, detail: str, field: str | None = None, **extra: Any) -> httpx.Response:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, "field": field, **extra}
    return httpx.Response(status, json=body, headers={"content-type": "application/problem+json"})


def sse_body(events: list[dict[str, Any]], end: dict[str, Any] | None = None) -> str:
    text = ": ping\n\n"  # a comment, as sse-starlette sends to keep the connection alive
    for e in events:
        text += f"id: {e['id']}\nevent: {e['type']}\ndata: {json.dumps(e)}\n\n"
    if end is not None:
        text += f"event: end\ndata: {json.dumps(end)}\n\n"
    return text


def sse_response(body: str | Iterator[bytes]) -> httpx.Response:
    content = body.encode() if isinstance(body, str) else body
    return httpx.Response(200, content=content, headers={"content-type": "text/event-stream"})


class FakeService:
    """Enough of the REST API of nas-service, in memory, to drive the SDK; records every request.

    ``failures`` are served first, one per request: "connect" (connection refused) or an HTTP status.
    ``routes`` override a route: {(method, regex): handler(request, match)}.
    """

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.failures: list[str | int] = []
        self.searches: dict[str, dict[str, Any]] = {}
        self.keys: dict[str, str] = {}
        self.events: dict[str, list[dict[str, Any]]] = {}
        self.candidates: dict[str, list[dict[str, Any]]] = {}
        self.artifacts: dict[str, list[tuple[dict[str, Any], bytes]]] = {}
        self.ends_with: dict[str, str] = {}  # search id -> status it reaches when its event stream is followed
        self.routes: dict[tuple[str, str], Callable[[httpx.Request, re.Match[str]], httpx.Response]] = {}

    def client(self, **kwargs: Any) -> Client:
        kwargs.setdefault("backoff", 0.0)
        return Client(BASE, TOKEN, http=httpx.Client(transport=httpx.MockTransport(self)), **kwargs)

    def add(self, search: dict[str, Any]) -> dict[str, Any]:
        self.searches[search["id"]] = search
        return search

    def calls(self, method: str, path: str) -> list[httpx.Request]:
        return [r for r in self.requests if r.method == method and r.url.path == path]

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        try:
            return self._serve(request)
        except _Problem as p:
            return p.response

    def _serve(self, request: httpx.Request) -> httpx.Response:
        if self.failures:
            failure = self.failures.pop(0)
            if failure == "connect":
                raise httpx.ConnectError("[Errno 111] Connection refused", request=request)
            return problem(int(failure), "Service Unavailable", "try again later")
        for (method, pattern), handler in self.routes.items():
            if request.method == method and (m := re.fullmatch(pattern, request.url.path)):
                return handler(request, m)
        if request.url.path == "/healthz":
            return httpx.Response(200, json={"status": "ok"})
        if request.headers.get("authorization") != f"Bearer {TOKEN}":
            return problem(401, "Unauthorized", "missing or invalid bearer token")
        for method, pattern, handler in self._builtin():
            if request.method == method and (m := re.fullmatch("/api/v1" + pattern, request.url.path)):
                return handler(request, m)
        return problem(404, "Not Found", f"no route {request.url.path}")

    def _builtin(self) -> list[tuple[str, str, Callable[[httpx.Request, re.Match[str]], httpx.Response]]]:
        return [
            ("POST", r"/searches", self._create),
            ("GET", r"/searches", self._list),
            ("GET", r"/searches/(\w+)", lambda r, m: httpx.Response(200, json=self._search(m[1]))),
            ("POST", r"/searches/(\w+)/cancel", self._cancel),
            ("GET", r"/searches/(\w+)/events", self._events),
            ("GET", r"/searches/(\w+)/events/stream", self._stream),
            ("GET", r"/searches/(\w+)/candidates", self._candidates),
            ("GET", r"/searches/(\w+)/artifacts", self._artifact_list),
            ("GET", r"/searches/(\w+)/artifacts/(\d+)", self._artifact),
            ("GET", r"/me", lambda r, m: httpx.Response(200, json={"name": "alice", "is_admin": False})),
        ]

    def _search(self, search_id: str) -> dict[str, Any]:
        if search_id not in self.searches:
            raise _Problem(problem(404, "Not Found", f"no search {search_id!r}", field="search_id"))
        return self.searches[search_id]

    def _create(self, request: httpx.Request, _m: re.Match[str]) -> httpx.Response:
        key = request.headers["idempotency-key"]
        if key in self.keys:
            return httpx.Response(200, json=self.searches[self.keys[key]])
        body = json.loads(request.content)
        search = self.add(search_json(f"s{len(self.searches) + 1}", spec=body["spec"], priority=body["priority"]))
        self.keys[key] = search["id"]
        return httpx.Response(201, json=search, headers={"location": f"/api/v1/searches/{search['id']}"})

    def _list(self, request: httpx.Request, _m: re.Match[str]) -> httpx.Response:
        q = request.url.params
        rows = [s for s in self.searches.values() if not q.get_list("status") or s["status"] in q.get_list("status")]
        rows = [s for s in rows if q.get("name", "") in s["name"]]
        limit, offset = int(q.get("limit", 50)), int(q.get("offset", 0))
        return httpx.Response(
            200, json={"items": rows[offset : offset + limit], "total": len(rows), "limit": limit, "offset": offset}
        )

    def _cancel(self, _r: httpx.Request, m: re.Match[str]) -> httpx.Response:
        search = self._search(m[1])
        if search["status"] in ("succeeded", "failed", "cancelled"):
            return problem(409, "Conflict", f"search {m[1]} is already {search['status']}", field="status")
        search.update(status="cancelled", cancel_requested=True)
        return httpx.Response(202, json=search)

    def _events(self, request: httpx.Request, m: re.Match[str]) -> httpx.Response:
        after, limit = int(request.url.params.get("after", 0)), int(request.url.params.get("limit", 500))
        rows = [e for e in self.events.get(m[1], []) if e["id"] > after][:limit]
        return httpx.Response(200, json=rows)

    def _stream(self, request: httpx.Request, m: re.Match[str]) -> httpx.Response:
        search = self._search(m[1])
        after = int(request.headers.get("last-event-id", 0))
        if m[1] in self.ends_with:
            search.update(status=self.ends_with[m[1]])
            search.update({k: v for k, v in search_json(m[1], search["status"]).items() if k in ("result", "error")})
        events = [e for e in self.events.get(m[1], []) if e["id"] > after]
        done = search["status"] in ("succeeded", "failed", "cancelled")
        return sse_response(sse_body(events, search if done else None))

    def _candidates(self, request: httpx.Request, m: re.Match[str]) -> httpx.Response:
        q = request.url.params
        rows = self.candidates.get(m[1], [])
        rows = sorted(rows, key=lambda c: c[q.get("sort", "accuracy")], reverse=q.get("order", "desc") == "desc")
        if q.get("pareto") == "true":
            rows = [c for c in rows if c["pareto"]]
        limit, offset = int(q.get("limit", 50)), int(q.get("offset", 0))
        return httpx.Response(
            200, json={"items": rows[offset : offset + limit], "total": len(rows), "limit": limit, "offset": offset}
        )

    def _artifact_list(self, _r: httpx.Request, m: re.Match[str]) -> httpx.Response:
        return httpx.Response(200, json=[meta for meta, _ in self.artifacts.get(m[1], [])])

    def _artifact(self, _r: httpx.Request, m: re.Match[str]) -> httpx.Response:
        for meta, data in self.artifacts.get(m[1], []):
            if meta["id"] == int(m[2]):
                return httpx.Response(200, content=data, headers={"content-type": "application/octet-stream"})
        return problem(404, "Not Found", f"no artifact {m[2]}", field="artifact_id")

    def add_artifact(self, search_id: str, name: str, data: bytes, *, served: bytes | None = None) -> None:
        """An artifact whose listing describes ``data``; ``served`` (if given) is what the download returns instead."""
        rows = self.artifacts.setdefault(search_id, [])
        meta = {"id": len(rows) + 1, "name": name, "kind": "model", "size": len(data),
                "sha256": hashlib.sha256(data).hexdigest()}  # fmt: skip
        rows.append((meta, data if served is None else served))


class _Problem(Exception):
    def __init__(self, response: httpx.Response) -> None:
        self.response = response


@pytest.fixture
def service() -> FakeService:
    return FakeService()


@pytest.fixture
def client(service: FakeService) -> Iterator[Client]:
    with service.client() as c:
        yield c


# ---------------------------------------------------------------- import and construction


def test_import_and_use_without_torch_ray_or_server_libraries(tmp_path: Path) -> None:
    """`import nas.client` and a whole submit/wait round trip pull in none of the heavy or server-side packages."""
    code = f"""
import sys, json, httpx
import nas.client
from nas.client import Client
spec = {SPEC!r}
end = {json.dumps(search_json("s1", "succeeded"))!r}
def handler(request):
    if request.url.path.endswith("/events/stream"):
        body = "event: end\\ndata: " + end + "\\n\\n"
        return httpx.Response(200, content=body.encode(), headers={{"content-type": "text/event-stream"}})
    data = json.loads(end)
    data["status"] = "queued" if request.method == "POST" else "running"
    return httpx.Response(201 if request.method == "POST" else 200, json=data)
c = Client("http://x", "t", http=httpx.Client(transport=httpx.MockTransport(handler)))
s = c.submit(spec)
assert s.wait().status == "succeeded"
bad = sorted(m for m in ("torch", "ray", "fastapi", "sqlalchemy", "pydantic_settings", "numpy", "starlette")
             if m in sys.modules)
print(json.dumps(bad))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parents[1])
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []


def test_defaults_come_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("NAS_URL", "http://remote:9000/")
    monkeypatch.delenv("NAS_TOKEN", raising=False)
    monkeypatch.setenv("NAS_DATA_DIR", str(tmp_path))
    (tmp_path / "admin.token").write_text("nas_from-file\n")
    with Client() as c:
        assert (c.url, c.token) == ("http://remote:9000", "nas_from-file")
    monkeypatch.setenv("NAS_TOKEN", "nas_from-env")
    with Client("http://other/api/v1") as c:
        assert (c.url, c.token) == ("http://other", "nas_from-env")
        assert "nas_from-env" not in repr(c)


# ---------------------------------------------------------------- retries and errors


def test_submit_retries_connection_errors_and_503_with_one_idempotency_key(
    service: FakeService, client: Client
) -> None:
    service.failures = ["connect", 503, "connect"]
    search = client.submit(SPEC, priority=5)
    posts = service.calls("POST", "/api/v1/searches")
    assert len(posts) == 4
    assert len({r.headers["idempotency-key"] for r in posts}) == 1
    assert len(service.searches) == 1 and search.id == "s1" and search.info.priority == 5
    body = json.loads(posts[-1].content)
    assert body["spec"]["space"] == {"name": "toyconv", "macro": {"width": 4}}
    assert posts[-1].headers["authorization"] == f"Bearer {TOKEN}"


def test_replayed_submission_returns_the_same_search(service: FakeService, client: Client) -> None:
    first = client.submit(SPEC, idempotency_key="k-1")
    again = client.submit(SPEC, idempotency_key="k-1")
    other = client.submit(SPEC)
    assert first.id == again.id != other.id
    assert len(service.searches) == 2


def test_lost_response_is_retried_without_a_second_search(service: FakeService) -> None:
    """The server stores the search but the answer is lost: the retry (same key) gets that search back."""
    state = {"dropped": False}

    def flaky(request: httpx.Request) -> httpx.Response:
        response = service(request)
        if request.method == "POST" and not state["dropped"]:
            state["dropped"] = True
            raise httpx.ReadError("connection reset by peer", request=request)
        return response

    with Client(BASE, TOKEN, backoff=0, http=httpx.Client(transport=httpx.MockTransport(flaky))) as c:
        search = c.submit(SPEC)
    assert len(service.searches) == 1 and search.id == "s1"


def test_connection_failed_after_retries_names_url_and_remedy(service: FakeService) -> None:
    service.failures = ["connect"] * 10
    with service.client(retries=2) as c, pytest.raises(ConnectionFailed) as info:
        c.search("s1")
    assert len(service.requests) == 3
    message = str(info.value)
    assert BASE in message and "after 3 attempts" in message and "nas up" in message and "NAS_URL" in message


def test_persistent_5xx_becomes_server_error(service: FakeService) -> None:
    service.failures = [500] * 3
    with service.client(retries=2) as c, pytest.raises(ServerError) as info:
        c.me()
    assert info.value.status == 500 and "server error 500 on GET" in str(info.value)
    assert len(service.requests) == 3


def test_retry_after_header_is_honoured(service: FakeService) -> None:
    calls: list[float] = []

    def limited(request: httpx.Request) -> httpx.Response:
        calls.append(time.monotonic())
        if len(calls) == 1:
            return httpx.Response(
                429, json={"title": "Too Many Requests", "status": 429}, headers={"retry-after": "0.2"}
            )
        return service(request)

    with Client(BASE, TOKEN, backoff=0, http=httpx.Client(transport=httpx.MockTransport(limited))) as c:
        assert c.me().name == "alice"
    assert calls[1] - calls[0] >= 0.19


@pytest.mark.parametrize(
    ("response", "cls", "needles"),
    [
        (problem(422, "Unprocessable Content", "dataset 'imagefolder' needs 'path'", field="spec.dataset.path"),
         InvalidRequest, ["spec.dataset.path: dataset 'imagefolder' needs 'path'"]),
        (problem(422, "Invalid", "2 errors", errors=[{"field": "priority", "message": "must be <= 100"},
                                                     {"field": "spec.seed", "message": "must be >= 0"}]),
         InvalidRequest, ["priority: must be <= 100; spec.seed: must be >= 0"]),
        (httpx.Response(422, json={"detail": [{"loc": ["body", "spec", "name"], "msg": "field required"}]}),
         InvalidRequest, ["spec.name: field required"]),
        (problem(413, "Content Too Large", "the body is larger than 1000000 bytes"), InvalidRequest, ["1000000"]),
        (problem(401, "Unauthorized", "missing or invalid bearer token"), AuthError, ["NAS_TOKEN", "admin.token"]),
        (problem(403, "Forbidden", "admins only"), AuthError, ["forbidden: admins only"]),
        (problem(404, "Not Found", "no search 'zz'", field="search_id"), NotFound, ["search_id: no search 'zz'"]),
        (problem(409, "Conflict", "search s1 is already succeeded", field="status"), Conflict, ["status: search s1"]),
        (httpx.Response(418, text="I'm a teapot"), APIError, ["I'm a teapot"]),
    ],
)  # fmt: skip
def test_error_statuses_map_to_exceptions_with_clear_messages(
    service: FakeService, client: Client, response: httpx.Response, cls: type[APIError], needles: list[str]
) -> None:
    service.routes[("POST", r"/api/v1/searches")] = lambda r, m: response
    with pytest.raises(cls) as info:
        client.submit(SPEC)
    assert type(info.value) is cls
    assert info.value.status == response.status_code and info.value.method == "POST"
    assert info.value.url == f"{BASE}/api/v1/searches"
    for needle in needles:
        assert needle in str(info.value)
    assert len(service.requests) == 1  # 4xx are not retried


def test_wrong_token_is_an_auth_error(service: FakeService) -> None:
    with (
        Client(BASE, "nas_wrong", backoff=0, http=httpx.Client(transport=httpx.MockTransport(service))) as c,
        pytest.raises(AuthError, match="token: missing or invalid bearer token"),
    ):
        c.me()


def test_an_answer_that_is_not_the_api_is_unexpected(service: FakeService, client: Client) -> None:
    service.routes[("GET", r"/api/v1/me")] = lambda r, m: httpx.Response(200, text="<html>login</html>")
    with pytest.raises(UnexpectedResponse, match="not a valid UserOut"):
        client.me()


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ({**SPEC, "dataset": {"name": "imagefolder"}}, "spec.dataset.path: dataset 'imagefolder' needs 'path'"),
        ({**SPEC, "colour": "red"}, "spec.colour: unknown field"),
        ("no/such/spec.yaml", "spec: file 'no/such/spec.yaml' does not exist"),
    ],
)
def test_invalid_spec_is_refused_before_sending(service: FakeService, client: Client, spec: Any, needle: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        client.submit(spec)
    assert str(info.value).startswith(needle) and info.value.status == 422
    assert service.requests == []


def test_submit_reads_yaml_and_json_files(service: FakeService, client: Client, tmp_path: Path) -> None:
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(SPEC))
    (tmp_path / "spec.json").write_text(json.dumps({**SPEC, "name": "from-json"}))
    client.submit(tmp_path / "spec.yaml")
    client.submit(str(tmp_path / "spec.json"), max_attempts=2)
    bodies = [json.loads(r.content) for r in service.calls("POST", "/api/v1/searches")]
    assert [b["spec"]["name"] for b in bodies] == ["toy", "from-json"]
    assert "max_attempts" not in bodies[0] and bodies[1]["max_attempts"] == 2
    with pytest.raises(InvalidRequest, match="priority"):
        client.submit(SPEC, priority=1000)


def test_health_is_a_bool(service: FakeService, client: Client) -> None:
    assert client.health() is True
    service.failures = ["connect"]
    assert client.health() is False
    assert len(service.requests) == 2  # health checks are not retried


# ---------------------------------------------------------------- lists and pagination


def test_searches_pages_through_with_filters(service: FakeService, client: Client) -> None:
    for i in range(250):
        service.add(search_json(f"s{i}", "running" if i % 2 else "queued"))
    everything = client.searches(limit=None)
    assert [s.id for s in everything] == [f"s{i}" for i in range(250)]
    pages = service.calls("GET", "/api/v1/searches")
    assert [(r.url.params["limit"], r.url.params["offset"]) for r in pages] == [("100", "0"), ("100", "100"),
                                                                                ("100", "200")]  # fmt: skip
    service.requests.clear()
    running = client.searches(status="running", limit=120)
    assert len(running) == 120 and {s.status for s in running} == {"running"}
    assert [r.url.params["limit"] for r in service.requests] == ["100", "20"]
    service.requests.clear()
    both = client.searches(status=["queued", "running"], name="toy", limit=5)
    assert len(both) == 5 and service.requests[0].url.params.get_list("status") == ["queued", "running"]
    assert service.requests[0].url.params["sort"] == "created_at"
    with pytest.raises(ValueError, match="limit"):
        client.searches(limit=0)


def test_candidates_and_pareto(service: FakeService, client: Client) -> None:
    service.add(search_json("s1", "succeeded"))
    service.candidates["s1"] = [
        {"arch_hash": f"h{i}", "arch": {"hash": f"h{i}"}, "accuracy": i / 200, "params": 1000.0 - i, "macs": None,
         "latency_ms": None, "metrics": {"accuracy": i / 200}, "feasible": True, "pareto": i % 50 == 0}
        for i in range(130)
    ]  # fmt: skip
    search = client.search("s1")
    best_first = search.candidates()
    assert len(best_first) == 130 and best_first[0].arch_hash == "h129" and best_first[-1].arch_hash == "h0"
    smallest = search.candidates(sort="params", order="asc", limit=3)
    assert [c.arch_hash for c in smallest] == ["h129", "h128", "h127"]
    assert [c.arch_hash for c in search.candidates(pareto=True)] == ["h100", "h50", "h0"]
    service.routes[("GET", r"/api/v1/searches/s1/pareto")] = lambda r, m: httpx.Response(
        200, json=[c for c in service.candidates["s1"] if c["pareto"]]
    )
    assert [c.arch_hash for c in search.pareto()] == ["h0", "h50", "h100"]


def test_stored_events_page_until_empty(service: FakeService, client: Client) -> None:
    service.add(search_json("s1", "running"))
    service.events["s1"] = [event_json("s1", i) for i in range(1, 251)]
    events = list(client.search("s1").events(follow=False))
    assert [e.id for e in events] == list(range(1, 251))
    afters = [r.url.params["after"] for r in service.calls("GET", "/api/v1/searches/s1/events")]
    assert afters == ["0", "100", "200", "250"]
    assert [e.id for e in client.search("s1").events(follow=False, after=248)] == [249, 250]


def test_not_found_and_conflict_on_handles(service: FakeService, client: Client) -> None:
    with pytest.raises(NotFound, match="search_id: no search 'nope'"):
        client.search("nope")
    service.add(search_json("s1", "queued"))
    search = client.search("s1")
    assert search.cancel().status == "cancelled" and search.status == "cancelled"
    with pytest.raises(Conflict, match="status: search s1 is already cancelled"):
        search.cancel()


# ---------------------------------------------------------------- live events and waiting


def test_events_follow_the_stream_and_reconnect_with_last_event_id(service: FakeService, client: Client) -> None:
    service.add(search_json("s1", "running"))
    evs = [event_json("s1", i) for i in range(1, 5)]
    seen_ids: list[str | None] = []

    def stream(request: httpx.Request, _m: re.Match[str]) -> httpx.Response:
        seen_ids.append(request.headers.get("last-event-id"))
        if len(seen_ids) == 1:

            def dropped() -> Iterator[bytes]:
                yield sse_body(evs[:2]).encode()
                raise httpx.ReadError("connection reset by peer")

            return sse_response(dropped())
        if len(seen_ids) == 2:
            return problem(503, "Service Unavailable", "restarting")
        return sse_response(sse_body(evs[1:], search_json("s1", "succeeded")))  # replays event 2: skipped

    service.routes[("GET", r"/api/v1/searches/s1/events/stream")] = stream
    search = client.search("s1")
    got = list(search.events())
    assert [e.id for e in got] == [1, 2, 3, 4]
    assert got[0].metrics == {"loss": 1.0} and got[0].phase == "supernet"
    assert seen_ids == [None, "2", "2"]
    assert search.status == "succeeded"  # the end event carries the final state
    stream_req = service.calls("GET", "/api/v1/searches/s1/events/stream")[0]
    assert stream_req.headers["accept"] == "text/event-stream"


def test_events_stream_gives_up_after_retries(service: FakeService) -> None:
    service.add(search_json("s1", "running"))
    service.routes[("GET", r"/api/v1/searches/s1/events/stream")] = lambda r, m: sse_response("")
    with service.client(retries=2) as c:
        search = c.search("s1")
        with pytest.raises(ConnectionFailed, match="closed before its end event"):
            list(search.events())
    assert len(service.calls("GET", "/api/v1/searches/s1/events/stream")) == 3


def test_wait_success_follows_the_stream(service: FakeService, client: Client) -> None:
    service.add(search_json("s1", "running"))
    service.events["s1"] = [event_json("s1", i) for i in range(1, 4)]
    service.ends_with["s1"] = "succeeded"
    search = client.search("s1")
    info = search.wait()
    assert info.status == "succeeded" and info.result is not None and info.result.final[0].path == FINAL_DIR
    assert search.best().metrics == {"test_accuracy": 0.91}
    assert len(service.calls("GET", "/api/v1/searches/s1/events/stream")) == 1


def test_wait_with_progress_draws_on_stderr(
    service: FakeService, client: Client, capsys: pytest.CaptureFixture[str]
) -> None:
    service.add(search_json("s1", "running"))
    service.events["s1"] = [
        event_json("s1", 1, "phase_started", step=None, total=10),
        event_json("s1", 2, "epoch", step=1, metrics={"val_accuracy": 0.5}),
        event_json("s1", 3, "some_future_type"),  # unknown to this version: ignored
    ]
    service.ends_with["s1"] = "succeeded"
    assert client.search("s1").wait(progress=True).status == "succeeded"
    captured = capsys.readouterr()
    assert "supernet epoch 1/10" in captured.err and "val_accuracy=0.5000" in captured.err
    assert "s1 (toy): running" in captured.err and "s1 (toy): succeeded" in captured.err
    assert captured.out == ""


@pytest.mark.parametrize("status", ["failed", "cancelled"])
def test_wait_raises_search_failed_with_the_error(service: FakeService, client: Client, status: str) -> None:
    service.add(search_json("s1", "running"))
    service.ends_with["s1"] = status
    search = client.search("s1")
    with pytest.raises(SearchFailed) as info:
        search.wait()
    assert info.value.search.status == status and info.value.error
    assert f"search s1 ('toy') {status}: {info.value.error}" == str(info.value)
    assert search.wait(raise_on_failure=False).status == status
    with pytest.raises(SearchFailed):
        search.best()


def test_wait_falls_back_to_polling_without_a_stream(service: FakeService, client: Client) -> None:
    service.add(search_json("s1", "running"))
    service.routes[("GET", r"/api/v1/searches/s1/events/stream")] = lambda r, m: httpx.Response(
        200, json={"detail": "no streaming behind this proxy"}
    )
    gets = {"n": 0}

    def get(request: httpx.Request, _m: re.Match[str]) -> httpx.Response:
        gets["n"] += 1
        return httpx.Response(200, json=search_json("s1", "succeeded" if gets["n"] >= 4 else "running"))

    service.routes[("GET", r"/api/v1/searches/s1")] = get
    search = client.search("s1")
    assert search.wait(poll=0.01).status == "succeeded"
    assert gets["n"] == 4


def test_wait_timeout_while_streaming(service: FakeService, client: Client) -> None:
    service.add(search_json("s1", "running"))

    def quiet(request: httpx.Request, _m: re.Match[str]) -> httpx.Response:
        def body() -> Iterator[bytes]:
            yield b": ping\n\n"
            time.sleep(0.15)
            raise httpx.ReadTimeout("timed out")

        return sse_response(body())

    service.routes[("GET", r"/api/v1/searches/s1/events/stream")] = quiet
    search = client.search("s1")
    started = time.monotonic()
    with pytest.raises(WaitTimeout, match=r"still running after 0\.1 s") as info:
        search.wait(timeout=0.1)
    assert isinstance(info.value, TimeoutError) and time.monotonic() - started < 2


def test_wait_timeout_while_polling(service: FakeService, client: Client) -> None:
    service.add(search_json("s1", "queued"))
    service.routes[("GET", r"/api/v1/searches/s1/events/stream")] = lambda r, m: problem(404, "Not Found", "no")
    with pytest.raises(WaitTimeout, match="still queued"):
        client.search("s1").wait(timeout=0.1, poll=0.02)


def test_best_needs_a_finished_search_with_a_final_model(service: FakeService, client: Client) -> None:
    service.add(search_json("s1", "running"))
    with pytest.raises(ResultUnavailable, match="s1 is running; wait"):
        client.search("s1").best()
    service.add(search_json("s2", "succeeded", result={"elapsed_s": 1.0, "best": None, "final": []}))
    with pytest.raises(ResultUnavailable, match="without a retrained model"):
        client.search("s2").best()


# ---------------------------------------------------------------- downloads


def _finished_with_artifacts(service: FakeService, *, corrupt: bool = False) -> dict[str, bytes]:
    service.add(search_json("s1", "succeeded"))
    files = {
        f"{FINAL_DIR}/arch.json": b'{"architecture": {}}',
        f"{FINAL_DIR}/model.safetensors": bytes(range(256)) * 4000,
        "logs/run.log": b"epoch 1\n",
    }
    for name, data in files.items():
        served = data[:-1] + b"X" if corrupt and name.endswith(".safetensors") else None
        service.add_artifact("s1", name, data, served=served)
    return files


def test_download_final_writes_verified_files_and_returns_the_model_folder(
    service: FakeService, client: Client, tmp_path: Path
) -> None:
    files = _finished_with_artifacts(service)
    folder = client.search("s1").download(tmp_path / "out")
    assert folder == tmp_path / "out" / FINAL_DIR
    assert (folder / "model.safetensors").read_bytes() == files[f"{FINAL_DIR}/model.safetensors"]
    assert (folder / "arch.json").read_bytes() == files[f"{FINAL_DIR}/arch.json"]
    assert not (tmp_path / "out" / "logs").exists()
    assert sorted(p.name for p in (tmp_path / "out").rglob("*") if p.is_file()) == ["arch.json", "model.safetensors"]
    # intact files are not fetched again; --all adds the rest
    service.requests.clear()
    assert client.search("s1").download(tmp_path / "out", what="all") == folder
    fetched = [r.url.path for r in service.requests if re.search(r"/artifacts/\d+$", r.url.path)]
    assert fetched == ["/api/v1/searches/s1/artifacts/3"]
    assert (tmp_path / "out" / "logs" / "run.log").read_bytes() == b"epoch 1\n"


def test_corrupt_download_raises_and_leaves_nothing_half_written(
    service: FakeService, client: Client, tmp_path: Path
) -> None:
    _finished_with_artifacts(service, corrupt=True)
    with pytest.raises(DownloadError, match=r"model\.safetensors: received .* expected") as info:
        client.search("s1").download(tmp_path / "out")
    assert "nothing was kept" in str(info.value)
    left = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert left == [f"{FINAL_DIR}/arch.json"]  # the intact file stays; no partial or temporary file


def test_download_retries_a_dropped_transfer(service: FakeService, client: Client, tmp_path: Path) -> None:
    files = _finished_with_artifacts(service)
    real = service._artifact
    drops = {"n": 0}

    def dropping(request: httpx.Request, m: re.Match[str]) -> httpx.Response:
        response = real(request, m)
        if m[2] == "2" and drops["n"] == 0:
            drops["n"] += 1

            def cut() -> Iterator[bytes]:
                yield response.content[:1000]
                raise httpx.ReadError("connection reset")

            return httpx.Response(200, content=cut())
        return response

    service.routes[("GET", r"/api/v1/searches/(\w+)/artifacts/(\d+)")] = dropping
    folder = client.search("s1").download(tmp_path)
    assert (folder / "model.safetensors").read_bytes() == files[f"{FINAL_DIR}/model.safetensors"]
    assert not [p for p in tmp_path.rglob("*.part")]


def test_download_refuses_names_outside_the_folder(service: FakeService, client: Client, tmp_path: Path) -> None:
    service.add(search_json("s1", "succeeded"))
    service.add_artifact("s1", f"{FINAL_DIR}/arch.json", b"{}")
    service.add_artifact("s1", "final/../../escape.txt", b"gotcha")
    with pytest.raises(UnexpectedResponse, match="not a relative path"):
        client.search("s1").download(tmp_path / "out", what="all")
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path / "out").exists()


def test_download_of_unfinished_or_failed_search(service: FakeService, client: Client, tmp_path: Path) -> None:
    service.add(search_json("s1", "running"))
    service.add(search_json("s2", "failed"))
    service.add_artifact("s2", "logs/run.log", b"boom")
    with pytest.raises(ResultUnavailable):
        client.search("s1").download(tmp_path / "a")
    with pytest.raises(SearchFailed, match="CUDA out of memory"):
        client.search("s2").download(tmp_path / "b")
    assert client.search("s2").download(tmp_path / "b", what="all") == tmp_path / "b"
    assert (tmp_path / "b" / "logs" / "run.log").read_bytes() == b"boom"
    with pytest.raises(ValueError, match="what"):
        client.search("s2").download(tmp_path / "c", what="some")  # type: ignore[arg-type]
    service.add(search_json("s3", "succeeded"))
    service.add_artifact("s3", "final/2-other/model.safetensors", b"w")
    with pytest.raises(ResultUnavailable, match=f"model folder {FINAL_DIR} has no artifacts"):
        client.search("s3").download(tmp_path / "d")
    assert not (tmp_path / "d").exists()
