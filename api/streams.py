"""Live event streams: one shared database poll loop per followed search, fanned out to its subscribers.

Every open ``events/stream`` used to poll the database on its own; now a ``StreamHub`` (one per app, in
``app.state.streams``) runs ONE asyncio task per search that has at least one subscriber. The task reads the events
after the last id it has seen (``repo.list_events``) and hands each batch to every subscriber; it stops when the last
subscriber leaves, or once the search has ended and its last events were sent.

A subscriber joins the feed first, then reads what it has not seen yet (its ``after`` / ``Last-Event-ID``) on its own,
once, and from then on takes the feed's batches, skipping ids it already sent: no event is lost or sent twice. A
subscriber that falls too far behind (a slow client) drops its pending batches and reads the store again from its
last id.

The hub also counts open streams: at most ``max_per_user`` per user and ``max_total`` in all; over a limit,
``StreamHub.open`` raises a 429 problem with a ``Retry-After`` header.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import anyio
from sse_starlette import ServerSentEvent

from api.convert import event_out, search_out
from api.problems import ProblemError
from nas.client.models import FINAL_STATUSES, EventOut, SearchOut
from service.store import repo
from service.store.db import Database

log = logging.getLogger(__name__)

POLL_S = 0.3  # how often a feed reads the store when nothing new came
BATCH = 500  # events per read
MAX_PENDING = 64  # batches a subscriber may have waiting before it reads the store itself instead
RETRY_AFTER_S = 5  # the Retry-After of a refused stream


def poll(db: Database, search_id: str, after: int) -> tuple[list[EventOut], SearchOut | None]:
    """New events after ``after``, and the search when it has ended and these are its last events."""
    with db.session() as s:
        row = repo.get_search(s, search_id)
        final = row.status in FINAL_STATUSES  # read before the events: every event of a finished search is seen
        events = [event_out(e) for e in repo.list_events(s, search_id, after_id=after, limit=BATCH)]
        done = search_out(row) if final and len(events) < BATCH else None
    return events, done


@dataclass(eq=False)
class _Subscriber:
    cursor: int
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    pending: list[list[EventOut]] = field(default_factory=list)
    lagged: bool = False
    end: SearchOut | None = None
    gone: bool = False  # the feed stopped without an end (search deleted, store error, shutdown)
    feed: _Feed | None = None

    def deliver(self, events: list[EventOut], end: SearchOut | None) -> None:
        if events:
            if len(self.pending) >= MAX_PENDING:
                self.pending.clear()
                self.lagged = True
            elif not self.lagged:
                self.pending.append(events)
        if end is not None:
            self.end = end
        self.wake.set()

    def stop(self) -> None:
        self.gone = True
        self.wake.set()


@dataclass(eq=False)
class _Feed:
    search_id: str
    cursor: int
    subscribers: set[_Subscriber] = field(default_factory=set)
    task: asyncio.Task[None] | None = None


class StreamHub:
    """The app's live event feeds (one poll loop per followed search) and its counts of open streams."""

    def __init__(self, db: Database, *, max_per_user: int, max_total: int, poll_s: float = POLL_S) -> None:
        self.db = db
        self.max_per_user = max_per_user
        self.max_total = max_total
        self.poll_s = poll_s
        self._feeds: dict[str, _Feed] = {}
        self._open: Counter[str] = Counter()  # open streams by user name
        self.loops_started = 0  # poll loops ever started (one per search and period of being followed)
        self.polls = 0  # reads of the store made by poll loops

    # ------------------------------------------------------------ counts

    @property
    def open_streams(self) -> int:
        return sum(self._open.values())

    def open_streams_of(self, user: str) -> int:
        return self._open[user]

    @property
    def active_loops(self) -> int:
        return sum(1 for feed in self._feeds.values() if feed.task is not None and not feed.task.done())

    def open(self, user: str, search_id: str, after: int) -> Stream:
        """Take a stream slot of ``user`` (a 429 ProblemError when none is free) for a stream of ``search_id``."""
        headers = {"Retry-After": str(RETRY_AFTER_S)}
        if self._open[user] >= self.max_per_user:
            raise ProblemError(
                429,
                f"you have {self._open[user]} open event streams, the most allowed per user "
                f"(NAS_MAX_STREAMS_PER_USER={self.max_per_user}); close one or retry later",
                headers=headers,
            )
        if self.open_streams >= self.max_total:
            raise ProblemError(
                429,
                f"the service has {self.open_streams} open event streams, the most it allows "
                f"(NAS_MAX_STREAMS={self.max_total}); retry later",
                headers=headers,
            )
        self._open[user] += 1
        return Stream(self, user, search_id, after)

    def _release(self, user: str) -> None:
        self._open[user] -= 1
        if self._open[user] <= 0:
            del self._open[user]

    # ------------------------------------------------------------ feeds

    def _join(self, search_id: str, sub: _Subscriber) -> None:
        feed = self._feeds.get(search_id)
        if feed is None or feed.task is None or feed.task.done():  # none, or one whose loop was torn down
            feed = self._feeds[search_id] = _Feed(search_id, sub.cursor)
            feed.task = asyncio.get_running_loop().create_task(self._run(feed), name=f"event-feed-{search_id}")
            self.loops_started += 1
        feed.subscribers.add(sub)
        sub.feed = feed

    def _leave(self, sub: _Subscriber) -> None:
        feed, sub.feed = sub.feed, None
        if feed is None:
            return
        feed.subscribers.discard(sub)
        if not feed.subscribers:
            self._drop(feed)

    def _drop(self, feed: _Feed) -> None:
        if self._feeds.get(feed.search_id) is feed:
            del self._feeds[feed.search_id]
        if feed.task is not None and feed.task is not asyncio.current_task():
            feed.task.cancel()
        for sub in list(feed.subscribers):
            if sub.end is None:
                sub.stop()

    async def _run(self, feed: _Feed) -> None:
        try:
            while feed.subscribers:
                self.polls += 1
                try:
                    events, done = await anyio.to_thread.run_sync(poll, self.db, feed.search_id, feed.cursor)
                except repo.NotFound:  # deleted while followed
                    break
                if events:
                    feed.cursor = events[-1].id
                for sub in list(feed.subscribers):
                    sub.deliver(events, done)
                if done is not None:
                    break
                if not events:
                    await asyncio.sleep(self.poll_s)
        except Exception:  # cancelled (by _drop) is not caught: the one who cancelled has dropped the feed
            log.exception("the event feed of search %s failed; its streams are closed", feed.search_id)
        self._drop(feed)

    async def close(self) -> None:
        """Stop every feed (the app shuts down): their streams end without an ``end`` event."""
        feeds = list(self._feeds.values())
        for feed in feeds:
            self._drop(feed)
        loop = asyncio.get_running_loop()
        tasks = [feed.task for feed in feeds if feed.task is not None and feed.task.get_loop() is loop]
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


class Stream:
    """One open stream: its slot in the hub's counts, and its events (``events()``); ``close()`` frees the slot."""

    def __init__(self, hub: StreamHub, user: str, search_id: str, after: int) -> None:
        self.hub = hub
        self.user = user
        self.search_id = search_id
        self.after = after
        self.closed = False
        self._sub: _Subscriber | None = None

    def close(self) -> None:
        """Leave the feed and free the slot; idempotent."""
        if self.closed:
            return
        self.closed = True
        if self._sub is not None:
            self.hub._leave(self._sub)
        self.hub._release(self.user)

    async def _read(self, sub: _Subscriber) -> AsyncIterator[ServerSentEvent]:
        """What the store has after the subscriber's cursor, up to the end of the search if it has ended."""
        while True:
            try:
                events, done = await anyio.to_thread.run_sync(poll, self.hub.db, self.search_id, sub.cursor)
            except repo.NotFound:
                sub.gone = True
                return
            for event in events:
                sub.cursor = event.id
                yield _sse(event)
            if done is not None:
                sub.end = done
                return
            if len(events) < BATCH:
                return

    async def events(self) -> AsyncIterator[ServerSentEvent]:
        """The events after ``after``, live, then ``end`` once the search has ended."""
        if self.closed:
            return
        sub = self._sub = _Subscriber(cursor=self.after)
        try:
            self.hub._join(self.search_id, sub)  # first join, then read: what the feed reads meanwhile is queued
            async for item in self._read(sub):
                yield item
            while True:
                if sub.lagged:
                    sub.pending.clear()
                    sub.lagged = False
                    async for item in self._read(sub):
                        yield item
                batches, sub.pending = sub.pending, []
                for batch in batches:
                    for event in batch:
                        if event.id > sub.cursor:
                            sub.cursor = event.id
                            yield _sse(event)
                if sub.end is not None or sub.gone:
                    break
                await sub.wake.wait()
                sub.wake.clear()
            if sub.end is not None:
                yield ServerSentEvent(data=sub.end.model_dump_json(), event="end")
        finally:
            self.close()


def _sse(event: EventOut) -> ServerSentEvent:
    return ServerSentEvent(data=event.model_dump_json(), event=event.type, id=str(event.id))
