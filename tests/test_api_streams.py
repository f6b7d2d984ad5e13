"""Bounded event streams (issue 10, defect 2): one shared poll loop per followed search, limits on open streams.

The app runs under a real uvicorn on 127.0.0.1 (server-sent events need a live server to be held open concurrently);
the tests count the poll loops and the open streams in the app's StreamHub (``app.state.streams``).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy import update

from api import streams as streams_module
from api.app import create_app
from api.streams import POLL_S, StreamHub
from nas.events import Event, EventType
from service.settings import Settings
from service.store import Database, repo
from service.store.models import Search
from tests.api_helpers import spec
from tests.live_service import uvicorn_in_thread


@dataclass
class Live:
    url: str
    db: Database
    hub: StreamHub
    tokens: dict[str, str]

    def h(self, user: str, **headers: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[user]}", **headers}

    def search(self, owner: str = "alice", status: str = "queued") -> str:
        with self.db.session() as s:
            row, _ = repo.create_search(s, repo.get_user(s, owner), spec())
            row.status = status
            return row.id

    def set_status(self, search_id: str, status: str) -> None:
        with self.db.session() as s:
            s.execute(update(Search).where(Search.id == search_id).values(status=status))

    def add_events(self, search_id: str, steps: range) -> None:
        events = [Event(type=EventType.EPOCH, phase="supernet", step=i, total=100) for i in steps]
        with self.db.session() as s:
            repo.add_events(s, search_id, 1, events)

    def event_ids(self, search_id: str) -> list[int]:
        with self.db.session() as s:
            return [e.id for e in repo.list_events(s, search_id, limit=10_000)]

    def stream_url(self, search_id: str) -> str:
        return f"{self.url}/api/v1/searches/{search_id}/events/stream"


@contextmanager
def live_app(db: Database, tmp_path: Path, **settings: Any) -> Iterator[Live]:
    """The app on ``db``, served by uvicorn on a free port of 127.0.0.1 until exit; users alice and bob."""
    app = create_app(Settings(data_dir=tmp_path, scheduler=False, **settings), db=db)
    tokens = {}
    with db.session() as s:
        for name in ("alice", "bob"):
            tokens[name] = repo.create_token(s, repo.create_user(s, name))
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", access_log=False,
                            timeout_graceful_shutdown=2)  # fmt: skip
    with uvicorn_in_thread(config) as url:
        yield Live(url, db, app.state.streams, tokens)


async def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting for the condition"
        await asyncio.sleep(0.02)


class Reader:
    """An open SSE response, read event by event ({'id', 'event', 'data'}; comment pings skipped)."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.lines = response.aiter_lines()

    async def next(self, timeout: float = 10.0) -> dict[str, str]:
        current: dict[str, str] = {}
        async with asyncio.timeout(timeout):
            async for line in self.lines:
                if not line:
                    if current:
                        return current
                    continue
                if line.startswith(":"):
                    continue
                key, _, value = line.partition(":")
                current[key] = current.get(key, "") + value.removeprefix(" ")
        assert current, "the stream ended"
        return current

    async def steps(self, n: int) -> list[int]:
        return [json.loads((await self.next())["data"])["step"] for _ in range(n)]


@asynccontextmanager
async def open_stream(client: httpx.AsyncClient, url: str, headers: dict[str, str]) -> AsyncIterator[Reader]:
    async with client.stream("GET", url, headers=headers) as r:
        assert r.status_code == 200, (await r.aread()).decode()
        yield Reader(r)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


# ---------------------------------------------------------------- one poll loop per search


def test_one_poll_loop_per_search_whatever_the_number_of_streams(database: Database, tmp_path: Path) -> None:
    with live_app(database, tmp_path) as live:
        sid, other = live.search(), live.search("bob")
        live.add_events(sid, range(1, 3))

        async def main() -> None:
            async with httpx.AsyncClient(timeout=30) as client, AsyncExitStack() as stack:
                readers = [await stack.enter_async_context(open_stream(client, live.stream_url(sid), live.h("alice")))
                           for _ in range(12)]  # fmt: skip
                bob = [await stack.enter_async_context(open_stream(client, live.stream_url(other), live.h("bob")))
                       for _ in range(3)]  # fmt: skip
                for reader in readers:  # the backlog reaches every stream
                    assert await reader.steps(2) == [1, 2]
                await wait_for(lambda: live.hub.open_streams == 15)
                assert live.hub.active_loops == 2 and live.hub.loops_started == 2  # one per search, not per stream

                # while nothing happens, the 15 streams cost one read per POLL_S per search, not per stream
                polls, start = live.hub.polls, time.monotonic()
                await asyncio.sleep(1.5)
                elapsed = time.monotonic() - start
                assert live.hub.polls - polls <= 2 * (elapsed / POLL_S + 2)

                # new events and the end reach every stream from the one loop
                live.add_events(sid, range(3, 5))
                for reader in readers:
                    assert await reader.steps(2) == [3, 4]
                live.set_status(sid, "succeeded")
                for reader in readers:
                    end = await reader.next()
                    assert end["event"] == "end" and json.loads(end["data"])["status"] == "succeeded"
                await wait_for(lambda: live.hub.open_streams == 3 and live.hub.active_loops == 1)
                assert live.hub.open_streams_of("alice") == 0 and len(bob) == 3
            await wait_for(lambda: live.hub.open_streams == 0 and live.hub.active_loops == 0)  # the last one left
            assert live.hub.loops_started == 2

        run(main())


def test_resume_with_last_event_id_while_the_search_is_followed(database: Database, tmp_path: Path) -> None:
    with live_app(database, tmp_path) as live:
        sid = live.search(status="running")
        live.add_events(sid, range(1, 4))
        ids = live.event_ids(sid)

        async def main() -> None:
            async with httpx.AsyncClient(timeout=30) as client:
                async with open_stream(client, live.stream_url(sid), live.h("alice")) as first:
                    assert await first.steps(3) == [1, 2, 3]  # the feed has read past ids[0] by now
                    headers = live.h("alice", **{"Last-Event-ID": str(ids[0])})
                    async with open_stream(client, live.stream_url(sid), headers) as resumed:
                        assert await resumed.steps(2) == [2, 3]
                        live.add_events(sid, range(4, 6))
                        assert await resumed.steps(2) == [4, 5] and await first.steps(2) == [4, 5]
                        live.set_status(sid, "failed")
                        assert (await resumed.next())["event"] == "end"
                        assert (await first.next())["event"] == "end"
                async with open_stream(client, f"{live.stream_url(sid)}?after={ids[1]}", live.h("alice")) as late:
                    assert await late.steps(3) == [3, 4, 5] and (await late.next())["event"] == "end"
            assert live.hub.loops_started == 2  # the first loop ended with the search; the late stream read alone

        run(main())


def test_a_slow_stream_that_falls_behind_reads_the_store_again(
    database: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hub alone: a stream whose consumer does not read while its feed delivers batches drops them and reads the
    store from its last id instead; nothing is lost or repeated."""
    monkeypatch.setattr(streams_module, "MAX_PENDING", 1)
    monkeypatch.setattr(streams_module, "BATCH", 2)
    with database.session() as s:
        row, _ = repo.create_search(s, repo.create_user(s, "carol"), spec())
        row.status = "running"
        sid = row.id
    live = Live("", database, StreamHub(database, max_per_user=1, max_total=1, poll_s=0.02), {})
    live.add_events(sid, range(1, 2))

    async def main() -> list[tuple[str, str]]:
        stream = live.hub.open("carol", sid, 0)
        events = stream.events()
        first = await anext(events)  # joined the feed, then read the backlog
        for i in range(2, 12, 2):  # batches delivered while nobody reads the stream
            target = live.hub.polls + 2
            live.add_events(sid, range(i, i + 2))
            await wait_for(lambda t=target: live.hub.polls >= t)
        assert stream._sub is not None and stream._sub.lagged
        live.set_status(sid, "succeeded")
        rest = [item async for item in events]
        assert live.hub.open_streams == 0 and live.hub.active_loops == 0
        return [(item.event or "", item.data or "") for item in [first, *rest]]

    out = run(main())
    assert [json.loads(data)["step"] for _, data in out[:-1]] == list(range(1, 12))
    assert out[-1][0] == "end" and json.loads(out[-1][1])["status"] == "succeeded"


def test_shutdown_closes_the_streams_without_an_end(database: Database, tmp_path: Path) -> None:
    """The app's lifespan closes the hub: its loops stop and its streams end (clients reconnect with Last-Event-ID)."""
    with database.session() as s:
        row, _ = repo.create_search(s, repo.create_user(s, "dave"), spec())
        sid = row.id
    live = Live("", database, StreamHub(database, max_per_user=2, max_total=2, poll_s=0.02), {})
    live.add_events(sid, range(1, 2))

    async def main() -> list[Any]:
        events = live.hub.open("dave", sid, 0).events()
        await anext(events)
        assert live.hub.active_loops == 1 and live.hub.open_streams == 1
        await live.hub.close()
        rest = [item async for item in events]
        assert live.hub.active_loops == 0 and live.hub.open_streams == 0
        return rest

    assert run(main()) == []


# ---------------------------------------------------------------- limits


def test_stream_limits_per_user_and_in_all_and_disconnect_frees_the_slot(database: Database, tmp_path: Path) -> None:
    with live_app(database, tmp_path, max_streams_per_user=2, max_streams=3) as live:
        sid, sid2, bobs = live.search(), live.search(), live.search("bob")

        async def refused(client: httpx.AsyncClient, url: str, user: str, setting: str) -> None:
            r = await client.get(url, headers=live.h(user))
            assert r.status_code == 429, r.text
            assert r.headers["content-type"] == "application/problem+json"
            assert int(r.headers["retry-after"]) > 0
            body = r.json()
            assert body["status"] == 429 and body["title"] == "Too Many Requests" and setting in body["detail"]

        async def main() -> None:
            async with httpx.AsyncClient(timeout=30) as client, AsyncExitStack() as stack:
                url, bob_url = live.stream_url(sid), live.stream_url(bobs)
                for _ in range(2):
                    await stack.enter_async_context(open_stream(client, url, live.h("alice")))
                await refused(client, url, "alice", "NAS_MAX_STREAMS_PER_USER=2")
                await refused(client, live.stream_url(sid2), "alice", "NAS_MAX_STREAMS_PER_USER=2")  # any search
                assert live.hub.open_streams_of("alice") == 2  # a refused request takes no slot

                async with AsyncExitStack() as bob:
                    await bob.enter_async_context(open_stream(client, bob_url, live.h("bob")))
                    await refused(client, bob_url, "bob", "NAS_MAX_STREAMS=3")  # bob is under his own limit
                await wait_for(lambda: live.hub.open_streams == 2)  # bob disconnected: his slot is free again
                async with open_stream(client, bob_url, live.h("bob")):
                    assert live.hub.open_streams_of("bob") == 1

            await wait_for(lambda: live.hub.open_streams == 0 and live.hub.active_loops == 0)
            async with httpx.AsyncClient(timeout=30) as client, AsyncExitStack() as stack:  # every slot is free
                for _ in range(2):
                    await stack.enter_async_context(open_stream(client, live.stream_url(sid), live.h("alice")))
                await stack.enter_async_context(open_stream(client, live.stream_url(bobs), live.h("bob")))
                assert live.hub.open_streams == 3

        run(main())


def test_refused_and_ended_streams_take_no_slot(database: Database, tmp_path: Path) -> None:
    with live_app(database, tmp_path, max_streams_per_user=1) as live:
        sid, bobs = live.search(), live.search("bob")

        async def main() -> None:
            async with httpx.AsyncClient(timeout=30) as client:
                hidden = await client.get(live.stream_url(bobs), headers=live.h("alice"))
                assert hidden.status_code == 404
                await wait_for(lambda: live.hub.open_streams == 0)
                live.set_status(sid, "cancelled")
                for _ in range(3):  # a stream of an ended search closes at once, and frees its slot
                    async with open_stream(client, live.stream_url(sid), live.h("alice")) as reader:
                        assert (await reader.next())["event"] == "end"
                    await wait_for(lambda: live.hub.open_streams == 0)

        run(main())
