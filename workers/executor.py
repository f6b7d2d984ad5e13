"""What the controller needs from the execution side: start runners, notice their end, describe the cluster."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from nas.client.models import ClusterOut
from service.store.repo import Claim


@dataclass(frozen=True)
class Ended:
    """A runner that stopped. ``error`` is None when it finished normally (it then wrote its own final status)."""

    search_id: str
    lease_token: str
    error: str | None = None


class Executor(Protocol):
    mode: str

    def start(self, claim: Claim) -> None:
        """Launch the runner of a claimed search (non-blocking)."""

    def poll(self) -> list[Ended]:
        """Runners that stopped since the last call."""

    def tracked(self) -> dict[str, Claim]:
        """The runners this controller started and that have not ended yet."""

    def alive(self, search_id: str, attempt: int) -> bool:
        """Whether a runner of this search is alive anywhere in the cluster (also after a controller restart)."""

    def stop(self, search_id: str, attempt: int | None = None) -> None:
        """Kill the runner of this search, if any."""

    def free(self) -> tuple[float, float]:
        """Free (CPUs, GPUs) a new runner could use now."""

    def totals(self) -> tuple[float, float]:
        """All (CPUs, GPUs) of the cluster."""

    def cluster(self) -> ClusterOut:
        """Nodes and resources (queue counts are filled in by the caller)."""

    def shutdown(self) -> None:
        """Release the cluster connection (stops an in-process Ray)."""
