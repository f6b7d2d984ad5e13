"""The per-user request rate limit (api.ratelimit; off unless NAS_RATE_LIMIT_PER_S is set): a token bucket per
user; an empty bucket answers 429 problem+json with Retry-After, and other users are not affected."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.ratelimit import RateLimiter, retry_after_header
from service.store import Database
from tests.test_api import Env, make_env


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_bucket_allows_the_burst_then_the_rate() -> None:
    clock = Clock()
    limiter = RateLimiter(2.0, 3, clock=clock)
    assert [limiter.take(1) for _ in range(3)] == [0.0, 0.0, 0.0]  # the burst
    assert limiter.take(1) == pytest.approx(0.5)  # one token comes every 1/2 s
    assert limiter.take(2) == 0.0  # buckets are per key
    clock.now += 0.5
    assert limiter.take(1) == 0.0
    assert limiter.take(1) > 0
    clock.now += 60  # refills to the burst, no further
    assert [limiter.take(1) for _ in range(4)][-1] > 0
    assert retry_after_header(0.01) == "1" and retry_after_header(2.2) == "3"
    with pytest.raises(ValueError):
        RateLimiter(0.0, 1)


@pytest.fixture
def env(database: Database, tmp_path: Path) -> Iterator[Env]:
    app, tokens, root = make_env(database, tmp_path, rate_limit_per_s=0.01, rate_limit_burst=3)
    with TestClient(app) as client:
        yield Env(client, database, tokens, root)


def test_a_user_over_the_rate_gets_429_with_retry_after_and_others_do_not(env: Env) -> None:
    for _ in range(3):
        assert env.client.get("/api/v1/me", headers=env.h("alice")).status_code == 200
    r = env.client.get("/api/v1/me", headers=env.h("alice"))
    assert r.status_code == 429, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert int(r.headers["retry-after"]) >= 1
    assert "NAS_RATE_LIMIT_PER_S" in r.json()["detail"]
    assert env.client.get("/api/v1/me", headers=env.h("bob")).status_code == 200


def test_no_limit_by_default(database: Database, tmp_path: Path) -> None:
    app, tokens, root = make_env(database, tmp_path)
    with TestClient(app) as client:
        env = Env(client, database, tokens, root)
        assert all(client.get("/api/v1/me", headers=env.h("alice")).status_code == 200 for _ in range(150))
