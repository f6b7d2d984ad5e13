"""Dependencies shared by the routers: the app's settings, database and executor, and the search-id guard."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from service.settings import Settings
from service.store import repo
from service.store.db import Database
from service.store.models import Search, User
from workers.executor import Executor

API_PREFIX = "/api/v1"

# Search ids are uuid4 hex; anything else cannot name a search, so it is answered 404 without a query
# (this also keeps NUL bytes and other junk away from the database).
SEARCH_ID = re.compile(r"[0-9a-f]{32}")


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_db(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


def get_executor(request: Request) -> Executor | None:
    """The app's executor (None when the app runs without one, e.g. in tests of the API alone)."""
    executor: Executor | None = request.app.state.executor
    return executor


SettingsDep = Annotated[Settings, Depends(get_settings)]
DbDep = Annotated[Database, Depends(get_db)]
ExecutorDep = Annotated[Executor | None, Depends(get_executor)]


def find_search(s: Session, search_id: str, user: User, *, lock: bool = False) -> Search:
    """The search if ``user`` may see it, else repo.NotFound (also for another user's search).

    ``lock`` takes a row lock on PostgreSQL (SQLite sessions that write take the database write lock instead), so a
    cancel or retry does not overwrite what the scheduler changed meanwhile.
    """
    if not SEARCH_ID.fullmatch(search_id):
        raise repo.NotFound(f"no search {search_id!r}", field="search_id")
    row = repo.get_search(s, search_id, user)
    if lock and s.get_bind().dialect.name != "sqlite":
        s.refresh(row, with_for_update=True)
    return row
