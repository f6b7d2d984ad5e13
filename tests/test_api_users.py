"""Users and tokens through the API (issue 10, defect 3) and the per-user quotas (defect 10), on SQLite and
PostgreSQL: admins manage users and tokens, everyone else gets 403; revoked and expired tokens and disabled users get
401; a non-admin's priority and queue are bounded."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from nas.client.models import TokenCreated, TokenOut, UserDisabled, UserInfo
from service.store import Database, repo
from service.store.models import ApiToken, utcnow
from tests.api_helpers import spec
from tests.test_api import Env, make_env

PROBLEM = "application/problem+json"


@pytest.fixture
def env(database: Database, tmp_path: Path) -> Iterator[Env]:
    app, tokens, root = make_env(database, tmp_path, max_queued_per_user=2, max_priority_user=10)
    with TestClient(app) as client:
        yield Env(client, database, tokens, root)


def problem(r: Any, status: int, field: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM
    body: dict[str, Any] = r.json()
    if field is not None:
        assert body["field"] == field, body
    return body


def test_non_admins_are_forbidden(env: Env) -> None:
    c, h = env.client, env.h("alice")
    problem(c.get("/api/v1/users", headers=h), 403, "Authorization")
    problem(c.post("/api/v1/users", json={"name": "eve", "is_admin": True}, headers=h), 403)
    problem(c.post("/api/v1/users/bob/disable", headers=h), 403)
    problem(c.post("/api/v1/users/alice/enable", headers=h), 403)
    problem(c.get("/api/v1/users/alice/tokens", headers=h), 403)
    problem(c.post("/api/v1/users/alice/tokens", json={}, headers=h), 403)
    problem(c.delete("/api/v1/users/alice/tokens/1", headers=h), 403)
    problem(c.get("/api/v1/users"), 401)


def test_admin_creates_user_and_token_lists_and_revokes(env: Env) -> None:
    c, h = env.client, env.h("root")
    r = c.post("/api/v1/users", json={"name": "carol"}, headers=h)
    assert r.status_code == 201, r.text
    assert UserInfo.model_validate(r.json()).active_tokens == 0
    problem(c.post("/api/v1/users", json={"name": "carol"}, headers=h), 409, "name")
    problem(c.post("/api/v1/users", json={"name": "no spaces"}, headers=h), 422, "name")

    r = c.post("/api/v1/users/carol/tokens", json={"name": "laptop", "expires_in_days": 30}, headers=h)
    assert r.status_code == 201, r.text
    created = TokenCreated.model_validate(r.json())
    assert created.token.startswith(created.prefix) and created.expires_at is not None
    assert c.get("/api/v1/me", headers={"Authorization": f"Bearer {created.token}"}).json()["name"] == "carol"

    listed = [TokenOut.model_validate(t) for t in c.get("/api/v1/users/carol/tokens", headers=h).json()]
    assert [(t.id, t.name, t.revoked_at) for t in listed] == [(created.id, "laptop", None)]
    assert "token" not in c.get("/api/v1/users/carol/tokens", headers=h).json()[0]
    users = {u["name"]: UserInfo.model_validate(u) for u in c.get("/api/v1/users", headers=h).json()}
    assert users["carol"].active_tokens == 1 and users["root"].is_admin

    r = c.delete(f"/api/v1/users/carol/tokens/{created.id}", headers=h)
    assert r.status_code == 200 and TokenOut.model_validate(r.json()).revoked_at is not None
    problem(c.get("/api/v1/me", headers={"Authorization": f"Bearer {created.token}"}), 401, "Authorization")
    # another user's token id, ids out of range, unknown users: 404/422 problems, never 500
    with env.db.session() as s:
        alice_token_id = repo.list_tokens(s, repo.get_user(s, "alice"))[0].id
    problem(c.delete(f"/api/v1/users/carol/tokens/{alice_token_id}", headers=h), 404, "token_id")
    problem(c.delete(f"/api/v1/users/carol/tokens/{2**40}", headers=h), 422, "token_id")
    problem(c.delete("/api/v1/users/carol/tokens/0", headers=h), 422, "token_id")
    problem(c.get("/api/v1/users/nobody/tokens", headers=h), 404, "name")
    problem(c.get("/api/v1/users/%00x/tokens", headers=h), 404, "name")
    problem(c.post("/api/v1/users/carol/tokens", json={"expires_in_days": 0}, headers=h), 422, "expires_in_days")


def test_expired_token_is_401(env: Env) -> None:
    with env.db.session() as s:
        s.execute(update(ApiToken).values(expires_at=utcnow() - dt.timedelta(seconds=1)))
    problem(env.client.get("/api/v1/me", headers=env.h("alice")), 401, "Authorization")


def test_disable_cancels_searches_and_refuses_tokens_enable_restores(env: Env) -> None:
    c, h = env.client, env.h("root")
    queued = env.submit("alice")["id"]
    running = env.submit("alice")["id"]
    env.set_search(running, status="running")
    bobs = env.submit("bob")["id"]
    r = c.post("/api/v1/users/alice/disable", headers=h)
    assert r.status_code == 200, r.text
    out = UserDisabled.model_validate(r.json())
    assert out.disabled_at is not None and out.cancelled == [queued] and out.cancel_requested == [running]
    assert out.active_tokens == 1  # kept, not revoked
    problem(c.get("/api/v1/me", headers=env.h("alice")), 401, "Authorization")
    got = {i: c.get(f"/api/v1/searches/{i}", headers=h).json() for i in (queued, running, bobs)}
    assert got[queued]["status"] == "cancelled"
    assert got[running]["status"] == "running" and got[running]["cancel_requested"]
    assert got[bobs]["status"] == "queued"
    problem(c.post("/api/v1/users/root/disable", headers=h), 409, "name")  # not yourself
    problem(c.post("/api/v1/users/nobody/disable", headers=h), 404, "name")

    r = c.post("/api/v1/users/alice/enable", headers=h)
    assert r.status_code == 200 and r.json()["disabled_at"] is None
    assert c.get("/api/v1/me", headers=env.h("alice")).json()["name"] == "alice"


def test_priority_above_the_user_limit_is_422_admins_may(env: Env) -> None:
    c = env.client
    body = problem(c.post("/api/v1/searches", json={"spec": spec(), "priority": 100}, headers=env.h("alice")), 422)
    assert body["field"] == "priority" and body["errors"][0]["field"] == "priority"
    assert env.submit("alice", {"spec": spec(), "priority": 10})["priority"] == 10
    assert env.submit("root", {"spec": spec(), "priority": 100})["priority"] == 100


def test_queued_quota_is_429_with_retry_after(env: Env) -> None:
    c = env.client
    first = env.submit("alice")["id"]
    env.submit("alice", **{"Idempotency-Key": "k1"})
    r = c.post("/api/v1/searches", json={"spec": spec()}, headers=env.h("alice"))
    body = problem(r, 429, "status")
    assert int(r.headers["retry-after"]) > 0 and "at most 2" in body["detail"]
    env.submit("bob")  # per user
    for _ in range(3):
        env.submit("root")  # admins: no limit
    # a retry counts too: cancel one (room for one more), fill it, then the retry is refused
    assert c.post(f"/api/v1/searches/{first}/cancel", headers=env.h("alice")).status_code == 202
    env.submit("alice")
    problem(c.post(f"/api/v1/searches/{first}/retry", headers=env.h("alice")), 429, "status")
    # an idempotent replay of a stored search is not a new one: answered, not refused
    r = c.post("/api/v1/searches", json={"spec": spec()}, headers={**env.h("alice"), "Idempotency-Key": "k1"})
    assert r.status_code == 200, r.text
