"""Searches as users see them: create (idempotent), get, list, cancel, retry."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Connection, Integer, Select, bindparam, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from nas.client.models import SEARCH_ID_MIN_PREFIX
from service.store.models import FINAL, CandidateRow, Search, User, utcnow
from service.store.repo.errors import Ambiguous, Conflict, NotFound, QuotaExceeded

SEARCH_SORTS = ("created_at", "priority", "updated_at", "name", "status")
SEARCH_ID_LENGTH = 32  # uuid4 hex
HEX = frozenset("0123456789abcdef")
AMBIGUOUS_LISTED = 10  # matches named in the message of an ambiguous prefix
ERROR_SUMMARY_CHARS = 200


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


def get_search_by_ref(s: Session, ref: str, user: User | None = None) -> Search:
    """The search named by ``ref``: its id, or a unique prefix of it of at least SEARCH_ID_MIN_PREFIX characters,
    among the searches ``user`` may see (None: all). NotFound when none matches (also for anything that is not an id
    or a prefix of one), Ambiguous (409) naming the matches when several do."""
    key = ref.strip().lower()
    if len(key) == SEARCH_ID_LENGTH and set(key) <= HEX:
        return get_search(s, key, user)
    if not (SEARCH_ID_MIN_PREFIX <= len(key) < SEARCH_ID_LENGTH and set(key) <= HEX):
        hint = ""
        if 0 < len(key) < SEARCH_ID_MIN_PREFIX and set(key) <= HEX:
            hint = f" (an id prefix needs at least {SEARCH_ID_MIN_PREFIX} characters)"
        raise NotFound(f"no search {ref!r}{hint}", field="search_id")
    # ids are lowercase hex, so those starting with `key` are exactly the range [key, key + "g"): an index range
    # scan on the primary key on every backend (LIKE 'key%' is not one on SQLite)
    q = select(Search.id).where(Search.id >= key, Search.id < key + "g")
    if user is not None and not user.is_admin:
        q = q.where(Search.owner_id == user.id)
    ids = list(s.scalars(q.order_by(Search.id).limit(AMBIGUOUS_LISTED + 1)))
    if not ids:
        raise NotFound(f"no search {ref!r}", field="search_id")
    if len(ids) > 1:
        listed = ", ".join(ids[:AMBIGUOUS_LISTED]) + (" and more" if len(ids) > AMBIGUOUS_LISTED else "")
        raise Ambiguous(f"search id prefix {ref!r} is ambiguous: it matches {listed}; give more characters",
                        field="search_id")  # fmt: skip
    return get_search(s, ids[0], user)


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
    """A page of the searches ``user`` may see (Search rows, with their specs); lists use
    :func:`list_search_summaries`."""
    ids, total = _page_ids(s, user, status, name, owner, sort, descending, limit, offset)
    by_id = {r.id: r for r in s.scalars(select(Search).where(Search.id.in_(ids)))} if ids else {}
    return Page([by_id[i] for i in ids if i in by_id], total, limit, offset)


def _page_ids(
    s: Session,
    user: User,
    status: Sequence[str],
    name: str | None,
    owner: str | None,
    sort: str,
    descending: bool,
    limit: int,
    offset: int,
) -> tuple[list[str], int]:
    """The ids of one page (and the total) of a listing: the filters, then the narrow (index-only) id list. OFFSET
    over the wide rows with their JSON specs is what makes deep pages slow, so rows are loaded by id afterwards."""
    where = _filters(user, status, name, owner)
    total = int(s.scalar(select(func.count()).select_from(Search).where(*where)) or 0)
    q = select(Search.id).where(*where).order_by(*_order(Search, sort, descending)).limit(limit).offset(offset)
    return list(s.scalars(q)), total


def _filters(user: User, status: Sequence[str], name: str | None, owner: str | None) -> list[ColumnElement[bool]]:
    where: list[ColumnElement[bool]] = [] if user.is_admin else [Search.owner_id == user.id]
    if status:
        where.append(Search.status.in_(list(status)))
    if name:
        where.append(Search.name.contains(name, autoescape=True))
    if owner:
        where.append(Search.owner_id.in_(select(User.id).where(User.name == owner)))
    return where


def _order(entity: Any, sort: str, descending: bool) -> list[ColumnElement[Any]]:
    """``sort`` then the id as tie-break, both in the same direction (what the listing indexes serve)."""
    column, key = getattr(entity, sort), entity.id
    return [column.desc(), key.desc()] if descending else [column.asc(), key.asc()]


SUMMARY_FIELDS = ("id", "name", "status", "priority", "attempts", "max_attempts", "cancel_requested", "phase",
                  "progress_step", "progress_total", "error")  # fmt: skip
SUMMARY_DATES = ("created_at", "started_at", "finished_at", "updated_at")


def list_search_summaries(
    s: Session | Connection,
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
    """Like :func:`list_searches`, but each item is a plain dict of what a list shows: the columns of a search but
    its spec and result, the owner's name, the spec's space, strategy and dataset names (read by the database: no
    spec is loaded or parsed), the error's first line, ``best_accuracy`` (highest accuracy of a feasible candidate)
    and ``candidates`` (how many).

    One statement, built once per shape of the request (:func:`_summary_statement`): the page's ids (index-only, as
    in :func:`list_searches`) in a CTE joined back to their rows, the total and the candidate aggregates as
    subqueries. A second, narrow one only counts the total of an empty page. ``s`` may be a plain Connection
    (cheaper than a Session for a read).
    """
    if sort not in SEARCH_SORTS:
        raise ValueError(f"sort: {sort!r} is not one of {SEARCH_SORTS}")
    scoped = not user.is_admin
    params: dict[str, Any] = {"limit": limit, "offset": offset}
    if scoped:
        params["owner_id"] = user.id
    if status:
        params["statuses"] = list(status)
    if name:
        params["name_pattern"] = "%" + name.replace("/", "//").replace("%", "/%").replace("_", "/_") + "%"
    if owner:
        params["owner_name"] = owner
    shape = (scoped, bool(status), bool(name), bool(owner), sort, descending)
    conn = s.connection() if isinstance(s, Session) else s  # Core execution: no ORM loading step
    result = conn.execute(_summary_statement(*shape), params)
    keys = list(map(str, result.keys()))  # plain str: SQLAlchemy's quoted_name keys are slow to serialize
    items = [dict(zip(keys, r, strict=True)) for r in result]
    if not items:
        count = _summary_statement(*shape, count_only=True)
        return Page([], int(conn.scalar(count, params) or 0), limit, offset)
    total = int(items[0]["total"])
    for item in items:
        del item["total"]
        item["error"] = _first_line(item["error"])
    return Page(items, total, limit, offset)


@functools.cache
def _summary_statement(
    scoped: bool,
    by_status: bool,
    by_name: bool,
    by_owner: bool,
    sort: str,
    descending: bool,
    *,
    count_only: bool = False,
) -> Select[Any]:
    """The summary listing for one shape of request, its values as bound parameters (owner_id, statuses,
    name_pattern, owner_name, limit, offset): built once, so a request pays for no statement construction."""
    where: list[ColumnElement[bool]] = []
    if scoped:
        where.append(Search.owner_id == bindparam("owner_id"))
    if by_status:
        where.append(Search.status.in_(bindparam("statuses", expanding=True)))
    if by_name:
        where.append(Search.name.like(bindparam("name_pattern"), escape="/"))
    if by_owner:
        where.append(Search.owner_id.in_(select(User.id).where(User.name == bindparam("owner_name"))))
    total = select(func.count()).select_from(Search).where(*where)
    if count_only:
        return total
    page = (
        select(Search.id)
        .where(*where)
        .order_by(*_order(Search, sort, descending))
        .limit(bindparam("limit", type_=Integer))
        .offset(bindparam("offset", type_=Integer))
        .cte("page")
    )
    # Core tables rather than ORM entities: the result rows come straight from the cursor (no ORM loading step)
    row = Search.__table__.alias("s")
    users = User.__table__
    candidates = CandidateRow.__table__
    best = (
        select(func.max(candidates.c.accuracy))
        .where(candidates.c.search_id == row.c.id, candidates.c.feasible.is_(True))
        .scalar_subquery()
    )
    count = select(func.count()).select_from(candidates).where(candidates.c.search_id == row.c.id).scalar_subquery()
    return (
        select(
            total.correlate(None).scalar_subquery().label("total"),
            *(row.c[name] for name in SUMMARY_FIELDS),
            users.c.name.label("owner"),
            *(row.c.spec[(key, "name")].as_string().label(key) for key in ("space", "strategy", "dataset")),
            best.label("best_accuracy"),
            count.label("candidates"),
            *(row.c[name] for name in SUMMARY_DATES),
        )
        .select_from(page)
        .join(row, row.c.id == page.c.id)
        .join(users, users.c.id == row.c.owner_id)
        .order_by(*_order(row.c, sort, descending))
    )


def _first_line(error: str | None) -> str | None:
    if not error:
        return error
    lines = error.strip().splitlines()
    first = lines[0] if lines else ""
    return first[: ERROR_SUMMARY_CHARS - 1] + "…" if len(first) > ERROR_SUMMARY_CHARS else first


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
