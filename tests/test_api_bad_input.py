"""Bad input gets the right 4xx as problem+json naming the field, and stores nothing (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from httpx import Response

from api.app import create_app
from nas.client.models import ClusterOut
from service.settings import Settings
from service.store import Database, repo
from tests.api_helpers import spec

URL = "/api/v1/searches"


@dataclass
class Env:
    client: TestClient
    db: Database
    tokens: dict[str, str]
    root: Path
    outside: Path

    def h(self, user: str = "alice") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[user]}"}

    def stored(self) -> int:
        with self.db.session() as s:
            return repo.list_searches(s, repo.get_user(s, "root")).total


def build(db: Database, tmp_path: Path, roots: list[Path] | None = None, **kwargs: Any) -> tuple[TestClient, Env]:
    root = tmp_path / "datasets"
    outside = tmp_path / "outside"
    for folder in (root, outside):
        folder.mkdir(exist_ok=True)
    app = create_app(Settings(data_dir=tmp_path, dataset_roots=[root] if roots is None else roots), db=db, **kwargs)
    tokens = {}
    with db.session() as s:
        for name, admin in (("alice", False), ("bob", False), ("root", True)):
            tokens[name] = repo.create_token(s, repo.create_user(s, name, admin=admin))
    client = TestClient(app)
    return client, Env(client, db, tokens, root, outside)


@pytest.fixture
def env(database: Database, tmp_path: Path) -> Iterator[Env]:
    client, e = build(database, tmp_path)
    with client:
        yield e


def assert_problem(r: Response, status: int, field: str | None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["status"] == status and body["title"]
    assert body.get("field") == field, body
    if field is not None:
        assert any(e["field"] == field for e in body["errors"]), body
    return body


def refused(env: Env, body: Any, status: int, field: str, **kwargs: Any) -> dict[str, Any]:
    """POST ``body``; assert the problem and that nothing was stored."""
    if not isinstance(body, (dict, list)):  # raw bytes, or a generator (sent chunked)
        r = env.client.post(URL, content=body, headers={**env.h(), "Content-Type": "application/json"}, **kwargs)
    else:
        r = env.client.post(URL, json=body, headers=env.h(), **kwargs)
    problem = assert_problem(r, status, field)
    assert env.stored() == 0
    return problem


# ---------------------------------------------------------------- the body itself


@pytest.mark.parametrize("raw", [b"{not json", b'{"spec": ', b"\xff\xfe", b"[1, 2", b"[" * 100_000])
def test_malformed_json_is_400(env: Env, raw: bytes) -> None:
    refused(env, raw, 400, "body")


def test_missing_body_is_422(env: Env) -> None:
    refused(env, b"", 422, "body")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"spec": spec(), "colour": "red"}, "colour"),
        ({"spec": spec(extra=1)}, "spec.extra"),
        ({"spec": spec(dataset={"name": "digits", "bogus": True})}, "spec.dataset.bogus"),
    ],
)
def test_unknown_fields_are_422(env: Env, body: dict[str, Any], field: str) -> None:
    problem = refused(env, body, 422, field)
    assert "unknown field" in problem["detail"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"spec": spec(), "priority": "high"}, "priority"),
        ({"spec": spec(seed="zero")}, "spec.seed"),
        ({"spec": spec(objectives="accuracy")}, "spec.objectives"),
        ({"spec": spec(space="nasnet")}, "spec.space"),
        ({"spec": []}, "spec"),
        ([1, 2, 3], "body"),
        ({"spec": spec(name="")}, "spec.name"),
        ({"spec": spec(objectives=["accuracy", "accuracy"])}, "spec.objectives"),
        ({"spec": spec(dataset={"name": "npz"})}, "spec.dataset.path"),
        ({"spec": spec(), "max_attempts": 0}, "max_attempts"),
    ],
)
def test_wrong_types_and_values_are_422(env: Env, body: Any, field: str) -> None:
    refused(env, body, 422, field)


def test_all_field_errors_are_listed(env: Env) -> None:
    problem = refused(env, {"spec": spec(seed=-1, device="tpu"), "priority": 1000}, 422, "spec.seed")
    assert {e["field"] for e in problem["errors"]} == {"spec.seed", "spec.device", "priority"}


def test_values_the_database_cannot_hold_are_422(env: Env) -> None:
    refused(env, {"spec": spec(name="nul\x00name")}, 422, "spec.name")
    raw = json.dumps({"spec": spec()}).replace('"filters": 8', '"filters": NaN').encode()
    refused(env, raw, 422, "spec.space.macro.filters")


# ---------------------------------------------------------------- size limit


def test_huge_body_by_content_length_is_413(env: Env) -> None:
    big = json.dumps({"spec": spec(name="x" * 100, padding="y" * 2_000_000)}).encode()
    problem = refused(env, big, 413, "body")
    assert "1000000" in problem["detail"]


def test_huge_chunked_body_is_413(env: Env) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"spec": {"name": "'
        for _ in range(40):
            yield b"x" * 50_000
        yield b'"}}'

    # a generator body is sent chunked, without Content-Length: the server must count what arrives
    refused(env, chunks(), 413, "body")


def test_invalid_content_length_is_400(env: Env) -> None:
    r = env.client.post(URL, content=b"{}", headers={**env.h(), "Content-Length": "abc"})
    assert_problem(r, 400, "Content-Length")
    assert env.stored() == 0


def test_idempotency_key_too_long_is_422(env: Env) -> None:
    r = env.client.post(URL, json={"spec": spec()}, headers={**env.h(), "Idempotency-Key": "k" * 201})
    assert_problem(r, 422, "Idempotency-Key")
    assert env.stored() == 0


# ---------------------------------------------------------------- budgets, spaces, strategies, datasets


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"strategy": {"name": "spos", "options": {"epochs": -1}}}, "spec.strategy.options.epochs"),
        ({"strategy": {"name": "spos", "options": {"epochs": 10**9}}}, "spec.strategy.options.epochs"),
        ({"strategy": {"name": "random", "options": {"trials": 10**9}}}, "spec.strategy.options.trials"),
        ({"strategy": {"name": "random", "options": {"train": {"epochs": -5}}}}, "spec.strategy.options.train.epochs"),
        ({"strategy": {"name": "random", "options": {"warp": 9}}}, "spec.strategy.options.warp"),
        ({"final": {"train": {"epochs": 10**9}}}, "spec.final.train.epochs"),
        ({"final": {"train": {"batch_size": -1}}}, "spec.final.train.batch_size"),
        ({"resources": {"cpus": 10**6}}, "spec.resources.cpus"),
    ],
)
def test_negative_and_absurd_budgets_are_422(env: Env, changes: dict[str, Any], field: str) -> None:
    refused(env, {"spec": spec(**changes)}, 422, field)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"strategy": {"name": "spos", "options": {"epochs": True}}}, "spec.strategy.options.epochs"),
        ({"strategy": {"name": "spos", "options": {"epochs": "2"}}}, "spec.strategy.options.epochs"),
        ({"strategy": {"name": "spos", "options": {"epochs": 1.5}}}, "spec.strategy.options.epochs"),
        ({"strategy": {"name": "spos", "options": {"strict_fairness": 1}}}, "spec.strategy.options.strict_fairness"),
        ({"strategy": {"name": "spos", "options": {"train": {"lr": "0.1"}}}}, "spec.strategy.options.train.lr"),
        (
            {"strategy": {"name": "darts", "options": {"arch_betas": [0.5, "0.9"]}}},
            "spec.strategy.options.arch_betas.1",
        ),
        ({"space": {"name": "nasnet", "macro": {"filters": False}}}, "spec.space.macro.filters"),
        ({"space": {"name": "nasnet", "options": {"attention": "yes"}}}, "spec.space.options.attention"),
        ({"dataset": {"name": "digits", "limit": "100"}}, "spec.dataset.limit"),
        ({"final": {"train": {"augment": "false"}}}, "spec.final.train.augment"),
        ({"name": 7}, "spec.name"),
        ({"seed": True}, "spec.seed"),
    ],
)
def test_values_of_the_wrong_type_are_422_not_coerced(env: Env, changes: dict[str, Any], field: str) -> None:
    refused(env, {"spec": spec(**changes)}, 422, field)


WRONG_TYPES = [
    ({"priority": True}, "priority"),
    ({"priority": "5"}, "priority"),
    ({"max_attempts": "2"}, "max_attempts"),
    ({"max_attempts": 1.5}, "max_attempts"),
]


@pytest.mark.parametrize(("body", "field"), WRONG_TYPES)
def test_request_fields_of_the_wrong_type_are_422_not_coerced(env: Env, body: dict[str, Any], field: str) -> None:
    refused(env, {"spec": spec(), **body}, 422, field)


def test_json_forms_of_numbers_and_tuples_are_accepted(env: Env) -> None:
    options = {"epochs": 2.0, "cpus_per_worker": 1, "train": {"lr": 3, "grad_clip": 3.0e5}}
    r = env.client.post(URL, json={"spec": spec(strategy={"name": "spos", "options": options})}, headers=env.h())
    assert r.status_code == 201, r.text
    darts = {"arch_betas": [0.5, 0.999]}
    r = env.client.post(URL, json={"spec": spec(strategy={"name": "darts", "options": darts})}, headers=env.h())
    assert r.status_code == 201, r.text


def test_unknown_space_strategy_and_dataset_are_422(env: Env) -> None:
    problem = refused(env, {"spec": spec(space={"name": "imaginary"})}, 422, "spec.space.name")
    assert "nasnet" in problem["detail"]  # says what is allowed
    problem = refused(env, {"spec": spec(strategy={"name": "gradient-magic"})}, 422, "spec.strategy.name")
    assert "random" in problem["detail"]
    refused(env, {"spec": spec(dataset={"name": "imagenet"})}, 422, "spec.dataset.name")
    refused(env, {"spec": spec(space={"name": "nasnet", "macro": {"filters": -3}})}, 422, "spec.space.macro.filters")
    refused(env, {"spec": spec(space={"name": "nasnet", "macro": {"wings": 2}})}, 422, "spec.space.macro.wings")
    final_macro = {"macro": {"filters": 0}}
    refused(env, {"spec": spec(final=final_macro)}, 422, "spec.final.macro.filters")


def _npz(path: Path) -> Path:
    np.savez(path, x_train=np.zeros((20, 8, 8, 1), np.uint8), y_train=np.zeros(20, np.int64))
    return path


def test_dataset_paths_must_stay_inside_the_roots(env: Env) -> None:
    inside = _npz(env.root / "ok.npz")
    secret = _npz(env.outside / "secret.npz")
    (env.root / "images").mkdir()

    def ds(name: str, path: str) -> dict[str, Any]:
        return {"spec": spec(dataset={"name": name, "path": path})}

    refused(env, ds("npz", str(secret)), 422, "spec.dataset.path")  # plainly outside
    refused(env, ds("npz", f"{env.root}/../outside/secret.npz"), 422, "spec.dataset.path")  # '..' escape
    refused(env, ds("imagefolder", "/etc"), 422, "spec.dataset.path")
    os.symlink(secret, env.root / "link.npz")  # a symlink inside a root pointing outside
    problem = refused(env, ds("npz", str(env.root / "link.npz")), 422, "spec.dataset.path")
    assert "outside the allowed dataset roots" in problem["detail"]
    os.symlink(env.outside, env.root / "linked-folder")
    refused(env, ds("imagefolder", str(env.root / "linked-folder")), 422, "spec.dataset.path")
    refused(env, ds("npz", "ok.npz"), 422, "spec.dataset.path")  # relative: ambiguous on the server
    refused(env, ds("npz", str(env.root / "missing.npz")), 422, "spec.dataset.path")
    refused(env, ds("npz", str(env.root / "images")), 422, "spec.dataset.path")  # a folder, not a file
    refused(env, ds("imagefolder", str(inside)), 422, "spec.dataset.path")  # a file, not a folder
    refused(env, {"spec": spec(dataset={"name": "digits", "path": str(inside)})}, 422, "spec.dataset.path")

    # inside the root it is accepted
    for body in (ds("npz", str(inside)), ds("imagefolder", str(env.root / "images"))):
        assert env.client.post(URL, json=body, headers=env.h()).status_code == 201
    assert env.stored() == 2


def test_no_dataset_roots_means_no_dataset_paths(database: Database, tmp_path: Path) -> None:
    client, env = build(database, tmp_path, roots=[])
    inside = _npz(tmp_path / "data.npz")
    with client:
        problem = refused(env, {"spec": spec(dataset={"name": "npz", "path": str(inside)})}, 422, "spec.dataset.path")
    assert "reads no dataset paths" in problem["detail"] and "NAS_DATASET_ROOTS" in problem["detail"]


class LocalExecutor:
    mode = "local"

    def cluster(self) -> ClusterOut:
        # like Ray on a machine without GPUs: no "GPU" key at all
        return ClusterOut(mode="local", total={"CPU": 4.0, "memory": 8e9}, available={"CPU": 4.0, "memory": 8e9})


def test_resources_beyond_the_local_machine_are_422(database: Database, tmp_path: Path) -> None:
    client, env = build(database, tmp_path, executor=LocalExecutor())
    with client:
        problem = refused(env, {"spec": spec(resources={"cpus": 8})}, 422, "spec.resources.cpus")
        assert "at most 4" in problem["detail"]
        refused(env, {"spec": spec(resources={"gpus": 1})}, 422, "spec.resources.gpus")
        # the strategy's own workers count too: a runner (1 CPU) and 4 data-parallel workers (1 CPU each)
        parallel = {"name": "spos", "options": {"data_parallel": 4, "train": {"batch_size": 32}}}
        problem = refused(env, {"spec": spec(strategy=parallel)}, 422, "spec.resources.cpus")
        assert "needs 5" in problem["detail"]
        assert client.post(URL, json={"spec": spec(resources={"cpus": 4})}, headers=env.h()).status_code == 201


# ---------------------------------------------------------------- other users' searches and tokens


def test_another_users_search_is_not_found(env: Env, tmp_path: Path) -> None:
    r = env.client.post(URL, json={"spec": spec()}, headers=env.h("bob"))
    assert r.status_code == 201
    sid = r.json()["id"]
    unknown = "0123456789abcdef0123456789abcdef"
    for target in (sid, unknown, "not-an-id"):
        for method, path in [
            ("GET", ""),
            ("POST", "/cancel"),
            ("POST", "/retry"),
            ("GET", "/candidates"),
            ("GET", "/pareto"),
            ("GET", "/events"),
            ("GET", "/events/stream"),
            ("GET", "/artifacts"),
            ("GET", "/artifacts/1"),
        ]:
            resp = env.client.request(method, f"{URL}/{target}{path}", headers=env.h("alice"))
            problem = assert_problem(resp, 404, "search_id")
            assert problem["detail"] == f"no search {target!r}"  # the same answer whether it exists or not
    with env.db.session() as s:
        row = repo.get_search(s, sid)
        assert row.status == "queued" and not row.cancel_requested
        assert repo.list_searches(s, repo.get_user(s, "root")).total == 1
    assert env.client.get(f"{URL}/{sid}", headers=env.h("bob")).status_code == 200
    assert env.client.get(f"{URL}/{sid}", headers=env.h("root")).status_code == 200


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer nas_wrong"}, {"Authorization": "Basic YWxpY2U6c2VjcmV0"}, {"Authorization": ""}],
)
def test_missing_or_wrong_token_is_401(env: Env, headers: dict[str, str]) -> None:
    for method, path in [("POST", URL), ("GET", URL), ("GET", "/api/v1/me"), ("GET", "/api/v1/spaces")]:
        r = env.client.request(method, path, json={"spec": spec()} if method == "POST" else None, headers=headers)
        assert_problem(r, 401, "Authorization")
        assert r.headers["www-authenticate"].startswith("Bearer")
    assert env.stored() == 0


def test_revoked_token_is_401(env: Env) -> None:
    with env.db.session() as s:
        repo.revoke_tokens(s, repo.get_user(s, "alice"))
    r = env.client.post(URL, json={"spec": spec()}, headers=env.h())
    assert_problem(r, 401, "Authorization")
    assert 'error="invalid_token"' in r.headers["www-authenticate"]
    assert env.stored() == 0


# ---------------------------------------------------------------- routing and query errors


def test_unknown_route_and_wrong_method(env: Env) -> None:
    assert_problem(env.client.get("/api/v1/nowhere", headers=env.h()), 404, None)
    r = env.client.delete(URL, headers=env.h())
    assert_problem(r, 405, None)
    assert set(r.headers["allow"].replace(" ", "").split(",")) == {"GET", "POST"}
    assert env.stored() == 0


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 501}, "limit"),
        ({"offset": -1}, "offset"),
        ({"status": "sleeping"}, "status[0]"),
        ({"sort": "colour"}, "sort"),
        ({"order": "sideways"}, "order"),
    ],
)
def test_bad_list_queries_are_422(env: Env, params: dict[str, Any], field: str) -> None:
    assert_problem(env.client.get(URL, params=params, headers=env.h()), 422, field)
