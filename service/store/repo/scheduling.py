"""Scheduling: atomic claims, leases and heartbeats, the end of an attempt, expiry and reconciliation."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import func, or_, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from service.store.db import Database
from service.store.models import Search, User, utcnow
from service.store.repo.errors import LeaseLost

DONE_PHASE = "done"
"""The progress phase of a succeeded search (step 1 of 1, fraction 1.0)."""


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
                Search.owner_id.in_(select(User.id).where(User.disabled_at.is_(None))),  # not a disabled user's
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
                locked = s.scalar(
                    select(Search)
                    .where(Search.id == candidate.id, Search.status == "queued")
                    .with_for_update(skip_locked=True)
                    .execution_options(populate_existing=True)
                )
                if locked is None:
                    continue
                row = locked
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
    """Record the end of a run if the caller still holds the lease (a stale runner changes nothing).

    A succeeded search's progress becomes complete (phase ``done``, step 1 of 1) instead of the last heartbeat's
    snapshot; a failed or cancelled one keeps the progress it had, which shows where it stopped.
    """
    done: dict[str, Any] = (
        {"phase": DONE_PHASE, "progress_step": 1, "progress_total": 1} if status == "succeeded" else {}
    )
    with db.session() as s:
        res = s.execute(
            update(Search)
            .where(Search.id == search_id, Search.lease_token == lease_token, Search.status == "running")
            .values(
                **done,
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

    Re-queue it with exponential back-off while attempts of this run remain (``max_attempts`` since the creation or
    the last retry), otherwise fail it; a requested cancel wins.
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
        elif retryable and row.attempts - row.attempts_base < row.max_attempts:
            row.status = "queued"
            this_run = row.attempts - row.attempts_base  # a retry gives a fresh budget and a fresh back-off
            row.not_before = now + dt.timedelta(seconds=backoff_s * 2 ** max(this_run - 1, 0))
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
