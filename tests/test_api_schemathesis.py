"""Property-based run of the OpenAPI document (schemathesis 4): no 5xx, and every response conforms to the schema.

SQLite only (the contract is backend-independent; the other API tests cover PostgreSQL). A finished search with
events, candidates and an artifact is seeded, and about half of the generated ``search_id`` values are replaced by
its id, so the 200 responses of every per-search route are checked too, not only their 404s. The SSE stream is
included: the seeded search has ended, so its stream finishes by itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy import update

from api.app import create_app
from nas.events import Event, EventType
from service.settings import Settings
from service.store import Database, repo, upgrade
from service.store.models import Search

pytestmark = pytest.mark.slow  # property-based fuzzing of every operation

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
SPEC = {
    "name": "seeded",
    "space": {"name": "nasnet", "macro": {"cells_per_stack": 1, "filters": 8}},
    "dataset": {"name": "digits"},
    "strategy": {"name": "random", "options": {}},
}


@dataclass
class Seeded:
    app: FastAPI
    token: str
    search_id: str


@pytest.fixture
def seeded(tmp_path: Path) -> Seeded:
    db = Database(f"sqlite:///{tmp_path / 'nas.db'}")
    upgrade(db.engine)
    root = tmp_path / "datasets"
    root.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / "result.json").write_text("{}")
    with db.session() as s:
        user = repo.create_user(s, "alice")
        token = repo.create_token(s, user)
        search, _ = repo.create_search(s, user, SPEC)
        sid = search.id
        repo.add_events(s, sid, 1, [Event(type=EventType.EPOCH, phase="supernet", step=1, total=1, metrics={"x": 1})])
        arch = {"hash": "h1", "space": "nasnet"}
        repo.upsert_candidates(s, sid, [{"arch": arch, "metrics": {"accuracy": 0.5, "params": 10}, "pareto": True}])
        repo.register_artifacts(s, sid, out, [out / "result.json"], "result")
        result = {"elapsed_s": 1.0, "best": arch, "final": []}
        s.execute(update(Search).where(Search.id == sid).values(status="succeeded", output_dir=str(out), result=result))
    app = create_app(Settings(data_dir=tmp_path, dataset_roots=[root]), db=db)
    return Seeded(app, token, sid)


# The schema is read from an app on an unopened in-memory database (serving the OpenAPI touches no database); each
# test calls a fresh app on a seeded database. (schemathesis.pytest.from_fixture breaks on pytest 9.2: it sets
# Function._nodeid, which pytest no longer has.)
schema = schemathesis.openapi.from_asgi(
    "/api/v1/openapi.json", create_app(Settings(data_dir=Path("unused")), db=Database("sqlite://"))
)


@schema.parametrize()
@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_openapi_contract(case: schemathesis.Case, seeded: Seeded) -> None:
    params = case.path_parameters or {}
    if "search_id" in params and len(str(params["search_id"])) % 2 == 0:
        params["search_id"] = seeded.search_id
    case.call_and_validate(app=seeded.app, headers={"Authorization": f"Bearer {seeded.token}"}, checks=CHECKS)
