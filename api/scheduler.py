"""The scheduler loop of a controller: claim queued searches, start their runners, watch them, retry or re-queue.

Everything it decides goes through atomic store operations, so several controllers may run it at once.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
import uuid

from service.settings import Settings
from service.store import Database, repo
from service.store.models import Search, utcnow
from service.store.repo import LeaseLost
from workers.executor import Executor

log = logging.getLogger(__name__)

CANCEL_GRACE_S = 30.0  # a runner asked to cancel that is still alive after this is killed


class Scheduler:
    def __init__(self, settings: Settings, db: Database, executor: Executor) -> None:
        self.settings = settings
        self.db = db
        self.executor = executor
        self.controller_id = uuid.uuid4().hex[:12]
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._cancel_seen: dict[str, float] = {}
        self._adopted: dict[str, repo.Claim] = {}

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> None:
        self.reconcile()
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="nas-scheduler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:
                log.exception("scheduler tick failed")
            self._stop.wait(self.settings.scheduler_interval_s)

    # ---------------------------------------------------------------- one round

    def tick(self) -> None:
        self.collect_ended()
        self.keep_alive()
        self.expire()
        self.launch()

    def reconcile(self) -> None:
        """On start: adopt running searches whose runner is alive; re-queue (to resume) those whose runner is gone.

        A search claimed moments ago by another controller may not have its runner yet: only searches without a
        heartbeat for a few intervals are touched; lease expiry catches the rest.
        """
        quiet = dt.timedelta(seconds=3 * self.settings.heartbeat_s)
        with self.db.session() as s:
            running = [(r.id, r.attempts, r.lease_token, r.updated_at) for r in repo.running_searches(s)]
        for sid, attempt, token, updated in running:
            if self.executor.alive(sid, attempt):
                log.info("search %s: runner of attempt %d is alive; adopting it", sid, attempt)
                self._adopt(sid)
            elif utcnow() - updated > quiet:
                status = repo.release_attempt(
                    self.db, sid, token, "the controller restarted and the runner was gone",
                    backoff_s=0.0,
                )  # fmt: skip
                log.info("search %s: runner gone after a controller restart -> %s", sid, status)

    def _adopt(self, search_id: str) -> None:
        with self.db.session() as s:
            row = s.get(Search, search_id)
            if row is None or row.status != "running" or row.lease_token is None:
                return
            self._adopted[search_id] = repo.Claim(row.id, row.attempts, row.lease_token, row.spec, row.cpus, row.gpus)

    def collect_ended(self) -> None:
        for ended in self.executor.poll():
            self._cancel_seen.pop(ended.search_id, None)
            error = ended.error or "the runner ended without recording a result"
            status = repo.release_attempt(
                self.db, ended.search_id, ended.lease_token, error, backoff_s=self.settings.retry_backoff_s
            )
            if status is not None:
                log.warning("search %s: %s -> %s", ended.search_id, error, status)

    def keep_alive(self) -> None:
        """Extend the leases of runners that are alive (also while Ray still waits for resources to start them)."""
        watched = {**self._adopted, **self.executor.tracked()}
        for sid, claim in watched.items():
            if sid in self._adopted and not self.executor.alive(sid, claim.attempt):
                del self._adopted[sid]
                repo.release_attempt(self.db, sid, claim.lease_token, "runner lost", backoff_s=0.0)
                continue
            try:
                cancel = repo.heartbeat(self.db, sid, claim.lease_token, self.settings.lease_s)
            except LeaseLost:
                log.info("search %s: no longer ours (finished, re-queued or cancelled); stopping its runner", sid)
                self._adopted.pop(sid, None)
                self.executor.stop(sid, claim.attempt)
                continue
            if cancel:
                first = self._cancel_seen.setdefault(sid, time.monotonic())
                if time.monotonic() - first > CANCEL_GRACE_S:
                    log.warning("search %s: runner ignored the cancel request; killing it", sid)
                    self.executor.stop(sid, claim.attempt)
                    self._adopted.pop(sid, None)
                    repo.release_attempt(self.db, sid, claim.lease_token, "cancelled (runner killed)", backoff_s=0.0)

    def expire(self) -> None:
        with self.db.session() as s:
            expired = repo.expired_leases(s)
        for sid, token in expired:
            status = repo.release_attempt(
                self.db, sid, token, "the runner stopped sending heartbeats", backoff_s=self.settings.retry_backoff_s
            )
            log.warning("search %s: lease expired -> %s", sid, status)

    def launch(self) -> None:
        free_cpus, free_gpus = self.executor.free()
        for _ in range(16):
            claim = repo.claim_next(
                self.db,
                free_cpus=free_cpus,
                free_gpus=free_gpus,
                per_user_limit=self.settings.max_running_per_user,
                lease_s=self.settings.lease_s,
                runner={"controller": self.controller_id},
            )
            if claim is None:
                return
            try:
                self.executor.start(claim)
            except Exception as exc:
                log.exception("search %s: could not start its runner", claim.search_id)
                repo.release_attempt(
                    self.db, claim.search_id, claim.lease_token, f"could not start the runner: {exc}",
                    backoff_s=self.settings.retry_backoff_s,
                )  # fmt: skip
                return
            free_cpus -= claim.cpus
            free_gpus -= claim.gpus
