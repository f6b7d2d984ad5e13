"""Issue 12 on SQLite and PostgreSQL: list pages of summaries, search id prefixes, candidate and event filters, and
architecture diagrams as SVG (a candidate's, and any architecture's)."""

from __future__ import annotations

import random
import xml.etree.ElementTree as ET
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from nas.client.models import CandidateOut, Page, SearchSummary
from nas.events import Event
from nas.space import get_space
from service.store import Database, repo
from service.store.models import Search
from tests.api_helpers import spec
from tests.test_api import Env, make_env

PROBLEM = "application/problem+json"


@pytest.fixture
def env(database: Database, tmp_path: Any):
    app, tokens, root = make_env(database, tmp_path)
    with TestClient(app) as client:
        yield Env(client, database, tokens, root)


def nasnet_arch(seed: int = 0, **options: Any) -> dict[str, Any]:
    return get_space("nasnet", **options).sample(random.Random(seed)).model_dump(mode="json")


def candidate(arch: dict[str, Any], acc: float | None, params: float, **values: Any) -> dict[str, Any]:
    metrics = {"params": params, **({"accuracy": acc} if acc is not None else {})}
    return {"arch": arch, "metrics": metrics, **values}


def set_id(env: Env, old: str, new: str) -> None:
    """Give a search a chosen id (to make prefixes collide); it has no child rows yet."""
    env.set_search(old, id=new)


# ---------------------------------------------------------------- summaries


def test_list_returns_summaries_not_specs(env: Env) -> None:
    a = env.submit("alice", {"spec": spec(name="first")})["id"]
    b = env.submit("alice", {"spec": spec(name="second", strategy={"name": "optuna", "options": {}})})["id"]
    env.submit("bob", {"spec": spec(name="bobs")})
    env.set_search(a, status="running", phase="search", progress_step=3, progress_total=12)
    env.set_search(b, status="failed", error="RuntimeError: CUDA out of memory\nTraceback (most recent call last):")
    with env.db.session() as s:
        rows = [candidate(nasnet_arch(0), 0.61, 100), candidate(nasnet_arch(1), 0.93, 900, feasible=False),
                candidate(nasnet_arch(2), 0.72, 300), candidate(nasnet_arch(3), None, 5)]  # fmt: skip
        repo.upsert_candidates(s, a, rows)

    r = env.client.get("/api/v1/searches", headers=env.h("alice"))
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    page = Page[SearchSummary].model_validate(r.json())
    assert (page.total, page.limit, page.offset) == (2, 50, 0)
    assert [s.id for s in page.items] == [b, a]  # newest first
    first = {s.id: s for s in page.items}[a]
    assert (first.name, first.owner, first.status, first.space, first.strategy, first.dataset) == (
        "first", "alice", "running", "nasnet", "random", "digits")  # fmt: skip
    assert first.progress is not None and (first.progress.phase, first.progress.fraction) == ("search", 0.25)
    assert first.best_accuracy == 0.72  # the infeasible 0.93 does not count
    assert first.candidates == 4
    second = {s.id: s for s in page.items}[b]
    assert (second.strategy, second.best_accuracy, second.candidates) == ("optuna", None, 0)
    assert second.error == "RuntimeError: CUDA out of memory"  # the first line only
    raw = r.json()["items"][0]
    assert "spec" not in raw and "result" not in raw
    assert raw["created_at"].endswith("Z") or raw["created_at"].endswith("+00:00")

    # filters, sorting and paging as before
    only = env.client.get("/api/v1/searches", params={"status": "running", "name": "fir"}, headers=env.h("alice"))
    assert [s["id"] for s in only.json()["items"]] == [a] and only.json()["total"] == 1
    by_name = env.client.get("/api/v1/searches", params={"sort": "name", "order": "asc", "limit": 1, "offset": 1},
                             headers=env.h("alice")).json()  # fmt: skip
    assert [s["name"] for s in by_name["items"]] == ["second"] and by_name["total"] == 2
    beyond = env.client.get("/api/v1/searches", params={"offset": 10}, headers=env.h("alice")).json()
    assert beyond["items"] == [] and beyond["total"] == 2
    everyone = env.client.get("/api/v1/searches", headers=env.h("root")).json()
    assert everyone["total"] == 3
    mine = env.client.get("/api/v1/searches", params={"owner": "bob"}, headers=env.h("root")).json()
    assert [s["owner"] for s in mine["items"]] == ["bob"]
    wildcard = env.client.get("/api/v1/searches", params={"name": "%"}, headers=env.h("alice")).json()
    assert wildcard["total"] == 0  # a LIKE wildcard in the name filter is a plain character


# ---------------------------------------------------------------- id prefixes


def test_search_id_prefixes(env: Env) -> None:
    ids = [env.submit("alice")["id"] for _ in range(3)]
    set_id(env, ids[0], "61b4b523" + "0" * 24)
    set_id(env, ids[1], "61b4b599" + "1" * 24)
    set_id(env, ids[2], "7aa0b523" + "2" * 24)
    bobs = env.submit("bob")["id"]
    set_id(env, bobs, "61b4b5ff" + "3" * 24)
    h = env.h("alice")

    got = env.client.get("/api/v1/searches/61b4b52", headers=h)
    assert got.status_code == 200 and got.json()["id"] == "61b4b523" + "0" * 24
    assert env.client.get("/api/v1/searches/7AA0B5", headers=h).json()["id"].startswith("7aa0b5")  # any case

    # ambiguous among alice's own: 409 naming both; bob's search is not among the matches
    amb = env.client.get("/api/v1/searches/61b4b5", headers=h)
    assert amb.status_code == 409 and amb.headers["content-type"] == PROBLEM
    problem = amb.json()
    assert problem["field"] == "search_id"
    assert "61b4b523" + "0" * 24 in problem["detail"] and "61b4b599" + "1" * 24 in problem["detail"]
    assert "61b4b5ff" not in problem["detail"]
    # the admin sees all three
    assert "61b4b5ff" in env.client.get("/api/v1/searches/61b4b5", headers=env.h("root")).json()["detail"]
    # bob's unique prefix is not alice's
    assert env.client.get("/api/v1/searches/61b4b5f", headers=h).status_code == 404
    assert env.client.get("/api/v1/searches/61b4b5f", headers=env.h("bob")).status_code == 200

    short = env.client.get("/api/v1/searches/61b4b", headers=h)
    assert short.status_code == 404 and "at least 6 characters" in short.json()["detail"]
    assert env.client.get("/api/v1/searches/zzzzzzzz", headers=h).status_code == 404
    assert env.client.get("/api/v1/searches/999999", headers=h).status_code == 404

    # every route that takes a search id resolves the prefix to the full id
    full = "7aa0b523" + "2" * 24
    with env.db.session() as s:
        repo.add_events(s, full, 1, [Event(type="log", message="hello")])
        repo.upsert_candidates(s, full, [candidate(nasnet_arch(0), 0.5, 10)])
    assert [e["search_id"] for e in env.client.get("/api/v1/searches/7aa0b5/events", headers=h).json()] == [full]
    assert env.client.get("/api/v1/searches/7aa0b5/candidates", headers=h).json()["total"] == 1
    assert env.client.get("/api/v1/searches/7aa0b5/pareto", headers=h).status_code == 200
    assert env.client.get("/api/v1/searches/7aa0b5/artifacts", headers=h).json() == []
    cancelled = env.client.post("/api/v1/searches/7aa0b5/cancel", headers=h)
    assert cancelled.status_code == 202 and cancelled.json()["id"] == full
    retried = env.client.post("/api/v1/searches/7aa0b52/retry", headers=h)
    assert retried.status_code == 202 and retried.json()["status"] == "queued"


# ---------------------------------------------------------------- candidate and event filters


def test_candidate_filters_and_one_candidate(env: Env) -> None:
    sid = env.submit()["id"]
    archs = [nasnet_arch(i) for i in range(5)]
    hashes = [repo.candidate_hash({"arch": a}) for a in archs]
    with env.db.session() as s:
        repo.upsert_candidates(s, sid, [
            candidate(archs[0], 0.50, 300, phase="search"),
            candidate(archs[1], 0.90, 900, phase="search", pareto=True),
            candidate(archs[2], 0.70, 100, phase="search", pareto=True, feasible=False),
            candidate(archs[3], None, 50, phase="final"),
            candidate(archs[4], 0.80, 200, phase="final"),
        ])  # fmt: skip
    url, h = f"/api/v1/searches/{sid}/candidates", env.h("alice")

    def got(**params: Any) -> tuple[list[int], int]:
        r = env.client.get(url, params=params, headers=h)
        assert r.status_code == 200, r.text
        page = Page[CandidateOut].model_validate(r.json())
        return [hashes.index(c.arch_hash) for c in page.items], page.total

    assert got() == ([1, 4, 2, 0, 3], 5)
    assert got(min_accuracy=0.7) == ([1, 4, 2], 3)  # inclusive; the one without accuracy is left out
    assert got(max_params=300, sort="params", order="asc") == ([3, 2, 4, 0], 4)
    assert got(min_accuracy=0.6, max_params=500) == ([4, 2], 2)
    assert got(feasible=False) == ([2], 1)
    assert got(feasible=True, phase="final") == ([4, 3], 2)
    assert got(pareto=True, feasible=True) == ([1], 1)
    assert got(arch_hash=hashes[3][:6].upper()) == ([3], 1)
    assert got(min_accuracy=0.7, limit=1, offset=1) == ([4], 3)
    bad = env.client.get(url, params={"min_accuracy": 2}, headers=h)
    assert bad.status_code == 422 and bad.json()["field"] == "min_accuracy"
    bad = env.client.get(url, params={"max_params": "many"}, headers=h)
    assert bad.status_code == 422 and bad.json()["field"] == "max_params"

    one = env.client.get(f"{url}/{hashes[1]}", headers=h)
    assert one.status_code == 200 and CandidateOut.model_validate(one.json()).accuracy == 0.9
    assert env.client.get(f"{url}/{hashes[1][:7]}", headers=h).json()["arch_hash"] == hashes[1]
    missing = env.client.get(f"{url}/{'0' * 16}", headers=h)
    assert missing.status_code == 404 and missing.json()["field"] == "arch_hash"
    assert env.client.get(f"{url}/{hashes[1]}", headers=env.h("bob")).status_code == 404


def test_events_filtered_by_type_and_phase(env: Env) -> None:
    sid = env.submit()["id"]
    events = [
        Event(type="phase_started", phase="supernet"),
        Event(type="epoch", phase="supernet", step=1, total=2, metrics={"loss": 2.0}),
        Event(type="progress", phase="supernet", step=1, total=2),
        Event(type="epoch", phase="supernet", step=2, total=2, metrics={"loss": 1.0}),
        Event(type="epoch", phase="final-1", step=1, total=1, metrics={"loss": 0.5}),
        Event(type="candidate", phase="search", metrics={"accuracy": 0.5}),
    ]
    with env.db.session() as s:
        repo.add_events(s, sid, 1, events)
    url, h = f"/api/v1/searches/{sid}/events", env.h("alice")
    everything = env.client.get(url, headers=h).json()
    ids = [e["id"] for e in everything]

    def got(params: list[tuple[str, Any]]) -> list[int]:
        r = env.client.get(url, params=params, headers=h)
        assert r.status_code == 200, r.text
        return [ids.index(e["id"]) for e in r.json()]

    assert got([("type", "epoch")]) == [1, 3, 4]
    assert got([("type", "epoch"), ("phase", "supernet")]) == [1, 3]
    assert got([("type", "epoch"), ("type", "candidate")]) == [1, 3, 4, 5]
    assert got([("phase", "final-1"), ("phase", "search")]) == [4, 5]
    assert got([("type", "epoch"), ("after", ids[1])]) == [3, 4]
    assert got([("type", "epoch"), ("limit", 1), ("after", ids[3])]) == [4]
    assert got([("type", "nothing")]) == []
    bad = env.client.get(url, params={"type": "x" * 40}, headers=h)
    assert bad.status_code == 422 and bad.json()["field"].startswith("type")


# ---------------------------------------------------------------- diagrams


def svg_root(r: Any) -> ET.Element:
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("image/svg+xml")
    root = ET.fromstring(r.text)
    assert root.get("data-testid") == "arch-diagram"
    return root


def test_candidate_diagram_uses_the_searchs_space_options(env: Env) -> None:
    body = {"spec": spec(space={"name": "nasnet", "options": {"attention": True},
                                "macro": {"cells_per_stack": 1, "filters": 8}})}  # fmt: skip
    sid = env.submit("alice", body)["id"]
    arch = get_space("nasnet", attention=True).sample(random.Random(0)).model_dump(mode="json")
    arch["choices"]["normal"]["blocks"][0][1] = "self_attention"  # valid only with the search's options
    with env.db.session() as s:
        repo.upsert_candidates(s, sid, [candidate({**arch, "hash": "abcdef0123456789"}, 0.5, 10)])  # kept, not drawn
        digest = repo.list_candidates(s, sid).items[0].arch_hash
    r = env.client.get(f"/api/v1/searches/{sid}/candidates/{digest[:8]}/architecture.svg", headers=env.h("alice"))
    root = svg_root(r)
    ops = {g.get("data-op") for g in root.iter("{http://www.w3.org/2000/svg}g")}
    assert "self_attention" in ops
    assert "max-age" in r.headers["cache-control"] and r.headers["x-content-type-options"] == "nosniff"
    other = env.client.get(f"/api/v1/searches/{sid}/candidates/{digest}/architecture.svg", headers=env.h("bob"))
    assert other.status_code == 404 and other.headers["content-type"] == PROBLEM


def test_draw_any_architecture(env: Env) -> None:
    h = env.h("bob")
    for name in ("nasnet", "hytra", "bossnas-mbconv"):
        arch = get_space(name).sample(random.Random(1)).model_dump(mode="json")
        kind = svg_root(env.client.post(f"/api/v1/spaces/{name}/architecture.svg", json=arch, headers=h)).get(
            "data-kind"
        )
        assert kind in ("nasnet-cells", "fabric", "chain")
    # the body may leave out space and version, and carry the space options
    arch = nasnet_arch(0)
    bare = {"choices": arch["choices"], "space_options": {"attention": True}}
    assert svg_root(env.client.post("/api/v1/spaces/nasnet/architecture.svg", json=bare, headers=h)) is not None


@pytest.mark.parametrize(
    ("space", "body", "status", "field"),
    [
        (
            "nasnet",
            {"choices": {"normal": {"blocks": [], "concat": []}, "reduce": {}}},
            422,
            "architecture.choices.normal.blocks",
        ),
        ("nasnet", {"space": "hytra", "choices": {}}, 422, "architecture.space"),
        ("nasnet", {"version": "9", "choices": {}}, 422, "architecture.version"),
        ("nasnet", {"space_options": {"ops": ["nope"]}, "choices": {}}, 422, "space_options.ops"),
        ("nasnet", {"space_options": {"bogus": 1}, "choices": {}}, 422, "space_options.bogus"),
        ("nasnet", {}, 422, "choices"),
        ("nasnet", {"choices": {}, "extra": 1}, 422, "extra"),
        ("hytra", {"choices": {"blocks": [[9, 9, 9, 9]] * 4}}, 422, "architecture.choices.blocks[0][0]"),
        ("nosuchspace", {"choices": {}}, 404, "name"),
    ],
)
def test_draw_refuses_bad_input_naming_the_field(
    env: Env, space: str, body: dict[str, Any], status: int, field: str
) -> None:
    r = env.client.post(f"/api/v1/spaces/{space}/architecture.svg", json=body, headers=env.h("alice"))
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM
    assert r.json()["field"] == field, r.json()


def test_summary_counts_candidates_of_each_search_alone(env: Env) -> None:
    """best_accuracy and candidates are per search (the aggregate subqueries are correlated)."""
    a, b = env.submit()["id"], env.submit()["id"]
    with env.db.session() as s:
        repo.upsert_candidates(s, a, [candidate(nasnet_arch(i), 0.1 * i, 10) for i in range(1, 4)])
        repo.upsert_candidates(s, b, [candidate(nasnet_arch(9), 0.99, 10)])
        s.execute(update(Search).where(Search.id == b).values(status="succeeded"))
    items = {i["id"]: i for i in env.client.get("/api/v1/searches", headers=env.h("alice")).json()["items"]}
    assert (items[a]["candidates"], items[a]["best_accuracy"]) == (3, pytest.approx(0.3))
    assert (items[b]["candidates"], items[b]["best_accuracy"], items[b]["status"]) == (1, 0.99, "succeeded")
