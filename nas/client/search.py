"""The handle on one search of the service: its state, events, results and artifacts, and waiting for its end."""

from __future__ import annotations

import hashlib
import logging
import os
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote

import httpx

from nas.client.errors import (
    ConnectionFailed,
    DownloadError,
    NotFound,
    ResultUnavailable,
    SearchFailed,
    ServerError,
    UnexpectedResponse,
    WaitTimeout,
)
from nas.client.models import ArtifactOut, CandidateOut, CandidateSort, EventOut, FinalOut, Order, SearchOut
from nas.client.transport import END_EVENT, PAGE_SIZE, validate

if TYPE_CHECKING:
    from nas.client.client import Client
    from nas.client.progress import NullView

log = logging.getLogger(__name__)


def segment(value: str) -> str:
    """One URL path segment (a search id, a space name), percent-encoded; ids that would change the path are refused."""
    if not value or value in (".", ".."):
        raise ValueError(f"id: {value!r} is not a valid identifier")
    return quote(value, safe="")


class Search:
    """A handle on one search of the service. ``info`` is the last state fetched; :meth:`refresh` fetches it again."""

    def __init__(self, client: Client, info: SearchOut) -> None:
        self._client = client
        self._transport = client.transport
        self._info = info
        self.id = info.id

    def __repr__(self) -> str:
        return f"Search(id={self.id!r}, name={self._info.name!r}, status={self._info.status!r})"

    @property
    def info(self) -> SearchOut:
        return self._info

    @property
    def status(self) -> str:
        """The status at the last fetch (call :meth:`refresh` for the current one)."""
        return self._info.status

    @property
    def name(self) -> str:
        return self._info.name

    def _path(self, rest: str = "") -> str:
        return f"/searches/{segment(self.id)}{rest}"

    def refresh(self) -> SearchOut:
        self._info = self._transport.get(self._path(), SearchOut)
        return self._info

    def cancel(self) -> SearchOut:
        """Cancel: a queued search at once; a running one stops within seconds (Conflict if it already ended)."""
        self._info = self._transport.parse(self._transport.request("POST", self._path("/cancel")), SearchOut)
        return self._info

    def retry(self) -> SearchOut:
        """Queue a failed or cancelled search again; it resumes from its last checkpoint."""
        self._info = self._transport.parse(self._transport.request("POST", self._path("/retry")), SearchOut)
        return self._info

    # ------------------------------------------------------------ results

    def candidates(
        self,
        sort: CandidateSort = "accuracy",
        order: Order = "desc",
        pareto: bool = False,
        limit: int | None = None,
        *,
        min_accuracy: float | None = None,
        max_params: float | None = None,
        max_macs: float | None = None,
        max_latency_ms: float | None = None,
        feasible: bool | None = None,
        phase: str | None = None,
    ) -> list[CandidateOut]:
        """Evaluated candidates, best first by default; ``limit=None`` returns all of them. The filters are applied
        by the service (bounds inclusive; a bound on a metric leaves out candidates without it)."""
        params: dict[str, Any] = {
            "sort": sort,
            "order": order,
            "pareto": "true" if pareto else None,
            "min_accuracy": min_accuracy,
            "max_params": max_params,
            "max_macs": max_macs,
            "max_latency_ms": max_latency_ms,
            "feasible": None if feasible is None else str(feasible).lower(),
            "phase": phase,
        }
        return self._transport.get_pages(self._path("/candidates"), params, CandidateOut, limit)

    def candidate(self, arch_hash: str) -> CandidateOut:
        """One candidate by its architecture hash (or a unique prefix of it, 6+ characters)."""
        return self._transport.get(self._path(f"/candidates/{segment(arch_hash)}"), CandidateOut)

    def architecture_svg(self, arch_hash: str, path: str | os.PathLike[str] | None = None) -> str:
        """The SVG diagram of a candidate's architecture (by hash or unique prefix), drawn by the service; written to
        ``path`` too when given."""
        response = self._transport.request("GET", self._path(f"/candidates/{segment(arch_hash)}/architecture.svg"))
        return svg_text(response, path)

    def pareto(self) -> list[CandidateOut]:
        """The Pareto front of the search's objectives."""
        return self._transport.get(self._path("/pareto"), list[CandidateOut])

    def best(self) -> FinalOut:
        """The retrained winner of a succeeded search (SearchFailed or ResultUnavailable otherwise)."""
        info = self._info if self._info.done else self.refresh()
        return _finals(info)[0]

    def artifacts(self) -> list[ArtifactOut]:
        return self._transport.get(self._path("/artifacts"), list[ArtifactOut])

    def download(self, dir: str | os.PathLike[str], *, what: Literal["final", "all"] = "final") -> Path:
        """Download the exported models (``final/``; ``what="all"``: every artifact) into ``dir``.

        Each file streams to a temporary file that is renamed into place once its size and sha256 match; files already
        there intact are skipped. Returns the folder of the first retrained model (``nas.load(folder)`` loads it), or
        ``dir`` itself for ``what="all"`` on a search without one.
        """
        if what not in ("final", "all"):
            raise ValueError(f"what: {what!r} is not allowed; allowed: 'final', 'all'")
        info = self.refresh()
        if what == "final":
            folder: str | None = _finals(info)[0].path
        else:
            folder = info.result.final[0].path if info.result and info.result.final else None
        chosen = [a for a in self.artifacts() if what == "all" or a.name.startswith("final/")]
        if what == "final" and not chosen:
            raise ResultUnavailable(f"search {self.id} succeeded but the service lists no artifacts under final/")
        if folder and not any(a.name.startswith(folder.rstrip("/") + "/") for a in chosen):
            raise ResultUnavailable(f"search {self.id}: its model folder {folder} has no artifacts on the service")
        root = Path(dir)
        targets = [(a, _target(root, a.name)) for a in chosen]  # check every name before writing anything
        for artifact, target in targets:
            self._download_one(artifact, target)
        return root / PurePosixPath(folder) if folder else root

    def _download_one(self, artifact: ArtifactOut, target: Path) -> None:
        if target.is_file() and target.stat().st_size == artifact.size and _sha256(target) == artifact.sha256:
            log.debug("%s is already intact; skipped", target)
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.part")
        try:
            size, sha = self._transport.download(self._path(f"/artifacts/{artifact.id}"), tmp)
            if size != artifact.size or sha != artifact.sha256:
                raise DownloadError(
                    f"artifact {artifact.name}: received {size} bytes with sha256 {sha}, expected "
                    f"{artifact.size} bytes with sha256 {artifact.sha256}; nothing was kept, try again"
                )
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)

    # ------------------------------------------------------------ events and waiting

    def events(
        self,
        follow: bool = True,
        after: int = 0,
        *,
        types: Sequence[str] | None = None,
        phases: Sequence[str] | None = None,
    ) -> Iterator[EventOut]:
        """Progress events with an id above ``after``; ``types``/``phases`` keep only events of those types (epoch,
        candidate, ...) and phases (supernet, search, final-1, ...).

        ``follow=True`` streams them live (server-sent events) until the search ends, reconnecting with
        ``Last-Event-ID`` after a dropped connection; ``follow=False`` returns the stored ones and stops (filtered
        by the service).
        """
        if follow:
            keep_types, keep_phases = set(types or ()), set(phases or ())
            return (
                e
                for e in self._stream(after, None, None)
                if (not keep_types or e.type in keep_types) and (not keep_phases or e.phase in keep_phases)
            )
        return self._stored_events(after, list(types or ()), list(phases or ()))

    def _stored_events(
        self, after: int, types: list[str] | None = None, phases: list[str] | None = None
    ) -> Iterator[EventOut]:
        while True:
            params = {"after": after, "limit": PAGE_SIZE, "type": types or None, "phase": phases or None}
            batch: list[EventOut] = self._transport.get(self._path("/events"), list[EventOut], params)
            batch = [e for e in batch if e.id > after]
            if not batch:
                return
            yield from batch
            after = batch[-1].id

    def _stream(self, after: int, deadline: float | None, timeout: float | None) -> Iterator[EventOut]:
        """Follow the SSE stream until its ``end`` event (which refreshes ``info``)."""
        path = self._path("/events/stream")
        what = self._transport.url_for(path)
        last_id = after
        for sse in self._transport.follow_events(
            path, after=after, deadline=deadline, expired=lambda: self._wait_timeout(timeout)
        ):
            if sse.event == END_EVENT:
                self._info = validate(SearchOut, sse.data, f"the end event of {what}")
                return
            event: EventOut = validate(EventOut, sse.data, f"an event of {what}")
            if event.id <= last_id:
                continue  # an event without an SSE id, replayed
            last_id = event.id
            yield event

    def wait(
        self,
        progress: bool = False,
        timeout: float | None = None,
        poll: float = 1.0,
        *,
        raise_on_failure: bool = True,
    ) -> SearchOut:
        """Block until the search ends and return its final state.

        Follows the live event stream (falling back to polling every ``poll`` seconds where streaming does not work).
        ``progress=True`` draws a progress bar (phase, step/total, key metrics) on stderr. Raises SearchFailed if the
        search ends failed or cancelled (unless ``raise_on_failure=False``) and WaitTimeout after ``timeout`` seconds.
        """
        if timeout is not None and timeout < 0:
            raise ValueError(f"timeout: must be >= 0 seconds or None, got {timeout}")
        if poll <= 0:
            raise ValueError(f"poll: must be > 0 seconds, got {poll}")
        deadline = None if timeout is None else time.monotonic() + timeout
        view = _view(self, progress)
        with view:
            info = self.refresh()
            view.status(info)
            if not info.done:
                try:
                    for event in self._stream(0, deadline, timeout):
                        view.emit(event)
                    info = self._info
                except (UnexpectedResponse, ConnectionFailed, NotFound, ServerError) as exc:
                    log.warning("following search %s: %s; polling every %g s instead", self.id, exc, poll)
                    info = self._poll(view, deadline, timeout, poll)
            view.status(info)
        if raise_on_failure and info.status != "succeeded":
            raise SearchFailed(info)
        return info

    def _poll(self, view: NullView, deadline: float | None, timeout: float | None, poll: float) -> SearchOut:
        while True:
            info = self.refresh()
            if view.enabled:
                for event in self._stored_events(view.last_id):
                    view.emit(event)
            view.status(info)
            if info.done:
                return info
            pause = poll
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise self._wait_timeout(timeout)
                pause = min(poll, remaining)
            time.sleep(pause)

    def _wait_timeout(self, timeout: float | None) -> WaitTimeout:
        return WaitTimeout(
            f"search {self.id} is still {self._info.status} after {timeout:g} s; it keeps going on the service: "
            "wait() again, or cancel() it"
        )


def _view(search: Search, progress: bool) -> NullView:
    if progress:
        from nas.client.progress import ProgressView  # rich, imported only when asked for

        return ProgressView(search)
    from nas.client.progress import NullView

    return NullView()


def _finals(info: SearchOut) -> list[FinalOut]:
    if info.status in ("failed", "cancelled"):
        raise SearchFailed(info)
    if info.status != "succeeded":
        raise ResultUnavailable(f"search {info.id} is {info.status}; wait for it to finish first (search.wait())")
    if info.result is None or not info.result.final:
        raise ResultUnavailable(
            f"search {info.id} succeeded without a retrained model (final.enabled is off in its spec); "
            "use candidates() or pareto() for its architectures"
        )
    return info.result.final


def svg_text(response: httpx.Response, path: str | os.PathLike[str] | None) -> str:
    """The SVG document of a diagram response (UnexpectedResponse if it is not one); also written to ``path``."""
    kind = response.headers.get("content-type", "").split(";")[0].strip()
    if kind != "image/svg+xml":
        raise UnexpectedResponse(f"the answer to {response.request.url} is {kind or 'untyped'}, not an SVG document")
    text = response.text
    if path is not None:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
    return text


def _target(root: Path, name: str) -> Path:
    """Where artifact ``name`` goes below ``root``; names that would escape it are refused."""
    path = PurePosixPath(name)
    if not name or path.is_absolute() or "\\" in name or any(part in ("..", "") for part in path.parts):
        raise UnexpectedResponse(f"artifact name {name!r} is not a relative path inside the search; refusing it")
    return root.joinpath(*path.parts)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
