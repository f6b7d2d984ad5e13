"""Dependencies shared by the routers: the app's settings, database and executor, and the search-id guard."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, ParamSpec, TypeVar

import anyio
from fastapi import Depends, Request
from sqlalchemy.orm import Session

from service.settings import Settings
from service.store import repo
from service.store.db import Database
from service.store.models import Search, User
from workers.executor import Executor

API_PREFIX = "/api/v1"


# The dependencies below only read the app's state: they are ``async def`` so FastAPI calls them in the event loop
# instead of handing each to its thread pool (a thread hop per dependency per request was most of a request's CPU).


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_db(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


async def get_executor(request: Request) -> Executor | None:
    """The app's executor (None when the app runs without one, e.g. in tests of the API alone)."""
    executor: Executor | None = request.app.state.executor
    return executor


P = ParamSpec("P")
R = TypeVar("R")


async def read_db(db: Database, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    """Run ``fn`` (a short read of the store) for an ``async`` route or dependency.

    On SQLite it runs right here, in the event loop: a read in WAL mode never waits for a writer, takes a fraction of
    a millisecond, and a hand-off to the thread pool would cost more CPU than the read. On other databases (a network
    round trip, server-side waits) it runs in the thread pool. Only reads: writes may wait for SQLite's lock.
    """
    if db.sqlite:
        return fn(*args, **kwargs)
    return await anyio.to_thread.run_sync(lambda: fn(*args, **kwargs))


SettingsDep = Annotated[Settings, Depends(get_settings)]
DbDep = Annotated[Database, Depends(get_db)]
ExecutorDep = Annotated[Executor | None, Depends(get_executor)]


def find_search(s: Session, search_id: str, user: User, *, lock: bool = False) -> Search:
    """The search named by ``search_id`` (its id, or a unique prefix of 6+ characters among the searches ``user`` may
    see) if ``user`` may see it, else repo.NotFound (also for another user's search); repo.Ambiguous (409) when a
    prefix matches several. Anything that is not hex is answered 404 without a query for the search itself.

    Routes use the returned row's ``id`` from then on, never the path's value. ``lock`` takes a row lock on
    PostgreSQL (SQLite sessions that write take the database write lock instead), so a cancel or retry does not
    overwrite what the scheduler changed meanwhile.
    """
    row = repo.get_search_by_ref(s, search_id, user)
    if lock and s.get_bind().dialect.name != "sqlite":
        s.refresh(row, with_for_update=True)
    return row
