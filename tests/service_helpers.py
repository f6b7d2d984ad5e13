"""Shared by the service tests that start a real `nas up` (local Ray, SQLite) in a child process."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from service.settings import Settings
from service.store import Database, repo

FAST_ENV = {
    "NAS_HEARTBEAT_S": "1",
    "NAS_SCHEDULER_INTERVAL_S": "0.3",
    "NAS_RETRY_BACKOFF_S": "0.5",
    "NAS_LEASE_S": "20",
    "NAS_LOCAL_CPUS": "2",
    "NAS_MAX_RUNNING_PER_USER": "2",
}

# A real search on a real space, small enough for a few seconds on one CPU core.
TINY_SPEC: dict[str, Any] = {
    "name": "tiny",
    "seed": 1,
    "device": "cpu",
    "space": {
        "name": "nasnet",
        "options": {"ops": ["sep_conv_3x3", "max_pool_3x3", "skip_connect"]},
        "macro": {"cells_per_stack": 1, "filters": 8, "stem_multiplier": 1},
    },
    "dataset": {"name": "digits", "image_size": 8, "limit": 200},
    "strategy": {
        "name": "spos",
        "options": {"epochs": 6, "train": {"batch_size": 32}, "evolution": {"population": 4, "generations": 1}},
    },
    "final": {"top_k": 1, "train": {"epochs": 2, "batch_size": 32}, "export": ["json", "safetensors"]},
}


def spec(**changes: Any) -> dict[str, Any]:
    out = copy.deepcopy(TINY_SPEC)
    out.update(changes)
    return out


def store(data_dir: Path) -> Database:
    """The service's own database, opened from the test (to read what the API does not show, e.g. runner pids)."""
    return Database(Settings(data_dir=data_dir).db_url)


def wait_for(condition: Callable[[], Any], timeout: float, what: str, poll: float = 0.3) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def checkpointed_runner_pid(db: Database, search_id: str, phase: str = "supernet") -> int | None:
    """The pid of the search's runner once it has written at least one checkpoint of ``phase``."""
    with db.session() as s:
        row = repo.get_search(s, search_id)
        if row.status != "running" or not row.runner or "pid" not in row.runner:
            return None
        events = repo.list_events(s, search_id, limit=100_000)
    if any(e.type == "checkpoint" and e.phase == phase and e.attempt == row.attempts for e in events):
        return int(row.runner["pid"])
    return None
