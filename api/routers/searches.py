"""/api/v1/searches: submit, list, get, cancel and retry searches."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import pydantic_core
from fastapi import APIRouter, Header, Query, Response, status

from api.auth import CurrentUser
from api.convert import search_out, summary_out
from api.deps import API_PREFIX, DbDep, ExecutorDep, SettingsDep, find_search, read_db
from api.problems import ProblemError, error_responses
from api.validation import validate_search
from nas.client.models import Order, Page, SearchCreate, SearchOut, SearchSort, SearchStatus, SearchSummary
from service.store import repo
from service.store.models import User

router = APIRouter(prefix=f"{API_PREFIX}/searches", tags=["searches"], responses=error_responses(401, 422, 500))

NO_NUL = r"^[^\x00]*$"


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=SearchOut,
    summary="Submit a search",
    responses={
        200: {"model": SearchOut, "description": "A replay of an earlier request with the same Idempotency-Key"},
        201: {
            "description": "Stored and queued",
            "headers": {"Location": {"description": "URL of the new search", "schema": {"type": "string"}}},
        },
        **error_responses(400, 409, 413, 429),
    },
)
def create_search(
    body: SearchCreate,
    response: Response,
    user: CurrentUser,
    db: DbDep,
    settings: SettingsDep,
    executor: ExecutorDep,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            min_length=1,
            max_length=200,
            description="Makes a retried submission safe: the same key returns the first search (200) instead of "
            "storing a second one; the same key with a different spec is a 409",
        ),
    ] = None,
) -> SearchOut:
    """Validate the spec (space, strategy, budget, dataset path, resources) and queue the search.

    A non-admin may ask for a priority up to NAS_MAX_PRIORITY_USER and have NAS_MAX_QUEUED_PER_USER searches queued.
    """
    if not user.is_admin and body.priority > settings.max_priority_user:
        raise ProblemError(
            422,
            f"priority: at most {settings.max_priority_user} (higher priorities are for admins)",
            field="priority",
            message=f"at most {settings.max_priority_user} (higher priorities are for admins)",
        )
    cpus, gpus = validate_search(body.spec, roots=settings.dataset_roots, executor=executor)
    spec = body.spec.model_dump(mode="json")
    with db.session(write_lock=True) as s, queue_quota():
        row, created = repo.create_search(
            s,
            user,
            spec,
            priority=body.priority,
            cpus=cpus,
            gpus=gpus,
            max_attempts=body.max_attempts or settings.max_attempts,
            idempotency_key=idempotency_key,
            max_queued=_max_queued(user, settings.max_queued_per_user),
        )
        out = search_out(row)
    response.headers["Location"] = f"/api/v1/searches/{out.id}"
    if not created:
        response.status_code = status.HTTP_200_OK
    return out


@router.get("", response_model=Page[SearchSummary], summary="List searches")
async def list_searches(
    user: CurrentUser,
    db: DbDep,
    status_: Annotated[list[SearchStatus], Query(alias="status", description="keep these statuses (repeatable)")] = [],  # noqa: B006
    name: Annotated[str | None, Query(max_length=200, pattern=NO_NUL, description="name contains")] = None,
    owner: Annotated[
        str | None,
        Query(max_length=100, pattern=NO_NUL, description="owner's user name (admins; others only see their own)"),
    ] = None,
    sort: SearchSort = "created_at",
    order: Order = "desc",
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
) -> Response:
    """The caller's searches (an admin's: everyone's), newest first unless sorted otherwise, as summaries: no spec
    and no result (``GET /searches/{id}`` has them), but the space, strategy and dataset names, the progress, the
    best accuracy of a feasible candidate so far and the number of candidates."""

    def read() -> repo.Page:
        with db.engine.connect() as conn:  # a read: a Core connection, no ORM session
            return repo.list_search_summaries(
                conn,
                user,
                status=status_,
                name=name,
                owner=owner,
                sort=sort,
                descending=order == "desc",
                limit=limit,
                offset=offset,
            )

    page = await read_db(db, read)
    # serialized here, straight from the rows: FastAPI would build and validate a model per row, then the page
    body = {"items": [summary_out(i) for i in page.items], "total": page.total, "limit": page.limit,
            "offset": page.offset}  # fmt: skip
    return Response(pydantic_core.to_json(body), media_type="application/json")


@router.get("/{search_id}", response_model=SearchOut, summary="Get a search", responses=error_responses(404))
def get_search(search_id: str, user: CurrentUser, db: DbDep) -> SearchOut:
    with db.session() as s:
        return search_out(find_search(s, search_id, user))


@router.post(
    "/{search_id}/cancel",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=SearchOut,
    summary="Cancel a search",
    responses=error_responses(404, 409),
)
def cancel_search(search_id: str, user: CurrentUser, db: DbDep) -> SearchOut:
    """A queued search is cancelled at once; a running one is asked to stop (its runner does within seconds)."""
    with db.session(write_lock=True) as s:
        row = repo.request_cancel(s, find_search(s, search_id, user, lock=True))
        return search_out(row)


@router.post(
    "/{search_id}/retry",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=SearchOut,
    summary="Retry a failed or cancelled search",
    responses=error_responses(404, 409, 429),
)
def retry_search(search_id: str, user: CurrentUser, db: DbDep, settings: SettingsDep) -> SearchOut:
    """Queue it again; it resumes from its last checkpoint. The owner's queued-search quota applies (not to an
    admin's retry of another user's search)."""
    with db.session(write_lock=True) as s, queue_quota():
        row = find_search(s, search_id, user, lock=True)
        owner_limit = _max_queued(row.owner, settings.max_queued_per_user) if row.owner_id == user.id else None
        row = repo.retry_search(s, row, max_queued=owner_limit)
        return search_out(row)


QUEUE_RETRY_AFTER_S = 60


def _max_queued(user: User, limit: int) -> int | None:
    return None if user.is_admin else limit


@contextmanager
def queue_quota() -> Iterator[None]:
    """A full queue (repo.QuotaExceeded) as 429 problem+json with Retry-After."""
    try:
        yield
    except repo.QuotaExceeded as exc:
        raise ProblemError(429, str(exc), field=exc.field, headers={"Retry-After": str(QUEUE_RETRY_AFTER_S)}) from exc
