"""Killing and restarting the controller loses and duplicates nothing."""

from __future__ import annotations

import uuid

import httpx
import pytest

from api.launcher import ServiceProcess
from nas.client import Client
from tests.service_helpers import FAST_ENV, checkpointed_runner_pid, spec, store, wait_for
from workers.runner import HOLD_ENV, HOLD_MESSAGE

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(900)]


def _post(url: str, token: str, body: dict, key: str) -> httpx.Response:
    return httpx.post(f"{url}/api/v1/searches", json={"spec": body}, timeout=30,
                      headers={"Authorization": f"Bearer {token}", "Idempotency-Key": key})  # fmt: skip


def test_controller_crash_loses_and_duplicates_nothing(tmp_path) -> None:
    # first attempts of the "crash" searches hold after their first checkpoint (workers/runner.py's test hook): the
    # controller dies while the first one is surely mid-training, however fast the machine
    service = ServiceProcess(tmp_path / "svc", env={**FAST_ENV, HOLD_ENV: "crash:1"}).start()
    token = service.token
    keys = [uuid.uuid4().hex for _ in range(3)]
    ids = []
    for key in keys:
        r = _post(service.url, token, spec(name="crash"), key)
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
    db = store(service.data_dir)
    wait_for(lambda: checkpointed_runner_pid(db, ids[0]), 180, "a checkpoint of the first search")

    service.kill()  # the controller and its in-process Ray die mid-training
    with pytest.raises(httpx.TransportError):
        _post(service.url, token, spec(name="crash"), keys[0])

    service.env = FAST_ENV  # after the restart every attempt runs through (a third search may still be on attempt 1)
    service.start()
    for key, sid in zip(keys, ids, strict=True):  # clients retrying their submissions create nothing new
        r = _post(service.url, token, spec(name="crash"), key)
        assert r.status_code == 200 and r.json()["id"] == sid

    with Client(service.url, token) as client:
        finals = [client.search(sid).wait(timeout=400) for sid in ids]
        listed = client.searches(limit=100)
    service.stop()

    assert sorted(s.id for s in listed) == sorted(ids)
    assert all(f.status == "succeeded" for f in finals)
    assert finals[0].attempts == 2  # interrupted once, resumed once
    results = {(str(f.result.final[0].arch), str(f.result.final[0].metrics)) for f in finals if f.result}
    assert len(results) == 1  # the resumed search ends exactly like the uninterrupted ones

    from service.store import repo

    with db.session() as s:
        for sid in ids:
            events = repo.list_events(s, sid, limit=100_000)
            if sid == ids[0]:  # the controller died while the hook held its first attempt
                assert any(e.attempt == 1 and HOLD_MESSAGE in (e.message or "") for e in events)
            assert sum(e.type == "finished" for e in events) == 1
            artifacts = [a.name for a in repo.list_artifacts(s, sid)]
            assert len(artifacts) == len(set(artifacts)) and any(a.startswith("final/") for a in artifacts)
    db.dispose()
