"""Repository functions: every read and write of the service goes through here (API, scheduler and runners)."""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import secrets
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import Select, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from nas.arch import Architecture
from nas.events import Event
from nas.store.db import Database
from nas.store.models import FINAL, ApiToken, Artifact, CandidateRow, Search, SearchEvent, User, utcnow

log = logging.getLogger(__name__)

TOKEN_PREFIX = "nas_"
CANDIDATE_SORTS = ("accuracy", "params", "macs", "latency_ms", "created_at")
SEARCH_SORTS = ("created_at", "priority", "updated_at", "name", "status")


class StoreError(Exception):
    """A request the store refuses; ``status`` is the HTTP status the API maps it to."""

    status = 409

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class Conflict(StoreError):
    status = 409


class NotFound(StoreError):
    status = 404


class LeaseLost(Exception):
    """The runner's lease on a search is gone (expired and re-queued, or cancelled): it must stop writing."""


# ---------------------------------------------------------------- users and tokens


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_user(s: Session, name: str, *, admin: bool = False) -> User:
    if s.scalar(select(User).where(User.name == name)) is not None:
        raise Conflict(f"a user named {name!r} already exists", field="name")
    user = User(name=name, is_admin=admin)
    s.add(user)
    s.flush()
    return user


def get_user(s: Session, name: str) -> User:
    user = s.scalar(select(User).where(User.name == name))
    if user is None:
        raise NotFound(f"no user named {name!r}", field="user")
    return user


def list_users(s: Session) -> list[tuple[User, int]]:
    """Every user with the number of its active (not revoked) tokens, by name."""
    counts = dict(
        s.execute(
            select(ApiToken.user_id, func.count()).where(ApiToken.revoked_at.is_(None)).group_by(ApiToken.user_id)
        ).all()
    )
    return [(u, int(counts.get(u.id, 0))) for u in s.scalars(select(User).order_by(User.name))]


def create_token(s: Session, user: User, name: str = "default") -> str:
    """A new API token for ``user``. Only its hash is stored; the plain token is returned once."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    s.add(ApiToken(user_id=user.id, name=name, token_hash=hash_token(token), prefix=token[:12]))
    s.flush()
    return token


def authenticate(s: Session, token: str) -> User | None:
    """The user of an active token, or None. Reads only: see record_token_use."""
    row = s.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(token), ApiToken.revoked_at.is_(None)))
    return None if row is None else row.user


def record_token_use(db: Database, token: str, every: dt.timedelta = dt.timedelta(minutes=5)) -> None:
    """Record (coarsely: at most every ``every``) that a token was used, in a short transaction of its own.

    Called after the request's own session is closed, so it never holds a second connection or a row lock for the
    rest of a request; a busy database only means the use is recorded by a later request.
    """
    now = utcnow()
    try:
        with db.session() as s:
            s.execute(
                update(ApiToken)
                .where(
                    ApiToken.token_hash == hash_token(token),
                    or_(ApiToken.last_used_at.is_(None), ApiToken.last_used_at < now - every),
                )
                .values(last_used_at=now)
            )
    except OperationalError as exc:
        log.debug("token use not recorded: %s", exc)


def revoke_tokens(s: Session, user: User) -> int:
    result = s.execute(
        update(ApiToken).where(ApiToken.user_id == user.id, ApiToken.revoked_at.is_(None)).values(revoked_at=utcnow())
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def ensure_local_admin(db: Database, token_file: Path) -> str:
    """The embedded service's admin token: reuse the one in ``token_file`` if it is valid, else make one.

    The file is written with mode 0600 and replaced atomically.
    """
    if token_file.is_file():
        token = token_file.read_text().strip()
        with db.session() as s:
            if authenticate(s, token) is not None:
                return token
    with db.session(write_lock=True) as s:
        user = s.scalar(select(User).where(User.name == "admin")) or create_user(s, "admin", admin=True)
        token = create_token(s, user, name="local")
    write_secret(token_file, token)
    return token


def write_secret(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, (text + "\n").encode())
    finally:
        os.close(fd)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


# ---------------------------------------------------------------- searches


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
) -> tuple[Search, bool]:
    """Store a queued search. Returns (search, created); a repeated idempotency key returns the first search."""
    if idempotency_key is not None:
        existing = _by_key(s, owner, idempotency_key)
        if existing is not None:
            return _same_request(existing, spec), False
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


def _by_key(s: Session, owner: User, key: str) -> Search | None:
    return s.scalar(select(Search).where(Search.owner_id == owner.id, Search.idempotency_key == key))


def _same_request(existing: Search, spec: dict[str, Any]) -> Search:
    if existing.spec != spec:
        raise Conflict("this Idempotency-Key was used for a different search", field="Idempotency-Key")
    return existing


def visible(user: User) -> Select[tuple[Search]]:
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


def retry_search(s: Session, search: Search) -> Search:
    """Queue a failed or cancelled search again; it resumes from its last checkpoint."""
    if search.status not in ("failed", "cancelled"):
        raise Conflict(f"only failed or cancelled searches can be retried; {search.id} is {search.status}", "status")
    search.status = "queued"
    search.attempts = 0
    search.cancel_requested = False
    search.error = None
    search.not_before = None
    search.finished_at = None
    s.flush()
    return search


# ---------------------------------------------------------------- scheduling


@dataclass(frozen=True)
class Claim:
    search_id: str
    attempt: int
    lease_token: str
    spec: dict[str, Any]
    cpus: float
    gpus: float


def claim_next(
    db: Database,
    *,
    free_cpus: float,
    free_gpus: float,
    per_user_limit: int,
    lease_s: float,
    runner: dict[str, Any] | None = None,
) -> Claim | None:
    """Atomically move the best queued search that fits the free resources to ``running``.

    Order: priority (high first), then age. A user never has more than ``per_user_limit`` running searches. Safe with
    several controllers: PostgreSQL skips rows another controller has locked and serialises per user on the user row;
    SQLite takes its database write lock for the whole decision.
    """
    for _ in range(5):
        try:
            return _claim_once(db, free_cpus, free_gpus, per_user_limit, lease_s, runner)
        except _Retry:
            continue
        except OperationalError as exc:  # SQLite busy or a PostgreSQL deadlock/serialisation victim
            if "lock" not in str(exc).lower() and "deadlock" not in str(exc).lower():
                raise
    return None


class _Retry(Exception):
    pass


def _running_by_owner(s: Session, owner_ids: Iterable[int] | None = None) -> dict[int, int]:
    q = select(Search.owner_id, func.count()).where(Search.status == "running")
    if owner_ids is not None:
        q = q.where(Search.owner_id.in_(list(owner_ids)))
    return {owner: int(n) for owner, n in s.execute(q.group_by(Search.owner_id)).all()}


def _claim_once(
    db: Database, free_cpus: float, free_gpus: float, limit: int, lease_s: float, runner: dict[str, Any] | None
) -> Claim | None:
    now = utcnow()
    with db.session(write_lock=True) as s:
        running = _running_by_owner(s)
        q = (
            select(Search)
            .where(
                Search.status == "queued",
                or_(Search.not_before.is_(None), Search.not_before <= now),
                Search.cpus <= free_cpus + 1e-9,
                Search.gpus <= free_gpus + 1e-9,
            )
            .order_by(Search.priority.desc(), Search.created_at.asc(), Search.id.asc())
            .limit(100)
        )
        for candidate in list(s.scalars(q)):
            if running.get(candidate.owner_id, 0) >= limit:
                continue
            row = candidate
            if not db.sqlite:
                # lock just this row; another controller holding it means it is being claimed there: skip it
                row = s.scalar(
                    select(Search)
                    .where(Search.id == candidate.id, Search.status == "queued")
                    .with_for_update(skip_locked=True)
                    .execution_options(populate_existing=True)
                )
                if row is None:
                    continue
                s.execute(select(User.id).where(User.id == row.owner_id).with_for_update())
                if _running_by_owner(s, [row.owner_id]).get(row.owner_id, 0) >= limit:
                    raise _Retry  # another controller took this user's last slot meanwhile; start over
            row.status = "running"
            row.attempts += 1
            row.lease_token = uuid.uuid4().hex
            row.lease_expires_at = now + dt.timedelta(seconds=lease_s)
            row.started_at = row.started_at or now
            row.runner = runner
            row.not_before = None
            return Claim(row.id, row.attempts, row.lease_token, row.spec, row.cpus, row.gpus)
    return None


def heartbeat(
    db: Database,
    search_id: str,
    lease_token: str,
    lease_s: float,
    *,
    progress: tuple[str | None, int | None, int | None] | None = None,
    runner: dict[str, Any] | None = None,
) -> bool:
    """Extend the lease of a running search; returns whether a cancel was requested. Raises LeaseLost."""
    values: dict[str, Any] = {"lease_expires_at": utcnow() + dt.timedelta(seconds=lease_s), "updated_at": utcnow()}
    if progress is not None:
        values.update(phase=progress[0], progress_step=progress[1], progress_total=progress[2])
    if runner is not None:
        values["runner"] = runner
    with db.session() as s:
        result = s.execute(
            update(Search)
            .where(Search.id == search_id, Search.lease_token == lease_token, Search.status == "running")
            .values(**values)
            .returning(Search.cancel_requested)
        ).first()
    if result is None:
        raise LeaseLost(search_id)
    return bool(result[0])


def mark_started(db: Database, search_id: str, lease_token: str, output_dir: str, runner: dict[str, Any]) -> None:
    """The runner took over: record where it writes and who it is. Raises LeaseLost if the lease is not ours."""
    with db.session() as s:
        res = s.execute(
            update(Search)
            .where(Search.id == search_id, Search.lease_token == lease_token, Search.status == "running")
            .values(output_dir=output_dir, runner=runner, updated_at=utcnow())
        )
        if not res.rowcount:  # type: ignore[attr-defined]
            raise LeaseLost(search_id)


def finish(
    db: Database,
    search_id: str,
    lease_token: str,
    status: Literal["succeeded", "failed", "cancelled"],
    *,
    result: dict[str, Any] | None = None,
    error: str | None = None,
) -> bool:
    """Record the end of a run if the caller still holds the lease (a stale runner changes nothing)."""
    with db.session() as s:
        res = s.execute(
            update(Search)
            .where(Search.id == search_id, Search.lease_token == lease_token, Search.status == "running")
            .values(
                status=status,
                result=result,
                error=error,
                finished_at=utcnow(),
                lease_token=None,
                lease_expires_at=None,
                updated_at=utcnow(),
            )
        )
        return bool(res.rowcount)  # type: ignore[attr-defined]


def release_attempt(
    db: Database,
    search_id: str,
    lease_token: str | None,
    error: str,
    *,
    backoff_s: float,
    retryable: bool = True,
) -> str | None:
    """An attempt ended without finishing (crash, lost runner, transient error).

    Re-queue it with exponential back-off while attempts remain, otherwise fail it; a requested cancel wins.
    Returns the new status, or None when the lease was no longer held (someone else already handled it).
    """
    with db.session(write_lock=True) as s:
        q = select(Search).where(Search.id == search_id, Search.status == "running")
        if lease_token is not None:
            q = q.where(Search.lease_token == lease_token)
        if not db.sqlite:
            q = q.with_for_update()
        row = s.scalar(q)
        if row is None:
            return None
        now = utcnow()
        row.error = error
        row.lease_token = None
        row.lease_expires_at = None
        if row.cancel_requested:
            row.status, row.finished_at = "cancelled", now
        elif retryable and row.attempts < row.max_attempts:
            row.status = "queued"
            row.not_before = now + dt.timedelta(seconds=backoff_s * 2 ** max(row.attempts - 1, 0))
        else:
            row.status, row.finished_at = "failed", now
        return row.status


def expired_leases(s: Session, now: dt.datetime | None = None) -> list[tuple[str, str | None]]:
    """(search id, lease token) of running searches whose heartbeat lease has run out."""
    now = now or utcnow()
    rows = s.execute(
        select(Search.id, Search.lease_token).where(Search.status == "running", Search.lease_expires_at < now)
    ).all()
    return [(r[0], r[1]) for r in rows]


def running_searches(s: Session) -> list[Search]:
    return list(s.scalars(select(Search).where(Search.status == "running")))


def status_counts(s: Session) -> dict[str, int]:
    return {st: int(n) for st, n in s.execute(select(Search.status, func.count()).group_by(Search.status)).all()}


# ---------------------------------------------------------------- events, candidates, artifacts


def add_events(s: Session, search_id: str, attempt: int, events: Sequence[Event]) -> None:
    s.add_all(
        SearchEvent(
            search_id=search_id,
            attempt=attempt,
            type=str(e.type),
            phase=e.phase,
            step=e.step,
            total=e.total,
            message=e.message,
            metrics=e.metrics,
            data=e.data,
            time=e.time,
        )
        for e in events
    )


def list_events(s: Session, search_id: str, *, after_id: int = 0, limit: int = 500) -> list[SearchEvent]:
    q = select(SearchEvent).where(SearchEvent.search_id == search_id, SearchEvent.id > after_id)
    return list(s.scalars(q.order_by(SearchEvent.id).limit(limit)))


COST_COLUMNS = {"accuracy": "accuracy", "params": "params", "macs": "macs", "latency_ms": "latency_ms"}


def candidate_hash(candidate: dict[str, Any]) -> str:
    """The architecture hash of a candidate item (given, inside ``arch``, or computed from it)."""
    if candidate.get("arch_hash"):
        return str(candidate["arch_hash"])
    arch = candidate["arch"]
    if isinstance(arch, dict) and arch.get("hash"):
        return str(arch["hash"])
    return Architecture.model_validate(arch).hash


def upsert_candidates(s: Session, search_id: str, candidates: Sequence[dict[str, Any]]) -> None:
    """Insert or refresh candidates, keyed by (search, architecture hash).

    Each item: ``arch`` (an Architecture as a dict), ``metrics``, optional ``arch_hash``, ``feasible``,
    ``pareto``, ``phase``.
    """
    if not candidates:
        return
    rows = []
    for c in candidates:
        metrics = {k: float(v) for k, v in c.get("metrics", {}).items()}
        rows.append(
            {
                "search_id": search_id,
                "arch_hash": candidate_hash(c),
                "arch": c["arch"],
                "metrics": metrics,
                "feasible": bool(c.get("feasible", True)),
                "pareto": bool(c.get("pareto", False)),
                "phase": c.get("phase"),
                "created_at": utcnow(),
                **{col: metrics.get(key) for key, col in COST_COLUMNS.items()},
            }
        )
    dialect = s.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = insert(CandidateRow)
    refreshed = ("metrics", "feasible", "pareto", *COST_COLUMNS.values())
    stmt = stmt.on_conflict_do_update(
        index_elements=["search_id", "arch_hash"], set_={k: stmt.excluded[k] for k in refreshed}
    )
    s.execute(stmt, rows)


def list_candidates(
    s: Session,
    search_id: str,
    *,
    sort: str = "accuracy",
    descending: bool = True,
    pareto_only: bool = False,
    limit: int = 50,
    offset: int = 0,
) -> Page:
    q = select(CandidateRow).where(CandidateRow.search_id == search_id)
    if pareto_only:
        q = q.where(CandidateRow.pareto.is_(True))
    total = int(s.scalar(select(func.count()).select_from(q.subquery())) or 0)
    column = getattr(CandidateRow, sort)
    order = column.desc() if descending else column.asc()
    rows = list(s.scalars(q.order_by(order.nulls_last(), CandidateRow.id.asc()).limit(limit).offset(offset)))
    return Page(rows, total, limit, offset)


def register_artifacts(s: Session, search_id: str, root: Path, files: Iterable[Path], kind: str) -> list[Artifact]:
    """Record files (below ``root``, the search's directory) as downloadable artifacts."""
    out = []
    for path in files:
        name = path.relative_to(root).as_posix()
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        row = s.scalar(select(Artifact).where(Artifact.search_id == search_id, Artifact.name == name))
        if row is None:
            row = Artifact(search_id=search_id, name=name, kind=kind, size=path.stat().st_size, sha256=digest)
            s.add(row)
        else:
            row.size, row.sha256, row.kind = path.stat().st_size, digest, kind
        out.append(row)
    s.flush()
    return out


def list_artifacts(s: Session, search_id: str) -> list[Artifact]:
    return list(s.scalars(select(Artifact).where(Artifact.search_id == search_id).order_by(Artifact.id)))


def get_artifact(s: Session, search_id: str, artifact_id: int) -> Artifact:
    row = s.scalar(select(Artifact).where(Artifact.search_id == search_id, Artifact.id == artifact_id))
    if row is None:
        raise NotFound(f"no artifact {artifact_id} in search {search_id}", field="artifact_id")
    return row
