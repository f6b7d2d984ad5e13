"""Searches as users see them: create (idempotent), get, list, cancel, retry."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.store.models import FINAL, Search, User, utcnow
from service.store.repo.errors import Conflict, NotFound, QuotaExceeded

SEARCH_SORTS = ("created_at", "priority", "updated_at", "name", "status")


def new_search_id() -> str:
    return uuid.uuid4().hex


def create_search(
    s: Session,
    owner: User,
    spec: dict[str, Any],
    *,
    priority: int = 0,
    cpus: float = 1.0,
    gpus: float = 0.0,
    max_attempts: int = 3,
    idempotency_key: str | None = None,
    max_queued: int | None = None,
) -> tuple[Search, bool]:
    """Store a queued search. Returns (search, created); a repeated idempotency key returns the first search.

    ``max_queued`` (None: no limit) is how many queued searches ``owner`` may have: one more is QuotaExceeded.
    """
    if idempotency_key is not None:
        existing = _by_key(s, owner, idempotency_key)
        if existing is not None:
            return _same_request(existing, spec), False
    if max_queued is not None:
        check_queue_quota(s, owner, max_queued)
    row = Search(
        id=new_search_id(),
        owner_id=owner.id,
        name=str(spec.get("name", "search"))[:200],
        spec=spec,
        status="queued",
        priority=priority,
        cpus=cpus,
        gpus=gpus,
        max_attempts=max_attempts,
        idempotency_key=idempotency_key,
    )
    try:
        with s.begin_nested():
            s.add(row)
    except IntegrityError:
        existing = _by_key(s, owner, idempotency_key) if idempotency_key else None
        if existing is None:
            raise
        return _same_request(existing, spec), False
    return row, True


def count_queued(s: Session, owner: User, *, lock: bool = False) -> int:
    """How many queued searches ``owner`` has. ``lock`` first takes a row lock on the owner (PostgreSQL; SQLite
    writers hold the database write lock), so concurrent submissions of one user count one after another."""
    if lock and s.get_bind().dialect.name != "sqlite":
        s.execute(select(User.id).where(User.id == owner.id).with_for_update())
    q = select(func.count()).select_from(Search).where(Search.owner_id == owner.id, Search.status == "queued")
    return int(s.scalar(q) or 0)


def check_queue_quota(s: Session, owner: User, max_queued: int) -> None:
    """QuotaExceeded if ``owner`` already has ``max_queued`` queued searches (counted under a lock on the owner)."""
    queued = count_queued(s, owner, lock=True)
    if queued >= max_queued:
        raise QuotaExceeded(
            f"{owner.name} already has {queued} queued searches (at most {max_queued}); "
            "submit again when some have started, or cancel some",
            field="status",
        )


def _by_key(s: Session, owner: User, key: str) -> Search | None:
    return s.scalar(select(Search).where(Search.owner_id == owner.id, Search.idempotency_key == key))


def _same_request(existing: Search, spec: dict[str, Any]) -> Search:
    if existing.spec != spec:
        raise Conflict("this Idempotency-Key was used for a different search", field="Idempotency-Key")
    return existing


def visible(user: User) -> Select[Search]:
    q = select(Search)
    return q if user.is_admin else q.where(Search.owner_id == user.id)


def get_search(s: Session, search_id: str, user: User | None = None) -> Search:
    """The search, if ``user`` (None: the system) may see it; otherwise NotFound, never a hint that it exists."""
    q = select(Search).where(Search.id == search_id) if user is None else visible(user).where(Search.id == search_id)
    row = s.scalar(q)
    if row is None:
        raise NotFound(f"no search {search_id!r}", field="search_id")
    return row


@dataclass
class Page:
    items: list[Any]
    total: int
    limit: int
    offset: int


def list_searches(
    s: Session,
    user: User,
    *,
    status: Sequence[str] = (),
    name: str | None = None,
    owner: str | None = None,
    sort: str = "created_at",
    descending: bool = True,
    limit: int = 50,
    offset: int = 0,
) -> Page:
    where = [] if user.is_admin else [Search.owner_id == user.id]
    if status:
        where.append(Search.status.in_(list(status)))
    if name:
        where.append(Search.name.contains(name, autoescape=True))
    if owner:
        where.append(Search.owner_id.in_(select(User.id).where(User.name == owner)))
    total = int(s.scalar(select(func.count()).select_from(Search).where(*where)) or 0)
    column = getattr(Search, sort)
    order = [column.desc() if descending else column.asc(), Search.id.desc() if descending else Search.id.asc()]
    # page through the narrow (index-only) id list first, then load just those rows: OFFSET over wide rows with
    # their JSON specs is what makes deep pages slow
    ids = list(s.scalars(select(Search.id).where(*where).order_by(*order).limit(limit).offset(offset)))
    by_id = {r.id: r for r in s.scalars(select(Search).where(Search.id.in_(ids)))} if ids else {}
    return Page([by_id[i] for i in ids if i in by_id], total, limit, offset)


def request_cancel(s: Session, search: Search) -> Search:
    """Cancel a queued search now; ask a running one to stop (its runner sees the flag within seconds)."""
    if search.status in FINAL:
        raise Conflict(f"search {search.id} is already {search.status}", field="status")
    if search.status == "queued":
        search.status = "cancelled"
        search.finished_at = utcnow()
    search.cancel_requested = True
    s.flush()
    return search


def retry_search(s: Session, search: Search, *, max_queued: int | None = None) -> Search:
    """Queue a failed or cancelled search again; it resumes from its last checkpoint. Its next attempt is number
    ``attempts + 1`` and it gets a fresh budget of ``max_attempts`` attempts. ``max_queued`` as in
    create_search (for the search's owner)."""
    if search.status not in ("failed", "cancelled"):
        raise Conflict(f"only failed or cancelled searches can be retried; {search.id} is {search.status}", "status")
    if max_queued is not None:
        check_queue_quota(s, search.owner, max_queued)
    search.status = "queued"
    search.attempts_base = search.attempts  # attempts keep counting (unique runner names); max_attempts more to go
    search.cancel_requested = False
    search.error = None
    search.not_before = None
    search.finished_at = None
    s.flush()
    return search
