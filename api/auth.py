"""Bearer-token authentication: ``Authorization: Bearer <token>`` checked against the hashed tokens in the store.

With ``settings.auth`` off (allowed only on a loopback address) a request without a token acts as the user "admin".
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Annotated

import anyio
from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.exc import IntegrityError

from api.deps import DbDep, SettingsDep, read_db
from api.problems import ProblemError
from api.ratelimit import RateLimiter, retry_after_header
from service.store import repo
from service.store.db import Database
from service.store.models import User, utcnow

log = logging.getLogger(__name__)

LOCAL_ADMIN = "admin"

bearer = HTTPBearer(
    auto_error=False,
    bearerFormat="nas_<token>",
    description="An API token from `nas admin create-token` (the embedded service writes one to its data directory).",
)


def _unauthorized(detail: str, *, error: str | None = None) -> ProblemError:
    challenge = 'Bearer realm="nas"' + (f', error="{error}"' if error else "")
    return ProblemError(401, detail, field="Authorization", headers={"WWW-Authenticate": challenge})


def _token_user(db: Database, token: str) -> tuple[User, dt.datetime | None] | None:
    with db.engine.connect() as conn:  # a read: a Core connection, no ORM session
        return repo.token_user(conn, token)


async def authenticate(db: Database, token: str) -> User | None:
    """The token's user (a read, see api.deps.read_db), then, when its recorded last use is older than
    repo.TOKEN_USE_EVERY, the use recorded in a transaction of its own in the thread pool (so most requests write
    nothing)."""
    found = await read_db(db, _token_user, db, token)
    if found is None:
        return None
    user, last_used = found
    if last_used is None or last_used < utcnow() - repo.TOKEN_USE_EVERY:
        await anyio.to_thread.run_sync(repo.record_token_use, db, token)
    return user


def local_admin(db: Database) -> User:
    """The user "admin" (created if missing) that token-less requests act as when auth is off."""
    try:
        with db.session() as s:
            return repo.get_user(s, LOCAL_ADMIN)
    except repo.NotFound:
        pass
    try:
        with db.session(write_lock=True) as s:
            return repo.create_user(s, LOCAL_ADMIN, admin=True)
    except (IntegrityError, repo.Conflict):  # created concurrently
        with db.session() as s:
            return repo.get_user(s, LOCAL_ADMIN)


async def current_user(
    request: Request,
    settings: SettingsDep,
    db: DbDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
) -> User:
    header = request.headers.get("authorization")
    if credentials is None:
        if header:
            raise _unauthorized("the Authorization header must be 'Bearer <token>'", error="invalid_request")
        if not settings.auth:
            return await anyio.to_thread.run_sync(local_admin, db)
        raise _unauthorized("this request needs an API token: send 'Authorization: Bearer <token>'")
    user = await authenticate(db, credentials.credentials.strip())
    if user is None:
        raise _unauthorized(
            "the API token is unknown, revoked or expired, or its user is disabled", error="invalid_token"
        )
    _rate_limit(request, user)
    return user


def _rate_limit(request: Request, user: User) -> None:
    """429 with Retry-After when the user's requests outrun NAS_RATE_LIMIT_PER_S (api.ratelimit)."""
    limiter: RateLimiter | None = getattr(request.app.state, "rate_limiter", None)
    if limiter is None:
        return
    wait = limiter.take(user.id)
    if wait > 0:
        raise ProblemError(
            429,
            f"too many requests: at most {limiter.rate:g} per second (NAS_RATE_LIMIT_PER_S); retry later",
            headers={"Retry-After": retry_after_header(wait)},
        )


CurrentUser = Annotated[User, Depends(current_user)]
