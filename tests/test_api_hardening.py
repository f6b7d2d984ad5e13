"""Issue 10 (an outside probe of the running service): metrics labels, dataset paths, malformed HTTP, security
headers, the offline docs page, Host checks with auth off, private file modes and what events reveal."""

from __future__ import annotations

import json
import os
import socket
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api.app import create_app
from api.problems import SECURITY_HEADERS
from api.serve import prepare, uvicorn_config
from service.settings import Settings
from service.store import Database, repo
from tests.api_helpers import spec
from tests.live_service import uvicorn_in_thread
from tests.test_api_bad_input import Env, assert_problem, build, refused

URL = "/api/v1/searches"


@pytest.fixture
def env(database: Database, tmp_path: Path) -> Iterator[Env]:
    client, e = build(database, tmp_path)
    with client:
        yield e


def ds(name: str, path: str) -> bytes:
    """The request body as JSON text with ASCII escapes (a lone surrogate is sent as the escape \\ud800)."""
    return json.dumps({"spec": spec(dataset={"name": name, "path": path})}).encode()


# ---------------------------------------------------------------- (1) metrics labels


def test_made_up_methods_do_not_grow_the_metrics_page(env: Env) -> None:
    env.client.request("M0", "/api/v1/me")  # the first odd method adds the "other" series once
    env.client.get("/metrics")  # and the first scrape its own series
    before = env.client.get("/metrics")
    assert before.status_code == 200
    for i in range(1, 201):
        env.client.request(f"M{i}", "/api/v1/me")
    after = env.client.get("/metrics").text
    assert 'method="other"' in after and 'method="M7"' not in after
    assert abs(len(after) - len(before.text)) < 300  # only counter values changed, no new series


def test_metrics_is_open_by_default_and_needs_the_metrics_token_when_set(
    env: Env, database: Database, tmp_path: Path
) -> None:
    assert env.client.get("/metrics").status_code == 200
    app = create_app(Settings(data_dir=tmp_path, metrics_token="scrape-secret"), db=database)
    with TestClient(app) as client:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic scrape-secret"}, env.h()):
            r = client.get("/metrics", headers=headers)
            assert_problem(r, 401, "Authorization")
            assert r.headers["www-authenticate"].startswith("Bearer")
        r = client.get("/metrics", headers={"Authorization": "Bearer scrape-secret"})
        assert r.status_code == 200 and "nas_http_requests_total" in r.text
        assert client.get("/healthz").status_code == 200  # only /metrics needs it


# ---------------------------------------------------------------- (4) dataset paths


def test_a_symlink_loop_and_a_lone_surrogate_are_422(env: Env) -> None:
    os.symlink(env.root / "loop-b", env.root / "loop-a")
    os.symlink(env.root / "loop-a", env.root / "loop-b")
    refused(env, ds("imagefolder", str(env.root / "loop-a")), 422, "spec.dataset.path")
    refused(env, ds("npz", str(env.root / "loop-a" / "x.npz")), 422, "spec.dataset.path")
    refused(env, ds("imagefolder", "/tmp/\ud800"), 422, "spec.dataset.path")
    refused(env, ds("imagefolder", "\udcff"), 422, "spec.dataset.path")
    # the connection stays usable (no 500 that drops the keep-alive connection)
    assert env.client.get("/api/v1/me", headers=env.h()).status_code == 200


def test_path_errors_do_not_reveal_the_dataset_roots(env: Env) -> None:
    for body in (ds("imagefolder", "/etc"), ds("imagefolder", "relative/path"), ds("npz", "/var/../etc/passwd")):
        problem = refused(env, body, 422, "spec.dataset.path")
        assert str(env.root) not in problem["detail"], problem
        assert all(str(env.root) not in e["message"] for e in problem["errors"])


_PATH_PARTS = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["..", ".", "/", "//", "\x00", "\ud800", "\udfff", "loop", "ok", "a" * 300, "~", "\n"]),
)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(parts=st.lists(_PATH_PARTS, max_size=6), absolute=st.booleans(), kind=st.sampled_from(["npz", "imagefolder"]))
def test_fuzzed_dataset_paths_never_get_a_5xx(fuzz_env: Env, parts: list[str], absolute: bool, kind: str) -> None:
    path = "/".join(parts)
    if absolute:
        path = f"{fuzz_env.root}/{path}"
    headers = {**fuzz_env.h(), "Content-Type": "application/json"}
    r = fuzz_env.client.post(URL, content=ds(kind, path), headers=headers)
    assert r.status_code < 500, r.text
    if r.status_code != 201:
        assert_problem(r, r.status_code, r.json().get("field"))
        assert str(fuzz_env.root) not in r.json()["detail"].replace(repr(path)[1:-1], "")


@pytest.fixture(scope="module")
def fuzz_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    """One SQLite-backed app for every fuzzed example (hypothesis runs many in one test)."""
    tmp_path = tmp_path_factory.mktemp("fuzz")
    db = Database(f"sqlite:///{tmp_path / 'nas.db'}")
    from service.store import upgrade

    upgrade(db.engine)
    client, e = build(db, tmp_path)
    (e.root / "ok").mkdir()
    os.symlink(e.root / "loop", e.root / "loop")  # a symlink to itself
    with client:
        yield e
    db.dispose()


# ---------------------------------------------------------------- (8) malformed HTTP, (10) no server banner


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    """The app behind a real uvicorn configured as `nas up` does (api.serve.uvicorn_config), on a free port."""
    tmp_path = tmp_path_factory.mktemp("live")
    s = Settings(data_dir=tmp_path, port=1)
    app = create_app(s)
    with uvicorn_in_thread(uvicorn_config(app, s, port=0)) as url:
        host, port = url.removeprefix("http://").rsplit(":", 1)
        yield host, int(port)


def _raw(address: tuple[str, int], request: bytes) -> tuple[str, dict[str, str], bytes]:
    with socket.create_connection(address, timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
            if b"\r\n\r\n" in data:
                head, _, body = data.partition(b"\r\n\r\n")
                length = next(
                    (
                        int(line.split(b":")[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length:")
                    ),
                    None,
                )
                if length is not None and len(body) >= length:
                    break
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    return lines[0], headers, body


@pytest.mark.parametrize("length", [b"abc", b"-1", b"1.5", b"0x10"])
def test_an_invalid_content_length_is_problem_json(live: tuple[str, int], length: bytes) -> None:
    request = b"POST /api/v1/searches HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: " + length + b"\r\n\r\n{}"
    status, headers, body = _raw(live, request)
    assert status.startswith("HTTP/1.1 400"), status
    assert headers["content-type"] == "application/problem+json"
    assert headers["x-content-type-options"] == "nosniff"
    assert b'"field":"request"' in body.replace(b" ", b"")


def test_a_content_length_over_the_limit_is_413_problem_json(live: tuple[str, int]) -> None:
    request = b"POST /api/v1/searches HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 99999999999\r\n\r\n{}"
    status, headers, _ = _raw(live, request)
    assert status.startswith("HTTP/1.1 413") and headers["content-type"] == "application/problem+json"


def test_the_real_server_sends_no_banner_and_the_security_headers(live: tuple[str, int]) -> None:
    status, headers, _ = _raw(live, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    assert status.startswith("HTTP/1.1 200") and "server" not in headers
    assert headers["x-frame-options"] == "DENY"


# ---------------------------------------------------------------- (10) security headers and the docs page


def _has_security_headers(headers: Any) -> None:
    for key, value in SECURITY_HEADERS.items():
        assert headers.get(key) == value, (key, dict(headers))
    csp = headers["content-security-policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp


def test_every_response_has_the_security_headers(env: Env) -> None:
    for r in (
        env.client.get("/api/v1/me", headers=env.h()),
        env.client.get("/api/v1/me"),  # 401
        env.client.get("/nowhere"),  # 404
        env.client.post(URL, json={"spec": 1}, headers=env.h()),  # 422
        env.client.get("/metrics"),
        env.client.get("/healthz"),
        env.client.get("/api/v1/docs"),
    ):
        assert r.status_code < 500
        _has_security_headers(r.headers)


def test_unhandled_errors_have_the_security_headers(database: Database, tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path), db=database)

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("boom")

    with TestClient(app, raise_server_exceptions=False) as client:
        r = client.get("/boom")
    assert r.status_code == 500
    _has_security_headers(r.headers)


def test_the_docs_page_loads_nothing_from_another_host(env: Env) -> None:
    page = env.client.get("/api/v1/docs")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "http://" not in page.text and "https://" not in page.text and "//cdn" not in page.text
    assert "<script>" not in page.text.replace(" ", "")  # no inline script: the CSP allows none
    srcs = [part.split('"')[1] for part in page.text.split("src=")[1:]] + [
        part.split('"')[1] for part in page.text.split("href=")[1:]
    ]
    assert any(s.endswith("swagger-ui-bundle.js") for s in srcs)
    for src in srcs:
        assert src.startswith("/api/v1/"), src
        r = env.client.get(src)
        assert r.status_code == 200 and r.content, src
    init = env.client.get("/api/v1/docs-init.js").text
    assert "/api/v1/openapi.json" in init
    assert env.client.get("/api/v1/openapi.json").status_code == 200


# ---------------------------------------------------------------- (5) Host checks


def test_auth_off_accepts_only_loopback_host_names(database: Database, tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path, auth=False), db=database)
    with TestClient(app, base_url="http://127.0.0.1:8321") as client:
        for host in ("127.0.0.1", "127.0.0.1:8321", "localhost", "localhost:8321", "[::1]", "[::1]:8321"):
            r = client.get("/api/v1/me", headers={"Host": host})
            assert r.status_code == 200, (host, r.text)
        for host in ("evil.example", "evil.example:8321", "127.0.0.1.evil.example", "", "10.0.0.1:8321"):
            r = client.get("/api/v1/me", headers={"Host": host})
            problem = assert_problem(r, 400, "Host")
            assert "loopback" in problem["detail"]
            _has_security_headers(r.headers)


def test_auth_on_accepts_any_host_unless_allowed_hosts_is_set(env: Env, database: Database, tmp_path: Path) -> None:
    assert env.client.get("/api/v1/me", headers={**env.h(), "Host": "nas.example.org"}).status_code == 200
    with database.session() as s:
        token = repo.create_token(s, repo.create_user(s, "carol"))
    app = create_app(Settings(data_dir=tmp_path, allowed_hosts="nas.example.org,*.lab.example"), db=database)
    with TestClient(app) as client:
        h = {"Authorization": f"Bearer {token}"}
        for host in ("nas.example.org", "nas.example.org:443", "gpu1.lab.example"):
            assert client.get("/api/v1/me", headers={**h, "Host": host}).status_code == 200, host
        r = client.get("/api/v1/me", headers={**h, "Host": "other.example"})
        assert "NAS_ALLOWED_HOSTS" in assert_problem(r, 400, "Host")["detail"]


# ---------------------------------------------------------------- (6) file modes


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_data_dir_and_database_are_private(tmp_path: Path, free_port: int) -> None:
    data = tmp_path / "fresh"
    controller = prepare(Settings(data_dir=data, port=free_port))
    controller.db.dispose()
    assert _mode(data) == 0o700 and _mode(data / "searches") == 0o700
    assert _mode(data / "nas.db") == 0o600
    for extra in ("nas.db-wal", "nas.db-shm"):
        if (data / extra).exists():
            assert _mode(data / extra) == 0o600


def test_an_open_data_dir_is_tightened_with_a_warning(
    tmp_path: Path, free_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    data = tmp_path / "old"
    data.mkdir(mode=0o755)
    data.chmod(0o755)
    controller = prepare(Settings(data_dir=data, port=free_port))
    controller.db.dispose()
    assert _mode(data) == 0o700
    assert any("accessible to other users" in r.getMessage() for r in caplog.records)


@pytest.fixture
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ---------------------------------------------------------------- (10) events reveal no host name or pid


def test_runner_events_show_no_host_name_or_pid(database: Database, tmp_path: Path) -> None:
    from tests.service_helpers import spec as runner_spec
    from workers.runner import run_claim

    body = runner_spec(dataset={"name": "npz", "path": "/nonexistent/data.npz"})  # fails at once: no dataset roots
    with database.session() as s:
        row, _ = repo.create_search(s, repo.create_user(s, "alice"), body)
    claim = repo.claim_next(database, free_cpus=4, free_gpus=0, per_user_limit=4, lease_s=60)
    assert claim is not None and claim.search_id == row.id
    run_claim(Settings(data_dir=tmp_path), claim, db=database)
    with database.session() as s:
        events = repo.list_events(s, claim.search_id, limit=1000)
        runner = repo.get_search(s, claim.search_id).runner
    assert events and "runner started" in events[0].message
    for event in events:
        text = json.dumps({"message": event.message, "data": getattr(event, "data", None)}, default=str)
        assert socket.gethostname() not in text and f"pid {os.getpid()}" not in text, text
    assert runner["host"] == socket.gethostname() and runner["pid"] == os.getpid()  # kept for admins in the row
