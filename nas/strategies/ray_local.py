"""Ray for the strategies that fan out (parallel trials, data-parallel supernet training).

Ray is imported lazily (``nas`` never imports it at import time). A strategy that needs it opens a :class:`LocalRay`:
inside the service (a runner actor, a ``nas worker``) Ray is already initialised and is used as it is; from
``nas search --local`` a private instance is started, bound to 127.0.0.1, without the dashboard, in a short temporary
folder, and shut down when the strategy closes it.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import os
import shutil
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any

log = logging.getLogger(__name__)


def ray_available() -> bool:
    """Whether Ray is installed (without importing it)."""
    return importlib.util.find_spec("ray") is not None


def import_ray() -> Any:
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # a local Ray binds to 127.0.0.1 only
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    return ray


def init_local(temp_dir: str, *, num_cpus: int | None, num_gpus: int | None, namespace: str | None = None) -> None:
    """Start Ray in this process: bound to 127.0.0.1, no dashboard, its session folder in ``temp_dir`` (keep the
    path short: Ray puts unix sockets below it)."""
    import_ray().init(
        num_cpus=num_cpus,
        num_gpus=num_gpus,
        namespace=namespace,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
        _temp_dir=temp_dir,
        _node_ip_address="127.0.0.1",
    )


class LocalRay:
    """A connection to Ray for one strategy run.

    Uses the running Ray when this process is connected already; otherwise starts a local instance with at least
    ``min_cpus`` logical CPUs (at least the machine's core count) and ``gpus`` GPUs. :meth:`close` shuts down only an
    instance this object started.
    """

    def __init__(self, *, min_cpus: float = 1.0, gpus: int = 0) -> None:
        self.ray = import_ray()
        self.started = False
        self._temp: str | None = None
        if not self.ray.is_initialized():
            self._start(max(os.cpu_count() or 1, math.ceil(min_cpus)), gpus)

    def _start(self, cpus: int, gpus: int) -> None:
        # Ray's socket paths must stay short: a fresh folder directly under /tmp
        self._temp = tempfile.mkdtemp(prefix="ray-nas-", dir="/tmp" if Path("/tmp").is_dir() else None)
        log.info("starting a local Ray instance (%d CPUs, %d GPUs) in %s", cpus, gpus, self._temp)
        init_local(self._temp, num_cpus=cpus, num_gpus=gpus)
        self.started = True

    def close(self) -> None:
        if self.started:
            self.ray.shutdown()
            self.started = False
        if self._temp is not None:
            shutil.rmtree(self._temp, ignore_errors=True)
            self._temp = None

    def __enter__(self) -> LocalRay:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
