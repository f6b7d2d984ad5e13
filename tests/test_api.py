"""The REST API on SQLite and PostgreSQL: searches, events (JSON and SSE), candidates, artifacts, catalog, health."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from api.app import create_app
from nas.client.models import ClusterOut, NodeOut, SearchOut
from nas.events import Event, EventType
from service.settings import Settings
from service.store import Database, repo
from service.store.migrate import downgrade
from service.store.models import Search
from tests.api_helpers import spec


@dataclass
class Env:
    client: TestClient
    db: Database
    tokens: dict[str, str]
    root: Path

    def h(self, user: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[user]}"}

    def submit(self, user: str = "alice", body: dict[str, Any] | None = None, **headers: str) -> dict[str, Any]:
        r = self.client.post("/api/v1/searches", json=body or {"spec": spec()}, headers={**self.h(user), **headers})
        assert r.status_code in (200, 201), r.text
        return r.json()

    def set_search(self, search_id: str, **values: Any) -> None:
        with self.db.session() as s:
            s.execute(update(Search).where(Search.id == search_id).values(**values))


def make_env(db: Database, tmp_path: Path, **settings: Any) -> tuple[Any, dict[str, str], Path]:
    root = tmp_path / "datasets"
    root.mkdir(exist_ok=True)
    app = create_app(Settings(data_dir=tmp_path, dataset_roots=[root], **settings), db=db)
    tokens = {}
    with db.session() as s:
        for name, admin in (("alice", False), ("bob", False), ("root", True)):
            tokens[name] = repo.create_token(s, repo.create_user(s, name, admin=admin))
    return app, tokens, root


@pytest.fixture
def env(database: Database, tmp_path: Path):
    app, tokens, root = make_env(database, tmp_path)
    with TestClient(app) as client:
        yield Env(client, database, tokens, root)


# ---------------------------------------------------------------- searches


def test_create_returns_201_with_location_and_get_returns_it(env: Env) -> None:
    r = env.client.post(
        "/api/v1/searches", json={"spec": spec(), "priority": 5, "max_attempts": 7}, headers=env.h("alice")
    )
    assert r.status_code == 201
    out = SearchOut.model_validate(r.json())
    assert r.headers["location"] == f"/api/v1/searches/{out.id}"
    assert (out.owner, out.status, out.priority, out.max_attempts) == ("alice", "queued", 5, 7)
    assert out.resources == {"cpus": 1.0, "gpus": 0.0}
    assert out.spec.space.macro == {"cells_per_stack": 1, "filters": 8}
    got = env.client.get(r.headers["location"], headers=env.h("alice"))
    assert got.status_code == 200 and got.json() == r.json()

    # defaults: max_attempts from the settings, resources from the spec
    body = {"spec": spec(resources={"cpus": 2, "gpus": 0.5})}
    second = env.submit(body=body)
    assert second["max_attempts"] == Settings().max_attempts
    assert second["resources"] == {"cpus": 2.0, "gpus": 0.5}
    with env.db.session() as s:
        row = repo.get_search(s, second["id"])
        assert (row.cpus, row.gpus, row.status) == (2.0, 0.5, "queued")


def test_get_shows_progress_and_result(env: Env) -> None:
    sid = env.submit()["id"]
    result = {"elapsed_s": 1.5, "best": {"space": "nasnet"}, "final": [{"arch": {"a": 1}, "metrics": {"accuracy": 0.9},
                                                                        "path": "final/1"}]}  # fmt: skip
    env.set_search(sid, status="succeeded", phase="retrain", progress_step=3, progress_total=4, result=result)
    out = env.client.get(f"/api/v1/searches/{sid}", headers=env.h("alice")).json()
    assert out["progress"] == {"phase": "retrain", "step": 3, "total": 4, "fraction": 0.75}
    assert out["result"]["elapsed_s"] == 1.5 and out["result"]["final"][0]["metrics"] == {"accuracy": 0.9}


def test_list_filters_sorts_and_pages(env: Env) -> None:
    ids = [env.submit(body={"spec": spec(name=f"alpha-{i}"), "priority": i})["id"] for i in range(5)]
    bob = env.submit("bob", body={"spec": spec(name="beta")})["id"]
    env.client.post(f"/api/v1/searches/{ids[0]}/cancel", headers=env.h("alice"))

    def page(user: str, **params: Any) -> dict[str, Any]:
        r = env.client.get("/api/v1/searches", params=params, headers=env.h(user))
        assert r.status_code == 200, r.text
        return r.json()

    mine = page("alice")
    assert mine["total"] == 5 and {s["id"] for s in mine["items"]} == set(ids)
    assert [s["id"] for s in mine["items"]] == ids[::-1]  # newest first
    assert page("bob")["total"] == 1
    assert page("root")["total"] == 6
    assert [s["id"] for s in page("root", owner="bob")["items"]] == [bob]
    assert page("alice", owner="bob")["total"] == 0  # a user's view never includes others' searches
    assert [s["id"] for s in page("alice", status="cancelled")["items"]] == [ids[0]]
    assert page("alice", status=["cancelled", "queued"])["total"] == 5
    assert page("root", name="beta")["total"] == 1
    by_priority = page("alice", sort="priority", order="asc")["items"]
    assert [s["priority"] for s in by_priority] == [0, 1, 2, 3, 4]
    second = page("alice", sort="priority", order="asc", limit=2, offset=2)
    assert [s["priority"] for s in second["items"]] == [2, 3]
    assert (second["total"], second["limit"], second["offset"]) == (5, 2, 2)
    assert page("alice", limit=2, offset=10)["items"] == []


def test_idempotency_key_replays_and_conflicts(env: Env) -> None:
    first = env.client.post(
        "/api/v1/searches", json={"spec": spec()}, headers={**env.h("alice"), "Idempotency-Key": "k1"}
    )
    assert first.status_code == 201
    again = env.client.post(
        "/api/v1/searches", json={"spec": spec()}, headers={**env.h("alice"), "Idempotency-Key": "k1"}
    )
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    assert again.headers["location"] == first.headers["location"]
    other = env.client.post(
        "/api/v1/searches", json={"spec": spec(name="other")}, headers={**env.h("alice"), "Idempotency-Key": "k1"}
    )
    assert other.status_code == 409
    assert other.headers["content-type"] == "application/problem+json"
    assert other.json()["field"] == "Idempotency-Key"
    # keys belong to their owner: bob's "k1" is a new search
    bob = env.client.post("/api/v1/searches", json={"spec": spec()}, headers={**env.h("bob"), "Idempotency-Key": "k1"})
    assert bob.status_code == 201 and bob.json()["id"] != first.json()["id"]
    with env.db.session() as s:
        assert repo.list_searches(s, repo.get_user(s, "root")).total == 2


def test_cancel_and_retry(env: Env) -> None:
    sid = env.submit()["id"]
    r = env.client.post(f"/api/v1/searches/{sid}/cancel", headers=env.h("alice"))
    assert r.status_code == 202
    assert r.json()["status"] == "cancelled" and r.json()["cancel_requested"] is True
    twice = env.client.post(f"/api/v1/searches/{sid}/cancel", headers=env.h("alice"))
    assert twice.status_code == 409 and twice.json()["field"] == "status"
    retry = env.client.post(f"/api/v1/searches/{sid}/retry", headers=env.h("alice"))
    assert retry.status_code == 202
    assert retry.json()["status"] == "queued" and retry.json()["cancel_requested"] is False
    again = env.client.post(f"/api/v1/searches/{sid}/retry", headers=env.h("alice"))
    assert again.status_code == 409 and again.headers["content-type"] == "application/problem+json"

    # a running search is asked to stop; its status stays until the runner stops
    env.set_search(sid, status="running")
    running = env.client.post(f"/api/v1/searches/{sid}/cancel", headers=env.h("alice"))
    assert running.status_code == 202
    assert running.json()["status"] == "running" and running.json()["cancel_requested"] is True

    # an admin may cancel anyone's search
    other = env.submit("bob")["id"]
    assert env.client.post(f"/api/v1/searches/{other}/cancel", headers=env.h("root")).status_code == 202


# ---------------------------------------------------------------- events


def _add_events(db: Database, sid: str, n: int, start: int = 0) -> None:
    with db.session() as s:
        events = [Event(type=EventType.EPOCH, phase="supernet", step=start + i + 1, total=10,
                        metrics={"loss": 1.0 / (start + i + 1)}) for i in range(n)]  # fmt: skip
        repo.add_events(s, sid, 1, events)


def _read_sse(client: TestClient, url: str, headers: dict[str, str]) -> list[dict[str, str]]:
    """Parse a whole text/event-stream into events ({'id', 'event', 'data'}); comment lines are pings."""
    out: list[dict[str, str]] = []
    current: dict[str, str] = {}
    with client.stream("GET", url, headers=headers) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if not line:
                if current:
                    out.append(current)
                current = {}
                continue
            if line.startswith(":"):
                continue
            key, _, value = line.partition(":")
            current[key] = current.get(key, "") + value.removeprefix(" ")
    if current:
        out.append(current)
    return out


def test_events_json_pages(env: Env) -> None:
    sid = env.submit()["id"]
    _add_events(env.db, sid, 5)
    r = env.client.get(f"/api/v1/searches/{sid}/events", headers=env.h("alice"))
    assert r.status_code == 200
    events = r.json()
    assert [e["step"] for e in events] == [1, 2, 3, 4, 5]
    assert all(e["type"] == "epoch" and e["search_id"] == sid for e in events)
    ids = [e["id"] for e in events]
    assert ids == sorted(ids)
    after = env.client.get(
        f"/api/v1/searches/{sid}/events", params={"after": ids[1], "limit": 2}, headers=env.h("alice")
    )
    assert [e["step"] for e in after.json()] == [3, 4]


def test_sse_stream_yields_events_in_order_and_ends(env: Env) -> None:
    sid = env.submit()["id"]
    _add_events(env.db, sid, 4)
    env.set_search(sid, status="succeeded")
    url = f"/api/v1/searches/{sid}/events/stream"
    events = _read_sse(env.client, url, env.h("alice"))
    assert [e["event"] for e in events] == ["epoch"] * 4 + ["end"]
    data = [json.loads(e["data"]) for e in events[:4]]
    assert [d["step"] for d in data] == [1, 2, 3, 4]
    assert [int(e["id"]) for e in events[:4]] == [d["id"] for d in data]
    end = SearchOut.model_validate_json(events[-1]["data"])
    assert end.id == sid and end.status == "succeeded"

    # resume: Last-Event-ID (what EventSource sends on reconnect) and ?after= skip what was seen
    resumed = _read_sse(env.client, url, {**env.h("alice"), "Last-Event-ID": events[1]["id"]})
    assert [json.loads(e["data"])["step"] for e in resumed[:-1]] == [3, 4] and resumed[-1]["event"] == "end"
    after = _read_sse(env.client, f"{url}?after={events[2]['id']}", env.h("alice"))
    assert [json.loads(e["data"])["step"] for e in after[:-1]] == [4]


def test_sse_stream_follows_a_live_search(env: Env) -> None:
    sid = env.submit()["id"]
    env.set_search(sid, status="running")
    _add_events(env.db, sid, 1)

    def runner() -> None:
        for i in range(3):
            time.sleep(0.2)
            _add_events(env.db, sid, 1, start=i + 1)
        env.set_search(sid, status="failed", error="boom")

    thread = threading.Thread(target=runner)
    thread.start()
    try:
        events = _read_sse(env.client, f"/api/v1/searches/{sid}/events/stream", env.h("alice"))
    finally:
        thread.join()
    assert [json.loads(e["data"])["step"] for e in events[:-1]] == [1, 2, 3, 4]
    assert events[-1]["event"] == "end"
    assert json.loads(events[-1]["data"])["status"] == "failed"


# ---------------------------------------------------------------- candidates and artifacts


def _cand(h: str, acc: float | None, params: float, pareto: bool = False) -> dict[str, Any]:
    metrics = {"params": params, **({"accuracy": acc} if acc is not None else {})}
    return {"arch": {"hash": h, "space": "nasnet"}, "metrics": metrics, "pareto": pareto, "phase": "evolution"}


def test_candidates_sort_page_and_pareto(env: Env) -> None:
    sid = env.submit()["id"]
    with env.db.session() as s:
        repo.upsert_candidates(s, sid, [_cand("a", 0.5, 300), _cand("b", 0.9, 900, True), _cand("c", 0.7, 100, True),
                                        _cand("d", None, 50)])  # fmt: skip
    url = f"/api/v1/searches/{sid}/candidates"
    r = env.client.get(url, headers=env.h("alice"))
    assert r.status_code == 200
    body = r.json()
    assert body["total"] == 4
    assert [c["arch_hash"] for c in body["items"]] == ["b", "c", "a", "d"]  # accuracy desc, missing last
    by_params = env.client.get(url, params={"sort": "params", "order": "asc"}, headers=env.h("alice")).json()
    assert [c["arch_hash"] for c in by_params["items"]] == ["d", "c", "a", "b"]
    paged = env.client.get(url, params={"limit": 1, "offset": 1}, headers=env.h("alice")).json()
    assert [c["arch_hash"] for c in paged["items"]] == ["c"] and paged["total"] == 4
    only_pareto = env.client.get(url, params={"pareto": True}, headers=env.h("alice")).json()
    assert {c["arch_hash"] for c in only_pareto["items"]} == {"b", "c"} and only_pareto["total"] == 2
    front = env.client.get(f"/api/v1/searches/{sid}/pareto", headers=env.h("alice"))
    assert front.status_code == 200
    assert [c["arch_hash"] for c in front.json()] == ["b", "c"]
    assert all(c["pareto"] for c in front.json())
    assert front.json()[0]["accuracy"] == 0.9 and front.json()[0]["params"] == 900


def test_artifacts_list_and_download(env: Env, tmp_path: Path) -> None:
    sid = env.submit()["id"]
    out = tmp_path / "runs" / sid
    (out / "final" / "1-abc").mkdir(parents=True)
    weights = out / "final" / "1-abc" / "model.safetensors"
    weights.write_bytes(bytes(range(256)) * 10)
    (out / "result.json").write_text('{"ok": true}')
    (tmp_path / "secret.txt").write_text("not yours")
    with env.db.session() as s:
        repo.register_artifacts(s, sid, out, [weights], "model")
        repo.register_artifacts(s, sid, out, [out / "result.json"], "result")
        # a row naming a file outside the folder (a corrupted or malicious record) must not be served
        escaping = repo.register_artifacts(s, sid, tmp_path, [tmp_path / "secret.txt"], "log")[0]
        escaping.name = "../../secret.txt"
    env.set_search(sid, output_dir=str(out))

    listed = env.client.get(f"/api/v1/searches/{sid}/artifacts", headers=env.h("alice"))
    assert listed.status_code == 200
    by_name = {a["name"]: a for a in listed.json()}
    assert set(by_name) == {"final/1-abc/model.safetensors", "result.json", "../../secret.txt"}
    model = by_name["final/1-abc/model.safetensors"]
    assert (model["kind"], model["size"]) == ("model", 2560)

    r = env.client.get(f"/api/v1/searches/{sid}/artifacts/{model['id']}", headers=env.h("alice"))
    assert r.status_code == 200
    assert r.content == weights.read_bytes()
    assert r.headers["content-type"] == "application/octet-stream"
    assert 'filename="model.safetensors"' in r.headers["content-disposition"]

    bad = env.client.get(
        f"/api/v1/searches/{sid}/artifacts/{by_name['../../secret.txt']['id']}", headers=env.h("alice")
    )
    assert bad.status_code == 404 and bad.json()["field"] == "artifact_id"
    assert "not yours" not in bad.text
    missing = env.client.get(f"/api/v1/searches/{sid}/artifacts/999999", headers=env.h("alice"))
    assert missing.status_code == 404 and missing.json()["field"] == "artifact_id"
    (out / "result.json").unlink()
    gone = env.client.get(f"/api/v1/searches/{sid}/artifacts/{by_name['result.json']['id']}", headers=env.h("alice"))
    assert gone.status_code == 404


# ---------------------------------------------------------------- catalog, cluster, me


def test_spaces_strategies_datasets(env: Env) -> None:
    spaces = env.client.get("/api/v1/spaces", headers=env.h("alice"))
    assert spaces.status_code == 200
    nasnet = next(s for s in spaces.json() if s["name"] == "nasnet")
    assert nasnet["log10_size"] > 10 and nasnet["macro_schema"]["properties"]
    one = env.client.get("/api/v1/spaces/nasnet", headers=env.h("alice"))
    assert one.status_code == 200 and one.json() == nasnet
    unknown = env.client.get("/api/v1/spaces/nope", headers=env.h("alice"))
    assert unknown.status_code == 404 and unknown.json()["field"] == "name" and "nasnet" in unknown.json()["detail"]

    strategies = {s["name"]: s for s in env.client.get("/api/v1/strategies", headers=env.h("alice")).json()}
    assert {"random", "spos", "darts", "optuna"} <= set(strategies)
    assert "trials" in strategies["random"]["options_schema"]["properties"]
    assert "epochs" in strategies["spos"]["options_schema"]["properties"]
    assert strategies["spos"]["tasks"] == ["classification"]

    datasets = {d["name"]: d for d in env.client.get("/api/v1/datasets", headers=env.h("alice")).json()}
    assert datasets["digits"]["needs_path"] is False and datasets["npz"]["needs_path"] is True
    assert datasets["digits"]["details"]["num_classes"] == 10


def test_cluster_and_me(env: Env) -> None:
    env.submit()
    running = env.submit()["id"]
    env.set_search(running, status="running")
    env.submit("bob")
    cluster = env.client.get("/api/v1/cluster", headers=env.h("alice"))
    assert cluster.status_code == 200
    assert cluster.json()["mode"] == "none"
    assert (cluster.json()["queued"], cluster.json()["running"]) == (2, 1)
    assert env.client.get("/api/v1/me", headers=env.h("alice")).json() == {"name": "alice", "is_admin": False}
    assert env.client.get("/api/v1/me", headers=env.h("root")).json() == {"name": "root", "is_admin": True}


class FakeExecutor:
    mode = "local"

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail

    def cluster(self) -> ClusterOut:
        if self.fail:
            raise RuntimeError("ray is gone: secret internal detail")
        node = NodeOut(node_id="n1", address="127.0.0.1", alive=True, resources={"CPU": 4.0, "GPU": 1.0})
        return ClusterOut(mode="local", address="127.0.0.1:6379", nodes=[node], total={"CPU": 4.0, "GPU": 1.0},
                          available={"CPU": 3.0, "GPU": 1.0})  # fmt: skip


def test_cluster_with_executor(database: Database, tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path), db=database, executor=FakeExecutor())
    with database.session() as s:
        token = repo.create_token(s, repo.create_user(s, "alice"))
    with TestClient(app) as client:
        h = {"Authorization": f"Bearer {token}"}
        assert client.post("/api/v1/searches", json={"spec": spec()}, headers=h).status_code == 201
        out = client.get("/api/v1/cluster", headers=h).json()
    assert out["mode"] == "local" and out["total"] == {"CPU": 4.0, "GPU": 1.0}
    assert out["nodes"][0]["node_id"] == "n1" and out["queued"] == 1


def test_unhandled_error_is_a_problem_without_internals(database: Database, tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path), db=database, executor=FakeExecutor(fail=True))
    with database.session() as s:
        token = repo.create_token(s, repo.create_user(s, "alice"))
    with TestClient(app, raise_server_exceptions=False) as client:
        r = client.get("/api/v1/cluster", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 500
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["title"] == "Internal Server Error"
    assert "secret internal detail" not in r.text and "Traceback" not in r.text


# ---------------------------------------------------------------- auth modes and lifespan


def test_auth_off_acts_as_admin_on_loopback_only(database: Database, tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path, auth=False), db=database)
    with TestClient(app, base_url="http://127.0.0.1:8321") as client:  # auth off: loopback Host names only
        assert client.get("/api/v1/me").json() == {"name": "admin", "is_admin": True}
        created = client.post("/api/v1/searches", json={"spec": spec()})
        assert created.status_code == 201 and created.json()["owner"] == "admin"
        assert client.get("/api/v1/me", headers={"Authorization": "Bearer wrong"}).status_code == 401
    with pytest.raises(ValueError, match="loopback"):
        create_app(Settings(data_dir=tmp_path, auth=False, host="0.0.0.0"), db=database)


class FakeScheduler:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def start(self) -> None:
        self.calls.append("start")

    def stop(self) -> None:
        self.calls.append("stop")


def test_scheduler_starts_and_stops_with_the_app(database: Database, tmp_path: Path) -> None:
    scheduler = FakeScheduler()
    app = create_app(Settings(data_dir=tmp_path), db=database, scheduler=scheduler)
    with TestClient(app) as client:
        assert scheduler.calls == ["start"]
        assert client.get("/healthz").status_code == 200
    assert scheduler.calls == ["start", "stop"]


def test_own_database_is_migrated_at_startup(tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path))
    with TestClient(app) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["database"] == "sqlite"
    assert (tmp_path / "nas.db").is_file()


# ---------------------------------------------------------------- health and metrics


def test_health_ready_and_metrics(env: Env) -> None:
    assert env.client.get("/healthz").json() == {"status": "ok"}
    ready = env.client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready" and ready.json()["revision"]
    sid = env.submit()["id"]
    env.client.get(f"/api/v1/searches/{sid}", headers=env.h("alice"))
    env.client.get("/api/v1/searches/0123456789abcdef0123456789abcdef", headers=env.h("alice"))
    r = env.client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert 'nas_searches{status="queued"} 1.0' in text
    assert "nas_queue_length 1.0" in text
    assert 'nas_http_requests_total{method="GET",route="/api/v1/searches/{search_id}",status="200"} 1.0' in text
    assert 'nas_http_requests_total{method="GET",route="/api/v1/searches/{search_id}",status="404"} 1.0' in text
    assert 'nas_http_request_duration_seconds_count{method="POST",route="/api/v1/searches"} 1.0' in text


def test_readyz_is_503_when_the_schema_is_behind(env: Env) -> None:
    downgrade(env.db.engine, "base")
    r = env.client.get("/readyz")
    assert r.status_code == 503
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["field"] == "database" and "nas db upgrade" in r.json()["detail"]


def test_openapi_documents_problems_and_bearer_auth(env: Env) -> None:
    doc = env.client.get("/api/v1/openapi.json").json()
    assert doc["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    create = doc["paths"]["/api/v1/searches"]["post"]
    assert create["security"] == [{"HTTPBearer": []}]
    for code in ("400", "401", "409", "413", "422", "500"):
        assert list(create["responses"][code]["content"]) == ["application/problem+json"], code
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    assert "security" not in doc["paths"]["/healthz"]["get"]
