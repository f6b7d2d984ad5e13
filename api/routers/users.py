"""/api/v1/users: users and their API tokens, for admins (create, disable, enable; list, create and revoke tokens).

Every route answers a non-admin caller 403. A disabled user's tokens stop authenticating at once (they are kept, so
enabling the user restores them); a revoked token is refused at once and for good.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated

from fastapi import APIRouter, Depends, Path, status
from sqlalchemy.orm import Session

from api.auth import CurrentUser
from api.deps import API_PREFIX, DbDep
from api.problems import ProblemError, error_responses
from nas.client.models import (
    USER_NAME_PATTERN,
    TokenCreate,
    TokenCreated,
    TokenOut,
    UserCreate,
    UserDisabled,
    UserInfo,
)
from service.store import repo
from service.store.models import User, utcnow

USER_NAME = re.compile(USER_NAME_PATTERN)
MAX_TOKEN_ID = 2**31 - 1  # the column is a 32-bit INTEGER on PostgreSQL


def require_admin(user: CurrentUser) -> User:
    if not user.is_admin:
        raise ProblemError(403, "only admins may manage users and tokens", field="Authorization")
    return user


AdminUser = Annotated[User, Depends(require_admin)]
UserName = Annotated[str, Path(description="the user's name")]
TokenId = Annotated[int, Path(ge=1, le=MAX_TOKEN_ID, description="the token's id (from the token list)")]

router = APIRouter(prefix=f"{API_PREFIX}/users", tags=["users"], responses=error_responses(401, 403, 422, 500))


def find_user(s: Session, name: str) -> User:
    """The user named ``name``; a name no user could have is NotFound without a query."""
    if not USER_NAME.fullmatch(name):
        raise repo.NotFound(f"no user named {name!r}", field="name")
    try:
        return repo.get_user(s, name)
    except repo.NotFound as exc:
        raise repo.NotFound(str(exc), field="name") from exc


def user_info(user: User, active_tokens: int) -> UserInfo:
    return UserInfo(
        name=user.name,
        is_admin=user.is_admin,
        created_at=user.created_at,
        disabled_at=user.disabled_at,
        active_tokens=active_tokens,
    )


def _active_tokens(s: Session, user: User) -> int:
    return sum(1 for t in repo.list_tokens(s, user) if t.revoked_at is None)


@router.get("", response_model=list[UserInfo], summary="List users")
def list_users(admin: AdminUser, db: DbDep) -> list[UserInfo]:
    """Every user, by name, with whether they are disabled and how many tokens they have that are not revoked."""
    with db.session() as s:
        return [user_info(u, n) for u, n in repo.list_users(s)]


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=UserInfo,
    summary="Create a user",
    responses=error_responses(400, 409, 413),
)
def create_user(body: UserCreate, admin: AdminUser, db: DbDep) -> UserInfo:
    """A new user without tokens (give them one with POST /api/v1/users/{name}/tokens)."""
    with db.session(write_lock=True) as s:
        return user_info(repo.create_user(s, body.name, admin=body.is_admin), 0)


@router.post(
    "/{name}/disable", response_model=UserDisabled, summary="Disable a user", responses=error_responses(404, 409)
)
def disable_user(name: UserName, admin: AdminUser, db: DbDep) -> UserDisabled:
    """The user's tokens stop authenticating (they are not revoked), their queued searches are cancelled and their
    running ones asked to stop. Disabling a disabled user again changes nothing but asks again."""
    with db.session(write_lock=True) as s:
        user = find_user(s, name)
        if user.id == admin.id:
            raise repo.Conflict("an admin cannot disable themselves", field="name")
        touched = repo.disable_user(s, user)
        info = user_info(user, _active_tokens(s, user))
        return UserDisabled(
            **info.model_dump(),
            cancelled=[r.id for r in touched if r.status == "cancelled"],
            cancel_requested=[r.id for r in touched if r.status == "running"],
        )


@router.post("/{name}/enable", response_model=UserInfo, summary="Enable a user", responses=error_responses(404))
def enable_user(name: UserName, admin: AdminUser, db: DbDep) -> UserInfo:
    """The user's tokens (those neither revoked nor expired) authenticate again; cancelled searches stay cancelled."""
    with db.session(write_lock=True) as s:
        user = repo.enable_user(s, find_user(s, name))
        return user_info(user, _active_tokens(s, user))


@router.get(
    "/{name}/tokens", response_model=list[TokenOut], summary="List a user's tokens", responses=error_responses(404)
)
def list_tokens(name: UserName, admin: AdminUser, db: DbDep) -> list[TokenOut]:
    """Every token of the user, revoked and expired ones too, oldest first (never the tokens themselves)."""
    with db.session() as s:
        return [TokenOut.model_validate(t) for t in repo.list_tokens(s, find_user(s, name))]


@router.post(
    "/{name}/tokens",
    status_code=status.HTTP_201_CREATED,
    response_model=TokenCreated,
    summary="Create a token",
    responses=error_responses(400, 404, 413),
)
def create_token(name: UserName, body: TokenCreate, admin: AdminUser, db: DbDep) -> TokenCreated:
    """A new token for the user, shown in this answer only (only its hash is stored)."""
    expires_at = None if body.expires_in_days is None else utcnow() + dt.timedelta(days=body.expires_in_days)
    with db.session(write_lock=True) as s:
        row, token = repo.issue_token(s, find_user(s, name), body.name, expires_at=expires_at)
        return TokenCreated(**TokenOut.model_validate(row).model_dump(), token=token)


@router.delete(
    "/{name}/tokens/{token_id}",
    response_model=TokenOut,
    summary="Revoke a token",
    responses=error_responses(404),
)
def revoke_token(name: UserName, token_id: TokenId, admin: AdminUser, db: DbDep) -> TokenOut:
    """Revoke the token at once and for good (revoking a revoked token again changes nothing)."""
    with db.session(write_lock=True) as s:
        row = repo.revoke_token(s, repo.find_token(s, find_user(s, name), token_id=token_id))
        return TokenOut.model_validate(row)
