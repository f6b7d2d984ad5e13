"""The Python SDK (nas.client) against the real API app (api.app) served by uvicorn on 127.0.0.1 (tests.live_service).

No executor runs: the tests play the runner's part through the store (events, results, artifacts) and the app serves
them, live event streams included. Between the SDK and the server sits a recording transport (``Proxy``), which
also injects what a working service cannot produce: refused connections, 5xx and 429 answers, dropped connections,
answers that are not the API. Those faults are marked "fault:" below; everything else is the app's own answer.
"""

from __future__ import annotations

import json
import re
import socket
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
from tests.live_service import (
    ERRORS,
    FINAL_DIR,
    MAX_BODY_BYTES,
    SPEC,
    LiveService,
    Proxy,
    drop_after_bytes,
    drop_after_events,
    event,
    finish_when_followed,
    later,
    problem,
    sse_response,
)

Forward = Callable[[], httpx.Response]


@pytest.fixture
def proxy() -> Iterator[Proxy]:
    p = Proxy()
    yield p
    p.close()


def connect(live: LiveService, token: str, proxy: Proxy, **kwargs: Any) -> Client:
    kwargs.setdefault("backoff", 0.0)
    return Client(live.url, token, transport=proxy, **kwargs)


@pytest.fixture
def client(live: LiveService, user: tuple[str, str], proxy: Proxy) -> Iterator[Client]:
    with connect(live, user[1], proxy) as c:
        yield c


def dead_url() -> str:
    """A URL where nothing listens: connections are refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def stream_path(search_id: str) -> str:
    return f"/api/v1/searches/{search_id}/events/stream"


# ---------------------------------------------------------------- import and construction


def test_import_and_use_without_torch_ray_or_server_libraries(live: LiveService, user: tuple[str, str]) -> None:
    """`import nas.client` and a whole submit/wait round trip pull in none of the heavy or server-side packages."""
    code = f"""
import sys, json
import nas.client
from nas.client import Client
with Client({live.url!r}, {user[1]!r}) as c:
    s = c.submit({SPEC!r})
    print(s.id, flush=True)
    assert s.wait().status == "succeeded"
bad = sorted(m for m in ("torch", "ray", "fastapi", "sqlalchemy", "pydantic_settings", "numpy", "starlette", "uvicorn")
             if m in sys.modules)
print(json.dumps(bad))
"""
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        cwd=Path(__file__).parents[1],
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        search_id = proc.stdout.readline().strip()
        assert re.fullmatch(r"[0-9a-f]{32}", search_id), proc.stderr.read() if proc.stderr else ""
        live.start(search_id)
        live.finish(search_id, "succeeded")
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert json.loads(out.strip().splitlines()[-1]) == []


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
    with pytest.raises(ValueError, match="http, transport"):
        Client(http=httpx.Client(), transport=httpx.MockTransport(lambda r: httpx.Response(200)))


def test_a_prepared_httpx_client_is_used_and_left_open(live: LiveService, user: tuple[str, str], proxy: Proxy) -> None:
    http = httpx.Client(base_url=live.url, transport=proxy)
    with Client(token=user[1], http=http) as c:  # the URL comes from the httpx.Client
        assert c.url == live.url and c.me().name == user[0]
    assert not http.is_closed and len(proxy.requests) == 1
    http.close()


# ---------------------------------------------------------------- retries and errors


def test_submit_retries_connection_errors_and_503_with_one_idempotency_key(
    live: LiveService, user: tuple[str, str], proxy: Proxy, client: Client
) -> None:
    proxy.failures = ["connect", 503, "connect"]  # fault: refused connections and a 503
    search = client.submit(SPEC, priority=5)
    posts = proxy.calls("POST", "/api/v1/searches")
    assert len(posts) == 4
    assert len({r.headers["idempotency-key"] for r in posts}) == 1
    assert [s.id for s in client.searches()] == [search.id] and search.info.priority == 5
    assert search.info.owner == user[0] and search.status == "queued"
    body = json.loads(posts[-1].content)
    assert body["spec"]["space"] == {"name": "toyconv", "macro": {"width": 4}}
    assert posts[-1].headers["authorization"] == f"Bearer {user[1]}"


def test_replayed_submission_returns_the_same_search(client: Client) -> None:
    first = client.submit(SPEC, idempotency_key="k-1")
    again = client.submit(SPEC, idempotency_key="k-1")
    other = client.submit(SPEC)
    assert first.id == again.id != other.id
    assert len(client.searches()) == 2
    with pytest.raises(Conflict, match="Idempotency-Key: this Idempotency-Key was used for a different search"):
        client.submit({**SPEC, "name": "other"}, idempotency_key="k-1")


def test_lost_response_is_retried_without_a_second_search(proxy: Proxy, client: Client) -> None:
    """The service stores the search but the answer is lost: the retry (same key) gets that search back."""
    proxy.failures = ["read"]  # fault: the request is served, its answer dropped
    search = client.submit(SPEC)
    posts = proxy.calls("POST", "/api/v1/searches")
    assert len(posts) == 2 and posts[0].headers["idempotency-key"] == posts[1].headers["idempotency-key"]
    assert [s.id for s in client.searches()] == [search.id]


def test_connection_failed_after_retries_names_url_and_remedy(proxy: Proxy) -> None:
    url = dead_url()  # nothing listens there: every connection is refused
    with Client(url, "nas_x", retries=2, backoff=0, transport=proxy) as c, pytest.raises(ConnectionFailed) as info:
        c.search("s1")
    assert len(proxy.requests) == 3
    message = str(info.value)
    assert url in message and "after 3 attempts" in message and "nas up" in message and "NAS_URL" in message


def test_persistent_5xx_becomes_server_error(live: LiveService, user: tuple[str, str], proxy: Proxy) -> None:
    proxy.failures = [500] * 3  # fault: the service fails on every attempt
    with connect(live, user[1], proxy, retries=2) as c, pytest.raises(ServerError) as info:
        c.me()
    assert info.value.status == 500 and "server error 500 on GET" in str(info.value)
    assert len(proxy.requests) == 3


def test_retry_after_header_is_honoured(user: tuple[str, str], proxy: Proxy, client: Client) -> None:
    proxy.failures = [(429, {"retry-after": "0.2"})]  # fault: rate limited once
    assert client.me().name == user[0]
    assert len(proxy.times) == 2 and proxy.times[1] - proxy.times[0] >= 0.19


def error_cases(live: LiveService, client: Client) -> dict[str, Callable[[], Any]]:
    """Requests the service refuses, each by its own answer."""
    succeeded = live.create_search(client.me().name, status="succeeded")
    macro = {"width": 4, "padding": "x" * MAX_BODY_BYTES}  # valid here; too large for the service
    return {
        "422": lambda: client.submit({**SPEC, "dataset": {"name": "imagefolder", "path": "/data"}}),
        "422 server-side": lambda: client.submit({**SPEC, "space": {"name": "toyconv", "macro": {"width": 4, "x": 1}}}),
        "422 two fields": lambda: client.searches(sort="bogus", order="sideways"),  # type: ignore[arg-type]
        "413": lambda: client.submit({**SPEC, "space": {"name": "toyconv", "macro": macro}}),
        "404": lambda: client.search("0" * 32),
        "409": lambda: client.search(succeeded).cancel(),
    }


@pytest.mark.parametrize(
    ("case", "cls", "status", "method", "path", "needles"),
    [
        ("422", InvalidRequest, 422, "POST", "/api/v1/searches",
         ["spec.dataset.path: '/data' is outside the allowed dataset roots"]),
        ("422 server-side", InvalidRequest, 422, "POST", "/api/v1/searches", ["spec.space.macro.x: "]),
        ("422 two fields", InvalidRequest, 422, "GET", "/api/v1/searches", ["sort: Input should be", "; order: "]),
        ("413", InvalidRequest, 413, "POST", "/api/v1/searches", [f"the limit is {MAX_BODY_BYTES}"]),
        ("404", NotFound, 404, "GET", f"/api/v1/searches/{'0' * 32}", [f"search_id: no search '{'0' * 32}'"]),
        ("409", Conflict, 409, "POST", "/api/v1/searches/{id}/cancel", ["status: search ", " is already succeeded"]),
    ],
)  # fmt: skip
def test_error_statuses_of_the_service_map_to_exceptions_with_clear_messages(
    live: LiveService,
    proxy: Proxy,
    client: Client,
    case: str,
    cls: type[APIError],
    status: int,
    method: str,
    path: str,
    needles: list[str],
) -> None:
    call = error_cases(live, client)[case]
    proxy.requests.clear()
    with pytest.raises(cls) as info:
        call()
    assert type(info.value) is cls
    assert info.value.status == status and info.value.method == method
    assert info.value.url is not None and info.value.url.startswith(live.url + path.split("{")[0])
    for needle in needles:
        assert needle in str(info.value)
    assert len([r for r in proxy.requests if r.method == method]) == 1  # 4xx are not retried


@pytest.mark.parametrize(
    ("response", "cls", "needles"),
    [
        (httpx.Response(422, json={"detail": [{"loc": ["body", "spec", "name"], "msg": "field required"}]}),
         InvalidRequest, ["spec.name: field required"]),
        (problem(403, "Forbidden", "admins only"), AuthError, ["forbidden: admins only"]),
        (httpx.Response(418, text="I'm a teapot"), APIError, ["I'm a teapot"]),
    ],
)  # fmt: skip
def test_error_answers_of_other_servers_map_to_exceptions(
    live: LiveService, proxy: Proxy, client: Client, response: httpx.Response, cls: type[APIError], needles: list[str]
) -> None:
    """Fault: answers the service never gives (FastAPI's plain errors, a 403, a proxy's text) are still mapped."""
    proxy.routes[("POST", r"/api/v1/searches")] = lambda r, m, forward: response
    with pytest.raises(cls) as info:
        client.submit(SPEC)
    assert type(info.value) is cls
    assert info.value.status == response.status_code and info.value.method == "POST"
    assert info.value.url == f"{live.url}/api/v1/searches"
    for needle in needles:
        assert needle in str(info.value)
    assert len(proxy.requests) == 1  # 4xx are not retried


def test_wrong_token_is_an_auth_error(live: LiveService, proxy: Proxy) -> None:
    with (
        connect(live, "nas_wrong", proxy) as c,
        pytest.raises(
            AuthError, match="Authorization: the API token is unknown, revoked or expired, or its user is disabled"
        ) as info,
    ):
        c.me()
    assert info.value.status == 401 and "NAS_TOKEN" in str(info.value) and "admin.token" in str(info.value)
    assert len(proxy.requests) == 1


def test_an_answer_that_is_not_the_api_is_unexpected(proxy: Proxy, client: Client) -> None:
    # fault: a login page where the API should be
    proxy.routes[("GET", r"/api/v1/me")] = lambda r, m, forward: httpx.Response(200, text="<html>login</html>")
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
def test_invalid_spec_is_refused_before_sending(proxy: Proxy, client: Client, spec: Any, needle: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        client.submit(spec)
    assert str(info.value).startswith(needle) and info.value.status == 422
    assert proxy.requests == []


def test_submit_reads_yaml_and_json_files(proxy: Proxy, client: Client, tmp_path: Path) -> None:
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(SPEC))
    (tmp_path / "spec.json").write_text(json.dumps({**SPEC, "name": "from-json"}))
    first = client.submit(tmp_path / "spec.yaml")
    second = client.submit(str(tmp_path / "spec.json"), max_attempts=2)
    bodies = [json.loads(r.content) for r in proxy.calls("POST", "/api/v1/searches")]
    assert [b["spec"]["name"] for b in bodies] == ["toy", "from-json"]
    assert "max_attempts" not in bodies[0] and bodies[1]["max_attempts"] == 2
    assert (first.name, second.name, second.info.max_attempts) == ("toy", "from-json", 2)
    with pytest.raises(InvalidRequest, match="priority"):
        client.submit(SPEC, priority=1000)


def test_health_is_a_bool(proxy: Proxy, client: Client) -> None:
    assert client.health() is True
    proxy.failures = ["connect"]  # fault: refused once
    assert client.health() is False
    assert len(proxy.requests) == 2  # health checks are not retried
    with Client(dead_url(), "nas_x", backoff=0) as c:
        assert c.health() is False


# ---------------------------------------------------------------- lists and pagination


def test_searches_pages_through_with_filters(
    live: LiveService, user: tuple[str, str], proxy: Proxy, client: Client
) -> None:
    statuses = ["running" if i % 2 else "queued" for i in range(250)]
    ids = live.create_searches(user[0], [SPEC] * 250, statuses)
    everything = client.searches(limit=None)
    assert [s.id for s in everything] == ids[::-1]  # newest first
    pages = proxy.calls("GET", "/api/v1/searches")
    assert [(r.url.params["limit"], r.url.params["offset"]) for r in pages] == [("100", "0"), ("100", "100"),
                                                                              ("100", "200")]  # fmt: skip
    proxy.requests.clear()
    running = client.searches(status="running", limit=120)
    assert len(running) == 120 and {s.status for s in running} == {"running"}
    assert [r.url.params["limit"] for r in proxy.requests] == ["100", "20"]
    proxy.requests.clear()
    both = client.searches(status=["queued", "running"], name="toy", limit=5)
    assert [s.id for s in both] == ids[:-6:-1] and proxy.requests[0].url.params.get_list("status") == [
        "queued",
        "running",
    ]
    assert proxy.requests[0].url.params["sort"] == "created_at"
    assert client.searches(name="no such name") == []
    with pytest.raises(ValueError, match="limit"):
        client.searches(limit=0)


def test_candidates_and_pareto(live: LiveService, user: tuple[str, str], client: Client) -> None:
    search_id = live.create_search(user[0], status="succeeded")
    live.add_candidates(search_id, [
        {"arch": {"hash": f"h{i}"}, "metrics": {"accuracy": i / 200, "params": 1000.0 - i}, "feasible": True,
         "pareto": i % 50 == 0}
        for i in range(130)
    ])  # fmt: skip
    search = client.search(search_id)
    best_first = search.candidates()
    assert len(best_first) == 130 and best_first[0].arch_hash == "h129" and best_first[-1].arch_hash == "h0"
    assert best_first[0].accuracy == 129 / 200 and best_first[0].params == 871.0
    smallest = search.candidates(sort="params", order="asc", limit=3)
    assert [c.arch_hash for c in smallest] == ["h129", "h128", "h127"]
    assert [c.arch_hash for c in search.candidates(pareto=True)] == ["h100", "h50", "h0"]
    assert [c.arch_hash for c in search.pareto()] == ["h100", "h50", "h0"]  # best accuracy first


def test_stored_events_page_until_empty(live: LiveService, user: tuple[str, str], proxy: Proxy, client: Client) -> None:
    search_id = live.create_search(user[0])
    live.start(search_id)
    ids = live.add_events(search_id, [event(i) for i in range(1, 251)])
    events = list(client.search(search_id).events(follow=False))
    assert [e.id for e in events] == ids and [e.step for e in events] == list(range(1, 251))
    afters = [r.url.params["after"] for r in proxy.calls("GET", f"/api/v1/searches/{search_id}/events")]
    assert afters == ["0", str(ids[99]), str(ids[199]), str(ids[249])]
    assert [e.id for e in client.search(search_id).events(follow=False, after=ids[247])] == ids[248:]


def test_not_found_and_conflict_on_handles(live: LiveService, user: tuple[str, str], client: Client) -> None:
    with pytest.raises(NotFound, match="search_id: no search 'nope'"):
        client.search("nope")
    other, _ = live.new_user()
    with pytest.raises(NotFound, match="search_id: no search"):
        client.search(live.create_search(other))  # another user's search is not there for this one
    search = client.search(live.create_search(user[0]))
    assert search.cancel().status == "cancelled" and search.status == "cancelled"
    with pytest.raises(Conflict, match=f"status: search {search.id} is already cancelled"):
        search.cancel()
    assert search.retry().status == "queued" and search.status == "queued"


# ---------------------------------------------------------------- live events and waiting


def test_events_follow_the_stream_and_reconnect_with_last_event_id(
    live: LiveService, user: tuple[str, str], proxy: Proxy, client: Client
) -> None:
    search_id = live.create_search(user[0])
    live.start(search_id)
    ids = live.add_events(search_id, [event(i) for i in range(1, 5)])
    seen_ids: list[str | None] = []

    def stream(request: httpx.Request, _m: re.Match[str], forward: Forward) -> httpx.Response:
        seen_ids.append(request.headers.get("last-event-id"))
        if len(seen_ids) == 1:
            return drop_after_events(forward(), 2)  # fault: the connection drops after two events
        if len(seen_ids) == 2:
            return problem(503, "Service Unavailable", "restarting")  # fault: the service restarts
        request.headers["last-event-id"] = str(ids[0])  # the service replays event 2: the client skips it
        later(0.3, lambda: live.finish(search_id, "succeeded"))
        return forward()

    proxy.routes[("GET", stream_path(search_id))] = stream
    search = client.search(search_id)
    got = list(search.events())
    assert [e.id for e in got] == ids
    assert got[0].metrics == {"loss": 1.0} and got[0].phase == "supernet" and got[0].search_id == search_id
    assert seen_ids == [None, str(ids[1]), str(ids[1])]
    assert search.status == "succeeded"  # the end event carries the final state
    assert proxy.calls("GET", stream_path(search_id))[0].headers["accept"] == "text/event-stream"


def test_events_stream_gives_up_after_retries(live: LiveService, user: tuple[str, str], proxy: Proxy) -> None:
    search_id = live.create_search(user[0], status="running")
    # fault: a stream that closes at once, every time
    proxy.routes[("GET", stream_path(search_id))] = lambda r, m, forward: sse_response("")
    with connect(live, user[1], proxy, retries=2) as c:
        search = c.search(search_id)
        with pytest.raises(ConnectionFailed, match="closed before its end event"):
            list(search.events())
    assert len(proxy.calls("GET", stream_path(search_id))) == 3


def test_wait_success_follows_the_stream(
    live: LiveService, user: tuple[str, str], proxy: Proxy, client: Client
) -> None:
    search_id = live.create_search(user[0])
    live.start(search_id)
    live.add_events(search_id, [event(i) for i in range(1, 4)])
    finish_when_followed(live, proxy, "succeeded", events=[event(100), event(101)])
    search = client.search(search_id)
    info = search.wait()
    assert info.status == "succeeded" and info.result is not None and info.result.final[0].path == FINAL_DIR
    assert search.best().metrics == {"test_accuracy": 0.91}
    assert len(proxy.calls("GET", stream_path(search_id))) == 1
    assert [e.step for e in search.events()] == [1, 2, 3, 100, 101]  # an ended search's stream ends at once


def test_wait_with_progress_draws_on_stderr(
    live: LiveService, user: tuple[str, str], proxy: Proxy, client: Client, capsys: pytest.CaptureFixture[str]
) -> None:
    search_id = live.create_search(user[0])
    live.start(search_id)
    live.add_events(search_id, [
        event(1, "phase_started", step=None, total=10),
        event(2, "epoch", step=1, metrics={"val_accuracy": 0.5}),
        event(3, "some_future_type"),  # unknown to this version: ignored
    ])  # fmt: skip
    finish_when_followed(live, proxy, "succeeded")
    assert client.search(search_id).wait(progress=True).status == "succeeded"
    captured = capsys.readouterr()
    assert "supernet epoch 1/10" in captured.err and "val_accuracy=0.5000" in captured.err
    assert f"{search_id} (toy): running" in captured.err and f"{search_id} (toy): succeeded" in captured.err
    assert captured.out == ""


@pytest.mark.parametrize("status", ["failed", "cancelled"])
def test_wait_raises_search_failed_with_the_error(
    live: LiveService, user: tuple[str, str], proxy: Proxy, client: Client, status: str
) -> None:
    search_id = live.create_search(user[0])
    live.start(search_id)
    finish_when_followed(live, proxy, status)
    search = client.search(search_id)
    with pytest.raises(SearchFailed) as info:
        search.wait()
    assert info.value.search.status == status and info.value.error == ERRORS[status]
    assert f"search {search_id} ('toy') {status}: {info.value.error}" == str(info.value)
    assert search.wait(raise_on_failure=False).status == status
    with pytest.raises(SearchFailed):
        search.best()


def test_wait_falls_back_to_polling_without_a_stream(
    live: LiveService, user: tuple[str, str], proxy: Proxy, client: Client
) -> None:
    search_id = live.create_search(user[0])
    live.start(search_id)
    # fault: a proxy that answers the stream with JSON
    proxy.routes[("GET", stream_path(search_id))] = lambda r, m, forward: httpx.Response(
        200, json={"detail": "no streaming behind this proxy"}
    )
    gets = {"n": 0}

    def get(request: httpx.Request, _m: re.Match[str], forward: Forward) -> httpx.Response:
        gets["n"] += 1
        if gets["n"] == 4:
            live.finish(search_id, "succeeded")
        return forward()

    proxy.routes[("GET", f"/api/v1/searches/{search_id}")] = get
    search = client.search(search_id)
    assert search.wait(poll=0.01).status == "succeeded"
    assert gets["n"] == 4


def test_wait_timeout_while_streaming(live: LiveService, user: tuple[str, str], client: Client) -> None:
    search_id = live.create_search(user[0])
    live.start(search_id)  # and nothing happens: the stream stays quiet
    search = client.search(search_id)
    started = time.monotonic()
    with pytest.raises(WaitTimeout, match=r"still running after 0\.2 s") as info:
        search.wait(timeout=0.2)
    assert isinstance(info.value, TimeoutError) and time.monotonic() - started < 2


def test_wait_timeout_while_polling(live: LiveService, user: tuple[str, str], proxy: Proxy, client: Client) -> None:
    search_id = live.create_search(user[0])
    # fault: a server without the stream
    proxy.routes[("GET", stream_path(search_id))] = lambda r, m, forward: problem(404, "Not Found", "no")
    with pytest.raises(WaitTimeout, match="still queued"):
        client.search(search_id).wait(timeout=0.1, poll=0.02)


def test_best_needs_a_finished_search_with_a_final_model(
    live: LiveService, user: tuple[str, str], client: Client
) -> None:
    running = live.create_search(user[0], status="running")
    with pytest.raises(ResultUnavailable, match=f"{running} is running; wait"):
        client.search(running).best()
    bare = live.create_search(user[0], status="succeeded", result={"elapsed_s": 1.0, "best": None, "final": []})
    with pytest.raises(ResultUnavailable, match="without a retrained model"):
        client.search(bare).best()


# ---------------------------------------------------------------- downloads


def finished_with_artifacts(live: LiveService, owner: str, *, corrupt: bool = False) -> tuple[str, dict[str, bytes]]:
    search_id = live.create_search(owner)
    live.start(search_id)
    live.finish(search_id, "succeeded")
    files = {
        f"{FINAL_DIR}/arch.json": b'{"architecture": {}}',
        f"{FINAL_DIR}/model.safetensors": bytes(range(256)) * 4000,
        "logs/run.log": b"epoch 1\n",
    }
    for name, data in files.items():
        live.add_artifact(search_id, name, data, kind="log" if name.startswith("logs/") else "model")
    if corrupt:
        name = f"{FINAL_DIR}/model.safetensors"
        live.overwrite_artifact(search_id, name, files[name][:-1] + b"X")
    return search_id, files


def test_download_final_writes_verified_files_and_returns_the_model_folder(
    live: LiveService, user: tuple[str, str], proxy: Proxy, client: Client, tmp_path: Path
) -> None:
    search_id, files = finished_with_artifacts(live, user[0])
    folder = client.search(search_id).download(tmp_path / "out")
    assert folder == tmp_path / "out" / FINAL_DIR
    assert (folder / "model.safetensors").read_bytes() == files[f"{FINAL_DIR}/model.safetensors"]
    assert (folder / "arch.json").read_bytes() == files[f"{FINAL_DIR}/arch.json"]
    assert not (tmp_path / "out" / "logs").exists()
    assert sorted(p.name for p in (tmp_path / "out").rglob("*") if p.is_file()) == ["arch.json", "model.safetensors"]
    # intact files are not fetched again; --all adds the rest
    log_id = {a.name: a.id for a in client.search(search_id).artifacts()}["logs/run.log"]
    proxy.requests.clear()
    assert client.search(search_id).download(tmp_path / "out", what="all") == folder
    fetched = [r.url.path for r in proxy.requests if re.search(r"/artifacts/\d+$", r.url.path)]
    assert fetched == [f"/api/v1/searches/{search_id}/artifacts/{log_id}"]
    assert (tmp_path / "out" / "logs" / "run.log").read_bytes() == b"epoch 1\n"


def test_corrupt_download_raises_and_leaves_nothing_half_written(
    live: LiveService, user: tuple[str, str], client: Client, tmp_path: Path
) -> None:
    search_id, _ = finished_with_artifacts(live, user[0], corrupt=True)  # the file changed after it was listed
    with pytest.raises(DownloadError, match=r"model\.safetensors: received .* expected") as info:
        client.search(search_id).download(tmp_path / "out")
    assert "nothing was kept" in str(info.value)
    left = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert left == [f"{FINAL_DIR}/arch.json"]  # the intact file stays; no partial or temporary file


def test_download_retries_a_dropped_transfer(
    live: LiveService, user: tuple[str, str], proxy: Proxy, client: Client, tmp_path: Path
) -> None:
    search_id, files = finished_with_artifacts(live, user[0])
    model_id = {a.name: a.id for a in client.search(search_id).artifacts()}[f"{FINAL_DIR}/model.safetensors"]
    drops = {"n": 0}

    def dropping(request: httpx.Request, m: re.Match[str], forward: Forward) -> httpx.Response:
        if int(m[1]) == model_id and drops["n"] == 0:
            drops["n"] += 1
            return drop_after_bytes(forward(), 1000)  # fault: the transfer breaks off
        return forward()

    proxy.routes[("GET", rf"/api/v1/searches/{search_id}/artifacts/(\d+)")] = dropping
    folder = client.search(search_id).download(tmp_path)
    assert drops["n"] == 1
    assert (folder / "model.safetensors").read_bytes() == files[f"{FINAL_DIR}/model.safetensors"]
    assert not list(tmp_path.rglob("*.part"))


def test_download_refuses_names_outside_the_folder(
    live: LiveService, user: tuple[str, str], client: Client, tmp_path: Path
) -> None:
    search_id = live.create_search(user[0])
    live.start(search_id)
    live.finish(search_id, "succeeded")
    live.add_artifact(search_id, f"{FINAL_DIR}/arch.json", b"{}")
    live.add_artifact_row(search_id, "final/../../escape.txt", b"gotcha")
    with pytest.raises(UnexpectedResponse, match="not a relative path"):
        client.search(search_id).download(tmp_path / "out", what="all")
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path / "out").exists()


def test_download_of_unfinished_or_failed_search(
    live: LiveService, user: tuple[str, str], client: Client, tmp_path: Path
) -> None:
    running = live.create_search(user[0])
    live.start(running)
    failed = live.create_search(user[0])
    live.start(failed)
    live.finish(failed, "failed")
    live.add_artifact(failed, "logs/run.log", b"boom", kind="log")
    with pytest.raises(ResultUnavailable):
        client.search(running).download(tmp_path / "a")
    with pytest.raises(SearchFailed, match="CUDA out of memory"):
        client.search(failed).download(tmp_path / "b")
    assert client.search(failed).download(tmp_path / "b", what="all") == tmp_path / "b"
    assert (tmp_path / "b" / "logs" / "run.log").read_bytes() == b"boom"
    with pytest.raises(ValueError, match="what"):
        client.search(failed).download(tmp_path / "c", what="some")  # type: ignore[arg-type]
    other = live.create_search(user[0])
    live.start(other)
    live.finish(other, "succeeded")
    live.add_artifact(other, "final/2-other/model.safetensors", b"w")
    with pytest.raises(ResultUnavailable, match=f"model folder {FINAL_DIR} has no artifacts"):
        client.search(other).download(tmp_path / "d")
    assert not (tmp_path / "d").exists()


# ---------------------------------------------------------------- users and tokens (admins)


def test_admin_manages_users_and_tokens_through_the_sdk(live: LiveService, user: tuple[str, str]) -> None:
    admin = live.new_user("root", admin=True)
    with Client(live.url, admin[1], retries=0) as root:
        created = root.create_user(f"{user[0]}-new")
        assert created.name == f"{user[0]}-new" and not created.is_admin
        assert created.name in {u.name for u in root.users()}
        token = root.create_token(created.name, "ci", expires_in_days=7)
        assert token.token.startswith("nas_") and token.expires_at is not None
        with Client(live.url, token.token, retries=0) as new:
            assert new.me().name == created.name
            disabled = root.disable_user(created.name)
            assert disabled.disabled_at is not None
            with pytest.raises(AuthError):
                new.me()
            root.enable_user(created.name)
            assert new.me().name == created.name
            revoked = root.revoke_token(created.name, token.id)
            assert revoked.revoked_at is not None
            with pytest.raises(AuthError):
                new.me()
        assert [t.id for t in root.tokens(created.name)] == [token.id]
        with pytest.raises(InvalidRequest) as bad:  # checked here, nothing sent
            root.create_user("no spaces")
        assert bad.value.problem.field == "name"
    with Client(live.url, user[1], retries=0) as plain, pytest.raises(APIError) as info:
        plain.users()  # not an admin
    assert info.value.status == 403
