"""Connecting to Ray: an in-process local instance bound to 127.0.0.1, or an existing cluster (NAS_RAY_ADDRESS)."""

from __future__ import annotations

import hashlib
import logging
import tempfile
from pathlib import Path

from nas.strategies.ray_local import import_ray, init_local
from service.settings import Settings

log = logging.getLogger(__name__)

NAMESPACE = "nas"
MAX_TEMP_LEN = 60  # Ray puts unix sockets below its temp dir; their paths must stay under ~107 bytes


def ray_temp_dir(settings: Settings) -> Path:
    """Ray's session folder: inside the data directory when that path is short enough, else a stable /tmp folder."""
    preferred = (settings.data_dir / "ray").resolve()
    if len(str(preferred)) <= MAX_TEMP_LEN:
        return preferred
    digest = hashlib.sha256(str(preferred).encode()).hexdigest()[:10]
    return Path(tempfile.gettempdir()) / f"nas-ray-{digest}"


def connect(settings: Settings) -> str:
    """Initialise Ray in this process; returns the mode, 'local' or 'cluster'."""
    ray = import_ray()
    if ray.is_initialized():
        return "cluster" if settings.ray_address else "local"
    if settings.ray_address:
        log.info("joining the Ray cluster at %s", settings.ray_address)
        ray.init(address=settings.ray_address, namespace=NAMESPACE, log_to_driver=False, configure_logging=False)
        return "cluster"
    temp = ray_temp_dir(settings)
    temp.mkdir(mode=0o700, parents=True, exist_ok=True)
    temp.chmod(0o700)  # Ray's sockets and logs: for this user only (the controller also runs with umask 077)
    log.info("starting a local Ray instance in %s", temp)
    init_local(str(temp), num_cpus=settings.local_cpus, num_gpus=settings.local_gpus, namespace=NAMESPACE)
    temp.chmod(0o700)  # Ray opens its temp dir to everyone (0777); what is inside stays reachable by this user
    return "local"


def disconnect() -> None:
    ray = import_ray()
    if ray.is_initialized():
        ray.shutdown()
