"""Runs each claimed search in its own Ray actor, with the CPUs and GPUs its spec asks for."""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from nas.client.models import ClusterOut, NodeOut
from nas.strategies.ray_local import import_ray
from service.settings import Settings
from service.store.repo import Claim
from workers.cluster import NAMESPACE, connect, disconnect
from workers.executor import Ended

log = logging.getLogger(__name__)

RESERVE_GRACE_S = 10.0  # Ray's resource view lags a new actor's reservation by up to a few seconds


class SearchRunner:
    """The Ray actor: one per attempt of a search. Lives in its own worker process."""

    def run(self, settings: dict[str, Any], claim: dict[str, Any]) -> str:
        import logging as _logging

        import torch

        from workers.runner import run_claim

        _logging.basicConfig(level=_logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        c = Claim(**claim)
        torch.set_num_threads(max(1, int(runner_resources(c)[0])))
        return run_claim(Settings(**settings), c)

    def pid(self) -> int:
        import os

        return os.getpid()


def runner_resources(claim: Claim) -> tuple[float, float]:
    """What the runner actor itself reserves: the spec's resources. ``claim.cpus/gpus`` (what the scheduler admitted
    the search for) also count the strategy's own Ray workers, which reserve theirs when they start."""
    res = claim.spec.get("resources") or {}
    return float(res.get("cpus", claim.cpus)), float(res.get("gpus", claim.gpus))


def actor_name(search_id: str, attempt: int) -> str:
    return f"nas-search-{search_id}-{attempt}"


@dataclass
class _Running:
    claim: Claim
    actor: Any
    ref: Any
    started: float = field(default_factory=time.monotonic)


class RayExecutor:
    """The controller's handle on Ray: starts runner actors, notices their end, reports the cluster."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.ray = import_ray()
        self.mode = connect(settings)
        self._runners: dict[str, _Running] = {}
        self._actor_cls = self.ray.remote(SearchRunner)

    def start(self, claim: Claim) -> None:
        cpus, gpus = runner_resources(claim)
        options: dict[str, Any] = {
            "name": actor_name(claim.search_id, claim.attempt),
            "namespace": NAMESPACE,
            "num_cpus": cpus,
            "num_gpus": gpus,
            "max_restarts": 0,  # retries are the scheduler's, with back-off and an attempt limit
        }
        if self.mode == "cluster":
            options["lifetime"] = "detached"  # survives a controller restart; the next controller adopts it
        actor = self._actor_cls.options(**options).remote()
        settings = self.settings.model_dump(mode="json")
        ref = actor.run.remote(settings, claim.__dict__)
        self._runners[claim.search_id] = _Running(claim, actor, ref)
        log.info("search %s attempt %d: runner started", claim.search_id, claim.attempt)

    def poll(self) -> list[Ended]:
        if not self._runners:
            return []
        by_ref = {r.ref: sid for sid, r in self._runners.items()}
        ready, _ = self.ray.wait(list(by_ref), num_returns=len(by_ref), timeout=0)
        ended = []
        for ref in ready:
            sid = by_ref[ref]
            running = self._runners.pop(sid)
            error = None
            try:
                status = self.ray.get(ref)
                log.info("search %s attempt %d: runner ended (%s)", sid, running.claim.attempt, status)
            except Exception as exc:
                error = f"runner of attempt {running.claim.attempt} died: {type(exc).__name__}: {_first_line(exc)}"
                log.warning("search %s: %s", sid, error)
            self._kill(running.actor)
            ended.append(Ended(sid, running.claim.lease_token, error))
        return ended

    def tracked(self) -> dict[str, Claim]:
        return {sid: r.claim for sid, r in self._runners.items()}

    def alive(self, search_id: str, attempt: int) -> bool:
        if search_id in self._runners:
            return True
        try:
            self.ray.get_actor(actor_name(search_id, attempt), namespace=NAMESPACE)
        except ValueError:
            return False
        return True

    def stop(self, search_id: str, attempt: int | None = None) -> None:
        running = self._runners.pop(search_id, None)
        if running is not None:
            self._kill(running.actor)
            return
        if attempt is not None:
            with contextlib.suppress(ValueError):
                self._kill(self.ray.get_actor(actor_name(search_id, attempt), namespace=NAMESPACE))

    def _kill(self, actor: Any) -> None:
        with contextlib.suppress(Exception):
            self.ray.kill(actor, no_restart=True)

    def free(self) -> tuple[float, float]:
        available = self.ray.available_resources()
        cpus, gpus = float(available.get("CPU", 0.0)), float(available.get("GPU", 0.0))
        now = time.monotonic()
        for r in self._runners.values():
            if now - r.started < RESERVE_GRACE_S:
                cpus -= r.claim.cpus
                gpus -= r.claim.gpus
        return max(cpus, 0.0), max(gpus, 0.0)

    def totals(self) -> tuple[float, float]:
        total = self.ray.cluster_resources()
        return float(total.get("CPU", 0.0)), float(total.get("GPU", 0.0))

    def cluster(self) -> ClusterOut:
        nodes = [
            NodeOut(
                node_id=n.get("NodeID", ""),
                address=n.get("NodeManagerAddress", ""),
                alive=bool(n.get("Alive", False)),
                resources={k: float(v) for k, v in n.get("Resources", {}).items() if "_group_" not in k},
            )
            for n in self.ray.nodes()
        ]
        keep = ("CPU", "GPU", "memory")
        total = {k: float(v) for k, v in self.ray.cluster_resources().items() if k in keep}
        available = {k: float(v) for k, v in self.ray.available_resources().items() if k in keep}
        return ClusterOut(
            mode="cluster" if self.mode == "cluster" else "local",
            address=self.settings.ray_address,
            nodes=nodes,
            total=total,
            available=available,
        )

    def shutdown(self) -> None:
        for sid in list(self._runners):
            if self.mode == "local":
                self.stop(sid)
        self._runners.clear()
        if self.mode == "local":
            disconnect()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else ""
