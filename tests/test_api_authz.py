"""Authorization, generated from the OpenAPI document (issue 10): every operation that takes a search id or a user
name is called as another, non-admin user (bob) on alice's search and alice's user, and must answer 404 or 403
problem+json, never 2xx. An operation that is neither exercised that way nor listed in PUBLIC fails the test, so a
new endpoint cannot be forgotten."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from nas.space import get_space
from service.store import Database, repo
from tests.api_helpers import spec
from tests.test_api import Env, make_env

PROBLEM = "application/problem+json"

# Operations that take neither a search id nor a user name: each says why another user cannot reach alice's data
# through it (the listing is checked below). A new operation must be added here or be exercised by the checks.
PUBLIC: dict[tuple[str, str], str] = {
    ("POST", "/api/v1/searches"): "creates a search owned by the caller",
    ("GET", "/api/v1/searches"): "lists the caller's own searches only (checked below)",
    ("GET", "/api/v1/spaces"): "catalog, no user data",
    ("GET", "/api/v1/spaces/{name}"): "catalog (a space name, not a user name)",
    ("POST", "/api/v1/spaces/{name}/architecture.svg"): "draws the architecture in the body (a space name)",
    ("GET", "/api/v1/strategies"): "catalog, no user data",
    ("GET", "/api/v1/datasets"): "catalog, no user data",
    ("GET", "/api/v1/cluster"): "counts of all users' searches, no ids or names",
    ("GET", "/api/v1/me"): "the caller",
    ("GET", "/healthz"): "liveness",
    ("GET", "/readyz"): "readiness",
    ("GET", "/metrics"): "Prometheus counters, no ids or names",
}
ADMIN_PREFIX = "/api/v1/users"  # every operation under it is for admins only
METHODS = {"get", "post", "put", "patch", "delete"}


@dataclass
class Owned:
    env: Env
    search_id: str
    artifact_id: int
    token_id: int
    arch_hash: str


@pytest.fixture
def owned(database: Database, tmp_path: Path) -> Iterator[Owned]:
    app, tokens, root = make_env(database, tmp_path)
    with TestClient(app) as client:
        env = Env(client, database, tokens, root)
        search_id = env.submit("alice", {"spec": spec()})["id"]
        out = tmp_path / "searches" / search_id
        out.mkdir(parents=True)
        (out / "result.json").write_text("{}")
        env.set_search(search_id, status="failed", output_dir=str(out))  # retry-able, so a 2xx would be possible
        with database.session() as s:
            (artifact,) = repo.register_artifacts(s, search_id, out, [out / "result.json"], "result")
            artifact_id = artifact.id
            token_id = repo.list_tokens(s, repo.get_user(s, "alice"))[0].id
            arch = get_space("nasnet").sample(random.Random(0))
            repo.upsert_candidates(s, search_id, [{"arch": arch.model_dump(mode="json"), "metrics": {"accuracy": 0.5}}])
        yield Owned(env, search_id, artifact_id, token_id, arch.hash)


def operations(client: TestClient) -> list[tuple[str, str, dict[str, Any]]]:
    doc = client.app.openapi()  # type: ignore[attr-defined]
    return [(m.upper(), p, op) for p, item in doc["paths"].items() for m, op in item.items() if m in METHODS]


def fill(path: str, op: dict[str, Any], o: Owned) -> str:
    values = {"search_id": o.search_id, "artifact_id": str(o.artifact_id), "name": "alice", "token_id": str(o.token_id),
              "arch_hash": o.arch_hash}  # fmt: skip
    for p in op.get("parameters", []):
        if p["in"] == "path":
            assert p["name"] in values, f"{path}: path parameter {p['name']!r} has no value here; add one"
            path = path.replace("{" + p["name"] + "}", values[p["name"]])
    return path


def call(o: Owned, user: str, method: str, url: str, op: dict[str, Any]) -> Any:
    body = {} if "requestBody" in op else None
    return o.env.client.request(method, url, json=body, headers=o.env.h(user))


def test_every_operation_is_exercised_or_public(owned: Owned) -> None:
    client = owned.env.client
    exercised = []
    for method, path, op in operations(client):
        takes_search = "{search_id}" in path
        admin_only = path == ADMIN_PREFIX or path.startswith(ADMIN_PREFIX + "/")
        if not (takes_search or admin_only):
            assert (method, path) in PUBLIC, f"{method} {path} is neither checked for authorization nor public"
            continue
        url = fill(path, op, owned)
        r = call(owned, "bob", method, url, op)
        expected = 404 if takes_search else 403
        assert r.status_code == expected, f"{method} {url} as bob: {r.status_code} {r.text[:200]}"
        assert r.headers["content-type"] == PROBLEM, f"{method} {url}: {r.headers['content-type']}"
        exercised.append((method, path))
    assert len(exercised) >= 15  # the search and user routes were found (a renamed parameter would drop them)
    # the owner (or an admin) does reach what bob did not: the 404s above are not from badly filled parameters
    for method, path, op in operations(client):
        if method != "GET" or path.endswith("/stream") or (method, path) in PUBLIC:
            continue
        url = fill(path, op, owned)
        user = "root" if path.startswith(ADMIN_PREFIX) else "alice"
        r = call(owned, user, method, url, op)
        assert 200 <= r.status_code < 300, f"{method} {url} as {user}: {r.status_code} {r.text[:200]}"
    with owned.env.db.session() as s:  # bob's calls changed nothing
        search = repo.get_search(s, owned.search_id)
        assert search.status == "failed" and repo.get_user(s, "alice").disabled_at is None


def test_listing_shows_only_the_callers_searches(owned: Owned) -> None:
    c, h = owned.env.client, owned.env.h("bob")
    for query in ("", "?owner=alice", f"?name={spec()['name']}"):
        page = c.get(f"/api/v1/searches{query}", headers=h).json()
        assert page["total"] == 0 and page["items"] == [], query
    assert owned.search_id not in c.get("/api/v1/cluster", headers=h).text
