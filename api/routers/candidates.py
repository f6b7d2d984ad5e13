"""A search's evaluated candidates (filtered, sorted, paged), one candidate, its diagram, and the Pareto front."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from api.auth import CurrentUser
from api.convert import candidate_out
from api.deps import API_PREFIX, DbDep, find_search
from api.diagrams import SVG_RESPONSES, render_svg
from api.problems import error_responses
from nas.client.models import CandidateOut, CandidateSort, Order, Page
from service.store import repo

router = APIRouter(prefix=f"{API_PREFIX}/searches", tags=["candidates"], responses=error_responses(401, 404, 422, 500))

PARETO_MAX = 10_000
NO_NUL = r"^[^\x00]*$"
HASH_REF = Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$",
                description="architecture hash, or a unique prefix of it (6+ characters)")  # fmt: skip


@router.get("/{search_id}/candidates", response_model=Page[CandidateOut], summary="Candidates of a search")
def list_candidates(
    search_id: str,
    user: CurrentUser,
    db: DbDep,
    sort: CandidateSort = "accuracy",
    order: Order = "desc",
    pareto: Annotated[bool, Query(description="only the Pareto-optimal ones")] = False,
    min_accuracy: Annotated[float | None, Query(ge=0, le=1, description="accuracy at least this")] = None,
    max_params: Annotated[float | None, Query(ge=0, le=1e15, description="parameters at most this")] = None,
    max_macs: Annotated[float | None, Query(ge=0, le=1e18, description="MACs at most this")] = None,
    max_latency_ms: Annotated[float | None, Query(ge=0, le=1e9, description="latency at most this (ms)")] = None,
    feasible: Annotated[bool | None, Query(description="only feasible (true) or infeasible (false) ones")] = None,
    phase: Annotated[str | None, Query(max_length=64, pattern=NO_NUL, description="evaluated in this phase")] = None,
    arch_hash: Annotated[
        str | None, Query(max_length=64, pattern=r"^[0-9a-fA-F]+$", description="architecture hash starts with")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
) -> Page[CandidateOut]:
    """Every evaluated architecture with its metrics; missing metric values sort last. The filters combine (and);
    a bound on a metric leaves out the candidates without it. ``total`` counts the filtered candidates."""
    where = repo.CandidateFilter(
        min_accuracy=min_accuracy,
        max_params=max_params,
        max_macs=max_macs,
        max_latency_ms=max_latency_ms,
        feasible=feasible,
        phase=phase,
        arch_hash=arch_hash.lower() if arch_hash else None,
    )
    with db.session() as s:
        row = find_search(s, search_id, user)
        page = repo.list_candidates(
            s, row.id, sort=sort, descending=order == "desc", pareto_only=pareto, limit=limit, offset=offset,
            where=where,
        )  # fmt: skip
        items = [candidate_out(r) for r in page.items]
    return Page[CandidateOut](items=items, total=page.total, limit=page.limit, offset=page.offset)


@router.get(
    "/{search_id}/candidates/{arch_hash}",
    response_model=CandidateOut,
    summary="One candidate of a search",
    responses=error_responses(409),
)
def get_candidate(search_id: str, arch_hash: Annotated[str, HASH_REF], user: CurrentUser, db: DbDep) -> CandidateOut:
    with db.session() as s:
        row = find_search(s, search_id, user)
        return candidate_out(repo.get_candidate(s, row.id, arch_hash))


@router.get(
    "/{search_id}/candidates/{arch_hash}/architecture.svg",
    response_class=Response,
    summary="A candidate's architecture diagram (SVG)",
    responses={**SVG_RESPONSES, **error_responses(409)},
)
def candidate_diagram(search_id: str, arch_hash: Annotated[str, HASH_REF], user: CurrentUser, db: DbDep) -> Response:
    """The candidate's architecture drawn by its space (NASNet: the cells as graphs; HyTra: the path on the fabric;
    MBConv: the chain of stages), with the space options of the search's spec. Every node has a tooltip."""
    with db.session() as s:
        row = find_search(s, search_id, user)
        candidate = repo.get_candidate(s, row.id, arch_hash)
        arch, space = dict(candidate.arch), dict(row.spec.get("space") or {})
    return render_svg(arch, space.get("name") or str(arch.get("space", "")), dict(space.get("options") or {}))


@router.get("/{search_id}/pareto", response_model=list[CandidateOut], summary="Pareto front of a search")
def pareto_front(search_id: str, user: CurrentUser, db: DbDep) -> list[CandidateOut]:
    """The non-dominated candidates under the search's objectives, best accuracy first."""
    with db.session() as s:
        row = find_search(s, search_id, user)
        page = repo.list_candidates(s, row.id, sort="accuracy", pareto_only=True, limit=PARETO_MAX)
        return [candidate_out(r) for r in page.items]
