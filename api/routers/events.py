"""A search's progress events: as a JSON page, or live as server-sent events."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

import anyio
from fastapi import APIRouter, Header, Query
from sse_starlette import EventSourceResponse, ServerSentEvent

from api.auth import CurrentUser
from api.convert import event_out, search_out
from api.deps import API_PREFIX, DbDep, find_search
from api.problems import error_responses
from nas.client.models import FINAL_STATUSES, EventOut, SearchOut
from service.store import repo
from service.store.db import Database
from service.store.models import User

router = APIRouter(prefix=f"{API_PREFIX}/searches", tags=["events"], responses=error_responses(401, 404, 422, 500))

POLL_S = 0.3
PING_S = 15
BATCH = 500

# One event of the stream (OpenAPI 3.1: the `schema` of text/event-stream describes each event).
SSE_EVENT_SCHEMA = {
    "type": "object",
    "properties": {
        "id": {"type": "string", "description": "the event's id (absent on `end`)"},
        "event": {"type": "string", "description": "the event's type (epoch, candidate, ...), or `end`"},
        "data": {"type": "string", "description": "EventOut JSON, or SearchOut JSON for `end`"},
    },
    "required": ["event", "data"],
}


@router.get("/{search_id}/events", response_model=list[EventOut], summary="Events of a search")
def list_events(
    search_id: str,
    user: CurrentUser,
    db: DbDep,
    after: Annotated[int, Query(ge=0, le=2**62, description="only events with a larger id")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 500,
) -> list[EventOut]:
    """Events in the order they happened (by id); page with ``after`` = the last id seen."""
    with db.session() as s:
        find_search(s, search_id, user)
        return [event_out(e) for e in repo.list_events(s, search_id, after_id=after, limit=limit)]


def _poll(db: Database, search_id: str, after: int) -> tuple[list[EventOut], SearchOut | None]:
    """New events after ``after``, and the search when it has ended and these are its last events."""
    with db.session() as s:
        row = repo.get_search(s, search_id)
        final = row.status in FINAL_STATUSES  # read before the events: every event of a finished search is seen
        events = [event_out(e) for e in repo.list_events(s, search_id, after_id=after, limit=BATCH)]
        done = search_out(row) if final and len(events) < BATCH else None
    return events, done


async def _stream(db: Database, search_id: str, after: int) -> AsyncIterator[ServerSentEvent]:
    cursor = after
    while True:
        try:
            events, done = await anyio.to_thread.run_sync(_poll, db, search_id, cursor)
        except repo.NotFound:  # deleted while followed
            return
        for event in events:
            cursor = event.id
            yield ServerSentEvent(data=event.model_dump_json(), event=event.type, id=str(event.id))
        if done is not None:
            yield ServerSentEvent(data=done.model_dump_json(), event="end")
            return
        if not events:
            await anyio.sleep(POLL_S)


def _check_visible(db: Database, search_id: str, user: User) -> None:
    with db.session() as s:
        find_search(s, search_id, user)


@router.get(
    "/{search_id}/events/stream",
    summary="Live events (server-sent events)",
    response_class=EventSourceResponse,
    responses={
        200: {
            "description": "A text/event-stream: one SSE event per progress event (`id`: event id, `event`: its "
            "type, `data`: EventOut JSON), then `event: end` with the SearchOut JSON once the search has ended",
            "content": {"text/event-stream": {"schema": SSE_EVENT_SCHEMA}},
        }
    },
)
async def stream_events(
    search_id: str,
    user: CurrentUser,
    db: DbDep,
    after: Annotated[int, Query(ge=0, le=2**62, description="start after this event id")] = 0,
    last_event_id: Annotated[
        int | None,
        Header(alias="Last-Event-ID", ge=0, le=2**62, description="sent by reconnecting EventSource clients"),
    ] = None,
) -> EventSourceResponse:
    """Follow a search: events as they are stored (polled about every 0.3 s), comment pings as keep-alives."""
    await anyio.to_thread.run_sync(_check_visible, db, search_id, user)
    start = max(after, last_event_id or 0)
    return EventSourceResponse(_stream(db, search_id, start), ping=PING_S, headers={"Cache-Control": "no-cache"})
