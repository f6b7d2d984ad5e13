"""A search's evaluated candidates and its Pareto front."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from api.auth import CurrentUser
from api.convert import candidate_out
from api.deps import API_PREFIX, DbDep, find_search
from api.problems import error_responses
from nas.client.models import CandidateOut, CandidateSort, Order, Page
from service.store import repo

router = APIRouter(prefix=f"{API_PREFIX}/searches", tags=["candidates"], responses=error_responses(401, 404, 422, 500))

PARETO_MAX = 10_000


@router.get("/{search_id}/candidates", response_model=Page[CandidateOut], summary="Candidates of a search")
def list_candidates(
    search_id: str,
    user: CurrentUser,
    db: DbDep,
    sort: CandidateSort = "accuracy",
    order: Order = "desc",
    pareto: Annotated[bool, Query(description="only the Pareto-optimal ones")] = False,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
) -> Page[CandidateOut]:
    """Every evaluated architecture with its metrics; missing metric values sort last."""
    with db.session() as s:
        find_search(s, search_id, user)
        page = repo.list_candidates(
            s, search_id, sort=sort, descending=order == "desc", pareto_only=pareto, limit=limit, offset=offset
        )
        items = [candidate_out(r) for r in page.items]
    return Page[CandidateOut](items=items, total=page.total, limit=page.limit, offset=page.offset)


@router.get("/{search_id}/pareto", response_model=list[CandidateOut], summary="Pareto front of a search")
def pareto_front(search_id: str, user: CurrentUser, db: DbDep) -> list[CandidateOut]:
    """The non-dominated candidates under the search's objectives, best accuracy first."""
    with db.session() as s:
        find_search(s, search_id, user)
        page = repo.list_candidates(s, search_id, sort="accuracy", pareto_only=True, limit=PARETO_MAX)
        return [candidate_out(r) for r in page.items]
