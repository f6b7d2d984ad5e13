"""The body of a search runner: runs one claimed search with the engine and writes everything to the store.

It runs inside a Ray actor (workers.ray_executor) but is plain Python, so it can also be tested in-process.
A heartbeat thread extends the lease, publishes progress and picks up cancel requests; losing the lease (the search
was re-queued elsewhere) stops the run without writing a final status.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import socket
import threading
import time
from pathlib import Path
from typing import Any

from nas.errors import InvalidInput, SearchCancelled
from nas.events import Event, EventType, MultiReporter, Reporter
from nas.spec import RunResult, SearchSpec
from service.settings import Settings
from service.store import Database, repo
from service.store.repo import Claim, LeaseLost

log = logging.getLogger(__name__)

URGENT = {
    EventType.PHASE_STARTED,
    EventType.PHASE_FINISHED,
    EventType.EPOCH,
    EventType.CANDIDATE,
    EventType.CHECKPOINT,
    EventType.FINISHED,
    EventType.FAILED,
    EventType.CANCELLED,
}


class DbReporter(Reporter):
    """Writes events to the store in small batches; candidates also go to the candidates table.

    Per-batch progress events are kept at most once per ``progress_every`` seconds per phase (the latest one is
    always available to the heartbeat as ``latest_progress``).
    """

    def __init__(self, db: Database, search_id: str, attempt: int, *, flush_every: float = 0.5,
                 progress_every: float = 1.0) -> None:  # fmt: skip
        self.db = db
        self.search_id = search_id
        self.attempt = attempt
        self.flush_every = flush_every
        self.progress_every = progress_every
        self.latest_progress: tuple[str | None, int | None, int | None] | None = None
        self.stopped = False
        self.ended = False  # a finished, failed or cancelled event was emitted
        self._buffer: list[Event] = []
        self._candidates: list[dict[str, Any]] = []
        self._last_flush = time.monotonic()
        self._last_progress: dict[str | None, float] = {}
        self._lock = threading.Lock()

    def emit(self, event: Event) -> None:
        if self.stopped:
            return
        if event.type in (EventType.FINISHED, EventType.FAILED, EventType.CANCELLED):
            self.ended = True
        if event.type in (EventType.PROGRESS, EventType.EPOCH, EventType.PHASE_STARTED):
            self.latest_progress = (event.phase, event.step, event.total)
        if event.type == EventType.PROGRESS:
            now = time.monotonic()
            if now - self._last_progress.get(event.phase, 0.0) < self.progress_every and event.step != event.total:
                return
            self._last_progress[event.phase] = now
        with self._lock:
            self._buffer.append(event)
            if event.type == EventType.CANDIDATE and "arch" in event.data:
                self._candidates.append(
                    {"arch": event.data["arch"], "metrics": finite(event.metrics), "phase": event.phase}
                )
        if event.type in URGENT or time.monotonic() - self._last_flush >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        with self._lock:
            events, self._buffer = self._buffer, []
            candidates, self._candidates = self._candidates, []
            self._last_flush = time.monotonic()
        if not events and not candidates:
            return
        with self.db.session() as s:
            repo.add_events(s, self.search_id, self.attempt, [_storable(e) for e in events])
            repo.upsert_candidates(s, self.search_id, _latest_per_arch(candidates))


# Test hook: NAS_TEST_HOLD_AFTER_CHECKPOINT="NAME:N" makes the first attempt of every search named NAME stop right
# after its N-th checkpoint event is stored, and wait there (the heartbeat keeps the lease) until it is killed. Tests
# that kill a runner or the controller mid-search (tests/test_service_e2e.py, tests/test_service_faults.py) set it
# so the kill lands at a defined point instead of racing the end of a small search. Unset, nothing changes.
HOLD_ENV = "NAS_TEST_HOLD_AFTER_CHECKPOINT"
HOLD_MESSAGE = "test hook: holding after checkpoint"


class _HoldAfterCheckpoint(Reporter):
    def __init__(self, db_reporter: DbReporter, checkpoints: int) -> None:
        self.db_reporter = db_reporter
        self.checkpoints = checkpoints
        self.seen = 0
        self.released = threading.Event()  # never set in a run; a test of the hook sets it

    def emit(self, event: Event) -> None:
        if event.type != EventType.CHECKPOINT:
            return
        self.seen += 1
        if self.seen == self.checkpoints:
            self.db_reporter.log(f"{HOLD_MESSAGE} {self.seen} ({HOLD_ENV})")
            self.db_reporter.flush()
            self.released.wait()  # until the process is killed


def _with_test_hold(reporter: DbReporter, spec: SearchSpec, attempt: int) -> Reporter:
    name, _, count = os.environ.get(HOLD_ENV, "").rpartition(":")
    if not name or name != spec.name or attempt != 1:
        return reporter
    return MultiReporter(reporter, _HoldAfterCheckpoint(reporter, int(count)))


def finite(metrics: dict[str, Any]) -> dict[str, float]:
    """Metrics the store can hold: JSON has no NaN or infinity (PostgreSQL refuses them), so those are left out."""
    return {k: float(v) for k, v in metrics.items() if isinstance(v, int | float) and math.isfinite(v)}


def _latest_per_arch(candidates: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by_hash: dict[str, dict[str, Any]] = {}
    for c in candidates:
        by_hash[repo.candidate_hash(c)] = c
    return list(by_hash.values())


def _storable(event: Event) -> Event:
    if all(math.isfinite(v) for v in event.metrics.values()):
        return event
    return event.model_copy(update={"metrics": finite(event.metrics)})


class Heartbeat(threading.Thread):
    """Extends the lease every ``interval`` seconds; sets ``cancel`` on a cancel request or a lost lease."""

    def __init__(self, db: Database, claim: Claim, settings: Settings, reporter: DbReporter,
                 cancel: threading.Event, runner: dict[str, Any]) -> None:  # fmt: skip
        super().__init__(name=f"heartbeat-{claim.search_id[:8]}", daemon=True)
        self.db, self.claim, self.settings, self.reporter = db, claim, settings, reporter
        self.cancel = cancel
        self.runner = runner
        self.lost = False
        self.cancel_requested = False
        self._stop_event = threading.Event()

    def beat(self) -> None:
        try:
            wants_cancel = repo.heartbeat(
                self.db, self.claim.search_id, self.claim.lease_token, self.settings.lease_s,
                progress=self.reporter.latest_progress,
            )  # fmt: skip
        except LeaseLost:
            log.warning("search %s: lease lost; stopping this runner", self.claim.search_id)
            self.lost = True
            self.reporter.stopped = True
            self.cancel.set()
            return
        except Exception:
            log.exception("search %s: heartbeat failed", self.claim.search_id)
            return
        if wants_cancel and not self.cancel_requested:
            self.cancel_requested = True
            self.cancel.set()

    def run(self) -> None:
        while not self._stop_event.wait(self.settings.heartbeat_s):
            self.beat()

    def stop(self) -> None:
        self._stop_event.set()


def run_claim(settings: Settings, claim: Claim, *, db: Database | None = None) -> str:
    """Run the claimed search to its end and record the outcome. Returns the final status (or 'lost'/'retry')."""
    from nas.runner import run_search

    own_db = db is None
    db = db or Database(settings.db_url)
    out = (settings.searches_dir / claim.search_id).resolve()
    runner = {"host": socket.gethostname(), "pid": os.getpid(), "attempt": claim.attempt}
    try:
        try:
            repo.mark_started(db, claim.search_id, claim.lease_token, str(out), runner)
        except LeaseLost:
            return "lost"
        spec = SearchSpec.model_validate(claim.spec)
        resume = (out / "spec.json").is_file()
        if out.exists() and not resume:
            shutil.rmtree(out)  # an attempt that died before writing anything worth keeping
        reporter = DbReporter(db, claim.search_id, claim.attempt)
        cancel = threading.Event()
        beat = Heartbeat(db, claim, settings, reporter, cancel, runner)
        started = f"attempt {claim.attempt}: runner started"  # host and pid: in searches.runner (admins), not events
        reporter.log(started + ("; resuming from the last checkpoint" if resume else ""))
        reporter.flush()
        beat.start()
        try:
            result = run_search(
                spec,
                out,
                reporter=_with_test_hold(reporter, spec, claim.attempt),
                cancel=cancel,
                resume=resume,
                dataset_roots=settings.dataset_roots,
            )
        except (SearchCancelled, KeyboardInterrupt) as exc:
            return _end(db, claim, reporter, beat, "cancelled", error=str(exc))
        except InvalidInput as exc:
            return _end(db, claim, reporter, beat, "failed", error=str(exc))
        except Exception as exc:
            log.exception("search %s: attempt %d failed", claim.search_id, claim.attempt)
            _stop(reporter, beat)
            if beat.lost:
                return "lost"
            error = f"{type(exc).__name__}: {exc}"
            if not reporter.ended:  # raised before the engine could say so (e.g. while reading the data)
                reporter.emit(Event(type=EventType.FAILED, message=error))
            status = repo.release_attempt(
                db, claim.search_id, claim.lease_token, error, backoff_s=settings.retry_backoff_s
            )
            return status or "lost"
        _stop(reporter, beat)
        if beat.lost:
            return "lost"
        _record_result(db, claim.search_id, out, result)
        ok = repo.finish(db, claim.search_id, claim.lease_token, "succeeded", result=summarize(result, out))
        return "succeeded" if ok else "lost"
    finally:
        if own_db:
            db.dispose()


def _stop(reporter: DbReporter, beat: Heartbeat) -> None:
    beat.stop()
    beat.join(timeout=30)
    if not beat.lost:
        reporter.flush()


def _end(db: Database, claim: Claim, reporter: DbReporter, beat: Heartbeat, status: Any, error: str) -> str:
    """End the attempt with a final ``status``. The search's event stream always ends with a ``failed`` or
    ``cancelled`` event carrying the error, also when the engine raised before it could emit one (bad input found at
    run time, e.g. a refused pickle in a dataset)."""
    _stop(reporter, beat)
    if beat.lost:
        return "lost"
    if status == "cancelled" and not beat.cancel_requested:
        status = "failed"  # interrupted without a request (e.g. the worker is shutting down)
    if not reporter.ended:
        kind = EventType.CANCELLED if status == "cancelled" else EventType.FAILED
        reporter.emit(Event(type=kind, message=error))  # urgent: written at once
    ok = repo.finish(db, claim.search_id, claim.lease_token, status, error=error)
    return status if ok else "lost"


def summarize(result: RunResult, out: Path) -> dict[str, Any]:
    """The ``result`` column: elapsed time, the winner, and each retrained model with its artifact folder."""
    best = result.search.best[0].arch.model_dump(mode="json") if result.search.best else None
    final = [
        {
            "arch": f.arch.model_dump(mode="json"),
            "metrics": finite(f.metrics),
            "path": Path(f.directory).resolve().relative_to(out).as_posix(),
        }
        for f in result.final
    ]
    return {"elapsed_s": result.elapsed_s, "best": best, "final": final}


def _record_result(db: Database, search_id: str, out: Path, result: RunResult) -> None:
    pareto = {c.arch.hash for c in result.search.pareto}
    candidates = [
        {
            "arch": c.arch.model_dump(mode="json"),
            "metrics": finite(c.metrics),
            "feasible": c.feasible,
            "pareto": c.pareto or c.arch.hash in pareto,
        }
        for c in result.search.candidates
    ]
    models = sorted(p for p in (out / "final").rglob("*") if p.is_file()) if (out / "final").is_dir() else []
    results = [p for p in (out / "result.json", out / "search_result.json") if p.is_file()]
    logs = [p for p in (out / "events.jsonl",) if p.is_file()]
    with db.session() as s:
        repo.upsert_candidates(s, search_id, candidates)
        repo.register_artifacts(s, search_id, out, models, "model")
        repo.register_artifacts(s, search_id, out, results, "result")
        repo.register_artifacts(s, search_id, out, logs, "log")
