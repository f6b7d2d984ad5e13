"""Users and API tokens: creation, authentication, revocation, the embedded service's admin token."""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import secrets
from pathlib import Path

from sqlalchemy import Connection, bindparam, func, or_, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, make_transient_to_detached

from service.store.db import Database
from service.store.models import ACTIVE, ApiToken, Search, User, UTCDateTime, utcnow
from service.store.repo.errors import Conflict, NotFound
from service.store.repo.searches import request_cancel

log = logging.getLogger(__name__)

TOKEN_PREFIX = "nas_"


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


def create_token(s: Session, user: User, name: str = "default", *, expires_at: dt.datetime | None = None) -> str:
    """A new API token for ``user`` (valid until ``expires_at``; None: until revoked). Only its hash is stored; the
    plain token is returned once."""
    return issue_token(s, user, name, expires_at=expires_at)[1]


def issue_token(
    s: Session, user: User, name: str = "default", *, expires_at: dt.datetime | None = None
) -> tuple[ApiToken, str]:
    """Like create_token, and also the stored row (its id, prefix and dates)."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(user_id=user.id, name=name, token_hash=hash_token(token), prefix=token[:12], expires_at=expires_at)
    s.add(row)
    s.flush()
    return row, token


TOKEN_USE_EVERY = dt.timedelta(minutes=5)  # how coarsely a token's last use is recorded


def authenticate(s: Session, token: str) -> User | None:
    """The user of an active token, or None: a revoked or expired token, or one of a disabled user, is refused.
    Reads only: see record_token_use."""
    found = token_user(s, token)
    return None if found is None else found[0]


def token_user(s: Session | Connection, token: str) -> tuple[User, dt.datetime | None] | None:
    """Like :func:`authenticate`, with the token's recorded last use: the API records a use only when that is older
    than TOKEN_USE_EVERY, so most requests write nothing. One Core query built once; the user comes back detached
    (as after any closed session), so ``s`` may be a plain Connection, cheaper than a Session for this read."""
    conn = s.connection() if isinstance(s, Session) else s
    row = conn.execute(_TOKEN_USER, {"token_hash": hash_token(token), "now": utcnow()}).first()
    if row is None:
        return None
    user = User(id=row.id, name=row.name, is_admin=row.is_admin, created_at=row.created_at, disabled_at=row.disabled_at)
    make_transient_to_detached(user)
    return user, row.last_used_at


_USERS, _TOKENS = User.__table__, ApiToken.__table__
_TOKEN_USER = (
    select(
        _USERS.c.id,
        _USERS.c.name,
        _USERS.c.is_admin,
        _USERS.c.created_at,
        _USERS.c.disabled_at,
        _TOKENS.c.last_used_at,
    )
    .select_from(_USERS.join(_TOKENS, _USERS.c.id == _TOKENS.c.user_id))
    .where(
        _TOKENS.c.token_hash == bindparam("token_hash"),
        _TOKENS.c.revoked_at.is_(None),
        or_(_TOKENS.c.expires_at.is_(None), _TOKENS.c.expires_at > bindparam("now", type_=UTCDateTime())),
        _USERS.c.disabled_at.is_(None),
    )
)


def list_tokens(s: Session, user: User) -> list[ApiToken]:
    """Every token of ``user`` (revoked and expired ones too), oldest first."""
    return list(s.scalars(select(ApiToken).where(ApiToken.user_id == user.id).order_by(ApiToken.id)))


def find_token(s: Session, user: User, *, token_id: int | None = None, prefix: str | None = None) -> ApiToken:
    """One token of ``user`` by id or by its shown prefix (which must name exactly one); NotFound otherwise."""
    if (token_id is None) == (prefix is None):
        raise ValueError("give exactly one of token_id and prefix")
    if token_id is not None:
        row = s.scalar(select(ApiToken).where(ApiToken.user_id == user.id, ApiToken.id == token_id))
        if row is None:
            raise NotFound(f"user {user.name!r} has no token {token_id}", field="token_id")
        return row
    assert prefix is not None
    rows = list(
        s.scalars(
            select(ApiToken).where(ApiToken.user_id == user.id, ApiToken.prefix.startswith(prefix, autoescape=True))
        )
    )
    if len(rows) != 1:
        what = "no token" if not rows else f"{len(rows)} tokens"
        raise NotFound(f"user {user.name!r} has {what} with prefix {prefix!r}", field="token_id")
    return rows[0]


def revoke_token(s: Session, token: ApiToken) -> ApiToken:
    """Revoke one token (at once: the next request with it is refused). Revoking a revoked token changes nothing."""
    if token.revoked_at is None:
        token.revoked_at = utcnow()
        s.flush()
    return token


def disable_user(s: Session, user: User) -> list[Search]:
    """Disable ``user``: their tokens stop authenticating (they are kept, not revoked), their queued searches are
    cancelled and their running ones are asked to stop. Returns the searches it cancelled or asked to stop."""
    if user.disabled_at is None:
        user.disabled_at = utcnow()
    active = list(
        s.scalars(
            select(Search).where(Search.owner_id == user.id, Search.status.in_(ACTIVE)).order_by(Search.created_at)
        )
    )
    for search in active:
        request_cancel(s, search)
    s.flush()
    return active


def enable_user(s: Session, user: User) -> User:
    """Let a disabled user's (unrevoked, unexpired) tokens authenticate again. Cancelled searches stay cancelled."""
    user.disabled_at = None
    s.flush()
    return user


def record_token_use(db: Database, token: str, every: dt.timedelta = TOKEN_USE_EVERY) -> None:
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
