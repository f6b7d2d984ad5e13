"""200 concurrent submissions over real HTTP (uvicorn on 127.0.0.1) are each stored exactly once, on both backends."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from api.app import create_app
from service.settings import Settings
from service.store import Database, repo
from tests.live_service import uvicorn_in_thread

pytestmark = pytest.mark.slow  # 200 concurrent requests to a real server, per backend

N = 200
SPEC = {
    "name": "t",
    "space": {"name": "nasnet", "macro": {"cells_per_stack": 1, "filters": 8}},
    "dataset": {"name": "digits"},
    "strategy": {"name": "random", "options": {}},
}


@pytest.fixture
def server(database: Database, tmp_path: Path) -> Iterator[str]:
    """The app in uvicorn on a free loopback port, in a thread; stopped after the test."""
    app = create_app(Settings(data_dir=tmp_path, max_queued_per_user=N), db=database)  # the quota is not tested here
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on", backlog=512)
    with uvicorn_in_thread(config) as url:
        yield url


async def _submit_all(base: str, token: str, keys: list[str], names: list[str]) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=N, max_keepalive_connections=N)
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, limits=limits, timeout=120) as client:
        return await asyncio.gather(
            *(
                client.post("/api/v1/searches", json={"spec": {**SPEC, "name": name}}, headers={"Idempotency-Key": key})
                for key, name in zip(keys, names, strict=True)
            )
        )


def test_200_concurrent_submissions_are_stored_exactly_once(server: str, database: Database) -> None:
    with database.session() as s:
        token = repo.create_token(s, repo.create_user(s, "alice"))  # a fresh token: its first use writes last_used
        admin = repo.create_user(s, "root", admin=True)

    keys = [f"key-{i}" for i in range(N)]
    names = [f"search-{i}" for i in range(N)]
    responses = asyncio.run(_submit_all(server, token, keys, names))
    assert [r.status_code for r in responses] == [201] * N, [r.text for r in responses if r.status_code != 201][:3]
    ids = [r.json()["id"] for r in responses]
    assert len(set(ids)) == N
    assert [r.json()["name"] for r in responses] == names
    with database.session() as s:
        assert repo.list_searches(s, admin, limit=1).total == N

    # a client that did not see its answers sends again: the same searches come back, nothing new is stored
    again = asyncio.run(_submit_all(server, token, keys[:20], names[:20]))
    assert [r.status_code for r in again] == [200] * 20
    assert [r.json()["id"] for r in again] == ids[:20]
    with database.session() as s:
        assert repo.list_searches(s, admin, limit=1).total == N
