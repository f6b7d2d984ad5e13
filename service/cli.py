"""The administration commands of ``nas`` (``nas.commands`` entry point ``admin``), on the database of the ``NAS_*``
settings.

``admin create-user``, ``admin create-token``, ``admin list-users``, ``admin list-tokens``, ``admin revoke-token``,
``admin disable-user``, ``admin enable-user``, ``db upgrade``, ``db current``. (The service
commands, through the SDK, are in :mod:`nas.cli_sdk`; the exit codes are documented there.)
"""

from __future__ import annotations

import functools
import re
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from nas.cli_common import F, JsonOption, err, out
from nas.cli_common import echo_json as _echo_json
from nas.cli_common import fail_text as _fail_text
from nas.cli_common import when as _when
from nas.errors import InvalidInput

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from service.store import Database
    from service.store.models import User

PANEL_ADMIN = "Administration (on the database)"


# ---------------------------------------------------------------- administration (database)

USER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
MAX_TOKEN_DAYS = 3650


class _Unmigrated(Exception):
    pass


def db_errors(fn: F) -> F:
    """Store and settings errors as one line on stderr: 2 for bad input, 1 for an unusable database."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from pydantic import ValidationError
        from sqlalchemy.exc import SQLAlchemyError

        from service.store.repo import StoreError

        try:
            return fn(*args, **kwargs)
        except InvalidInput as exc:
            _fail_text(str(exc), 2)
        except StoreError as exc:
            _fail_text(f"{exc.field}: {exc}" if exc.field else str(exc), 2)
        except ValidationError as exc:  # the NAS_* settings
            e = exc.errors()[0]
            _fail_text(f"NAS_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}", 2)
        except _Unmigrated as exc:
            _fail_text(str(exc), 1)
        except SQLAlchemyError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            _fail_text(f"database: {first}", 1)

    return wrapper  # type: ignore[return-value]


def _open_database() -> Database:
    from service.settings import Settings
    from service.store import Database

    return Database(Settings().db_url)  # type: ignore[call-arg]  # every field has a default


def _shown_url(db: Database) -> str:
    from sqlalchemy.engine import make_url

    return make_url(db.url).render_as_string(hide_password=True)


def _head_revision() -> str | None:
    from alembic.script import ScriptDirectory

    from service.store.migrate import alembic_config

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def _migrated_database() -> Database:
    from service.store.migrate import current

    db = _open_database()
    revision, head = current(db.engine), _head_revision()
    if revision != head:
        shown = _shown_url(db)
        db.dispose()
        raise _Unmigrated(
            f"the database {shown} is at revision {revision or 'none (empty)'}, not {head}; run `nas db upgrade` first"
        )
    return db


admin_app = typer.Typer(
    help="Users and API tokens (on the database of the NAS_* settings: run it where the service runs).",
    no_args_is_help=True,
)
db_app = typer.Typer(help="The service's database schema (Alembic migrations).", no_args_is_help=True)


@admin_app.command("create-user")
@db_errors
def create_user(
    name: Annotated[str, typer.Argument(help="user name: letters, digits, '.', '_', '-'")],
    admin: Annotated[bool, typer.Option("--admin", help="sees and manages every search")] = False,
) -> None:
    """Create a user (then give them a token with `nas admin create-token NAME`)."""
    from service.store import repo

    if not USER_NAME.match(name):
        raise InvalidInput("name", f"{name!r} is not allowed; use 1-100 letters, digits, '.', '_' or '-'")
    db = _migrated_database()
    try:
        with db.session(write_lock=True) as s:
            repo.create_user(s, name, admin=admin)
    finally:
        db.dispose()
    typer.echo(f"created {'admin ' if admin else ''}user {name}")
    err.print(f"give them a token with: nas admin create-token {name}", highlight=False)


@admin_app.command("create-token")
@db_errors
def create_token(
    user: Annotated[str, typer.Argument(help="the user the token acts as")],
    name: Annotated[str, typer.Option("--name", help="label of the token (where it is used)")] = "default",
    expires_in_days: Annotated[
        str | None,
        typer.Option("--expires-in-days", metavar="N", help="the token stops working after N days (1-3650)"),
    ] = None,
) -> None:
    """Create an API token and print it (the only time it is shown: only its hash is stored)."""
    import datetime as dt

    from service.store import repo
    from service.store.models import utcnow

    if not 1 <= len(name) <= 100 or "\x00" in name:
        raise InvalidInput("--name", "must be 1-100 characters")
    days = None if expires_in_days is None else _days(expires_in_days)
    expires_at = None if days is None else utcnow() + dt.timedelta(days=days)
    db = _migrated_database()
    try:
        with db.session() as s:
            token = repo.create_token(s, _user(s, user), name=name, expires_at=expires_at)
    finally:
        db.dispose()
    typer.echo(token)
    when = "" if expires_at is None else f"; it expires {expires_at:%Y-%m-%d %H:%M} UTC"
    err.print(f"store it now (e.g. export NAS_TOKEN=...): it cannot be shown again{when}", highlight=False)


@admin_app.command("list-tokens")
@db_errors
def list_tokens(
    user: Annotated[str, typer.Argument(help="whose tokens")],
    as_json: JsonOption = False,
) -> None:
    """List a user's tokens: id, name, prefix, created, last used, expires, revoked (never the tokens themselves)."""
    from service.store import repo

    db = _migrated_database()
    try:
        with db.session() as s:
            rows: list[dict[str, Any]] = [
                {
                    "id": t.id,
                    "name": t.name,
                    "prefix": t.prefix,
                    "created_at": t.created_at,
                    "last_used_at": t.last_used_at,
                    "expires_at": t.expires_at,
                    "revoked_at": t.revoked_at,
                }
                for t in repo.list_tokens(s, _user(s, user))
            ]
    finally:
        db.dispose()
    if as_json:
        _echo_json(rows)
        return
    table = Table(title=f"{len(rows)} token{'s' * (len(rows) != 1)} of {user}")
    for col in ("id", "name", "prefix", "created", "last used", "expires", "revoked"):
        table.add_column(col)
    for r in rows:
        dates = [r[k] for k in ("created_at", "last_used_at", "expires_at", "revoked_at")]
        table.add_row(str(r["id"]), r["name"], r["prefix"], *(_when(d) if d else "" for d in dates))
    out.print(table)


@admin_app.command("revoke-token")
@db_errors
def revoke_token(
    user: Annotated[str, typer.Argument(help="whose token")],
    token_id: Annotated[
        str | None, typer.Option("--token-id", help="the token's id or prefix (see `nas admin list-tokens USER`)")
    ] = None,
    all_tokens: Annotated[bool, typer.Option("--all", help="revoke every token of the user")] = False,
) -> None:
    """Revoke one token of a user, or all of them: requests with it are refused at once, for good."""
    from service.store import repo

    if (token_id is None) == (not all_tokens):
        raise InvalidInput("--token-id", "give either --token-id ID or --all")
    ident: dict[str, Any] = {}
    if token_id is not None:
        if token_id.isascii() and token_id.isdigit() and 0 < int(token_id) < 2**31:
            ident = {"token_id": int(token_id)}
        elif token_id.startswith(repo.TOKEN_PREFIX) and 4 < len(token_id) <= 16 and token_id.isprintable():
            ident = {"prefix": token_id}
        else:
            raise InvalidInput("--token-id", f"{token_id!r} is neither a token id nor a token prefix (nas_...)")
    db = _migrated_database()
    try:
        with db.session(write_lock=True) as s:
            owner = _user(s, user)
            if ident:
                row = repo.revoke_token(s, repo.find_token(s, owner, **ident))
                message = f"revoked token {row.id} ({row.name}, {row.prefix}...) of {user}"
            else:
                count = repo.revoke_tokens(s, owner)
                message = f"revoked {count} token{'s' * (count != 1)} of {user}"
    finally:
        db.dispose()
    typer.echo(message)


@admin_app.command("disable-user")
@db_errors
def disable_user(user: Annotated[str, typer.Argument(help="the user to disable")]) -> None:
    """Disable a user: their tokens stop working (kept, not revoked), queued searches are cancelled, running ones
    are asked to stop."""
    from service.store import repo

    db = _migrated_database()
    try:
        with db.session(write_lock=True) as s:
            touched = repo.disable_user(s, _user(s, user))
            cancelled = sum(1 for r in touched if r.status == "cancelled")
            stopping = len(touched) - cancelled
    finally:
        db.dispose()
    typer.echo(f"disabled user {user}: {cancelled} queued searches cancelled, {stopping} running asked to stop")


@admin_app.command("enable-user")
@db_errors
def enable_user(user: Annotated[str, typer.Argument(help="the user to enable again")]) -> None:
    """Enable a disabled user: their tokens that are neither revoked nor expired work again."""
    from service.store import repo

    db = _migrated_database()
    try:
        with db.session(write_lock=True) as s:
            repo.enable_user(s, _user(s, user))
    finally:
        db.dispose()
    typer.echo(f"enabled user {user}")


def _days(text: str) -> int:
    """``--expires-in-days`` as a whole number of days in 1..MAX_TOKEN_DAYS, else InvalidInput naming it."""
    value = text.strip()
    if not (value.isascii() and value.isdigit() and 1 <= int(value) <= MAX_TOKEN_DAYS):
        raise InvalidInput("--expires-in-days", f"must be a whole number of days, 1-{MAX_TOKEN_DAYS}, not {text!r}")
    return int(value)


def _user(s: Session, name: str) -> User:
    """The user named ``name`` (a name no user could have is refused without a query)."""
    from service.store import repo

    if not USER_NAME.match(name):
        raise repo.NotFound(f"no user named {name!r}", field="user")
    return repo.get_user(s, name)


@admin_app.command("list-users")
@db_errors
def list_users(as_json: JsonOption = False) -> None:
    """List the users and how many active tokens each has."""
    from service.store import repo

    db = _migrated_database()
    try:
        with db.session() as s:
            users = repo.list_users(s)
    finally:
        db.dispose()
    rows: list[dict[str, Any]] = [
        {
            "name": u.name,
            "is_admin": u.is_admin,
            "tokens": tokens,
            "created_at": u.created_at,
            "disabled_at": u.disabled_at,
        }
        for u, tokens in users
    ]
    if as_json:
        _echo_json(rows)
        return
    table = Table(title=f"{len(rows)} user{'s' * (len(rows) != 1)}")
    for col in ("name", "admin", "active tokens", "created", "disabled"):
        table.add_column(col)
    for r in rows:
        disabled = _when(r["disabled_at"]) if r["disabled_at"] else ""
        table.add_row(r["name"], "yes" if r["is_admin"] else "", str(r["tokens"]), _when(r["created_at"]), disabled)
    out.print(table)


@db_app.command("upgrade")
@db_errors
def db_upgrade() -> None:
    """Create or migrate the database schema to the newest revision (safe to run again)."""
    from service.store import upgrade
    from service.store.migrate import current

    db = _open_database()
    try:
        before = current(db.engine)
        upgrade(db.engine)
        after = current(db.engine)
        shown = _shown_url(db)
    finally:
        db.dispose()
    if before == after:
        typer.echo(f"{shown}: already at {after} (head)")
    else:
        typer.echo(f"{shown}: upgraded from {before or 'empty'} to {after} (head)")


@db_app.command("current")
@db_errors
def db_current() -> None:
    """Print the schema revision of the database and whether it is the newest."""
    from service.store.migrate import current

    db = _open_database()
    try:
        revision, shown = current(db.engine), _shown_url(db)
    finally:
        db.dispose()
    head = _head_revision()
    state = "(head)" if revision == head else f"(not head {head}: run `nas db upgrade`)"
    typer.echo(f"{shown}: {revision or 'none'} {state}")


# ---------------------------------------------------------------- registration


def register(app: typer.Typer) -> None:
    """Add the administration commands to the ``nas`` command."""
    app.add_typer(admin_app, name="admin", rich_help_panel=PANEL_ADMIN)
    app.add_typer(db_app, name="db", rich_help_panel=PANEL_ADMIN)
