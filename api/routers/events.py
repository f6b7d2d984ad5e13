"""A search's progress events: as a JSON page, or live as server-sent events."""

from __future__ import annotations

from typing import Annotated

import anyio
from fastapi import APIRouter, Header, Query, Request
from pydantic import Field
from sse_starlette import EventSourceResponse
from starlette.types import Receive, Scope, Send

from api.auth import CurrentUser
from api.convert import event_out
from api.deps import API_PREFIX, DbDep, find_search
from api.problems import error_responses
from api.streams import Stream, StreamHub
from nas.client.models import EventOut
from service.store import repo
from service.store.db import Database
from service.store.models import User

router = APIRouter(prefix=f"{API_PREFIX}/searches", tags=["events"], responses=error_responses(401, 404, 422, 500))

PING_S = 15
NO_NUL = r"^[^\x00]*$"

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
    type_: Annotated[
        list[Annotated[str, Field(max_length=32, pattern=NO_NUL)]],
        Query(alias="type", description="keep events of these types (repeatable)"),
    ] = [],  # noqa: B006
    phase: Annotated[
        list[Annotated[str, Field(max_length=64, pattern=NO_NUL)]],
        Query(description="keep events of these phases (repeatable)"),
    ] = [],  # noqa: B006
) -> list[EventOut]:
    """Events in the order they happened (by id); page with ``after`` = the last id seen. ``type`` and ``phase``
    filter (e.g. ``type=epoch&phase=supernet`` for a training curve); ids stay those of the whole log."""
    with db.session() as s:
        row = find_search(s, search_id, user)
        events = repo.list_events(s, row.id, after_id=after, limit=limit, types=type_, phases=phase)
        return [event_out(e) for e in events]


class _StreamResponse(EventSourceResponse):
    """The SSE response of one stream; however it ends (even before its first event) its slot is freed."""

    def __init__(self, stream: Stream, ping: int, headers: dict[str, str]) -> None:
        super().__init__(stream.events(), ping=ping, headers=headers)
        self.stream = stream

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.stream.close()


def _resolve(db: Database, search_id: str, user: User) -> str:
    """The full id of the search ``search_id`` names, if ``user`` may see it."""
    with db.session() as s:
        return find_search(s, search_id, user).id


@router.get(
    "/{search_id}/events/stream",
    summary="Live events (server-sent events)",
    response_class=EventSourceResponse,
    responses={
        200: {
            "description": "A text/event-stream: one SSE event per progress event (`id`: event id, `event`: its "
            "type, `data`: EventOut JSON), then `event: end` with the SearchOut JSON once the search has ended",
            "content": {"text/event-stream": {"schema": SSE_EVENT_SCHEMA}},
        },
        429: {
            **error_responses(429)[429],
            "description": "Too many open event streams (of this user, or in all); retry after `Retry-After` seconds",
            "headers": {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}},
        },
    },
)
async def stream_events(
    request: Request,
    search_id: str,
    user: CurrentUser,
    db: DbDep,
    after: Annotated[int, Query(ge=0, le=2**62, description="start after this event id")] = 0,
    last_event_id: Annotated[
        int | None,
        Header(alias="Last-Event-ID", ge=0, le=2**62, description="sent by reconnecting EventSource clients"),
    ] = None,
) -> EventSourceResponse:
    """Follow a search: events as they are stored, comment pings as keep-alives.

    One poll loop per followed search (about every 0.3 s) feeds all its streams; the number of open streams is
    limited per user (``NAS_MAX_STREAMS_PER_USER``) and in all (``NAS_MAX_STREAMS``): over it, 429 with Retry-After.
    """
    full_id = await anyio.to_thread.run_sync(_resolve, db, search_id, user)
    hub: StreamHub = request.app.state.streams
    stream = hub.open(user.name, full_id, max(after, last_event_id or 0))
    return _StreamResponse(stream, ping=PING_S, headers={"Cache-Control": "no-cache"})
