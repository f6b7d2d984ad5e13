"""The controller process: API + scheduler + Ray connection, as started by ``nas up``."""

from __future__ import annotations

import errno
import logging
import os
import socket
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nas.errors import InvalidInput
from service.settings import Settings
from service.store import Database, upgrade
from service.store.repo import ensure_local_admin

if TYPE_CHECKING:
    import uvicorn
    from fastapi import FastAPI

log = logging.getLogger(__name__)

PRIVATE_UMASK = 0o077  # files of the controller (database, artifacts, Ray's session) readable by its user only
PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600


@dataclass
class Controller:
    settings: Settings
    db: Database
    token_file: str | None


def check_settings(settings: Settings) -> None:
    if not settings.auth and not settings.loopback:
        raise InvalidInput(
            "auth", f"cannot be switched off when the API listens on {settings.host!r} (not a loopback address)"
        )
    with socket.socket(socket.AF_INET6 if ":" in settings.host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((settings.host, settings.port))
        except OSError as exc:
            reason = "is already in use" if exc.errno == errno.EADDRINUSE else f"cannot be used: {exc.strerror}"
            raise InvalidInput("port", f"{settings.host}:{settings.port} {reason}; pick another with --port") from None


def prepare(settings: Settings) -> Controller:
    """Create the data directory, migrate the database and (on loopback) the local admin token."""
    check_settings(settings)
    secure_data_dir(settings)
    db = Database(settings.db_url)
    upgrade(db.engine)
    secure_database(settings)
    token_file = None
    if settings.loopback and settings.auth:
        ensure_local_admin(db, settings.token_file)
        token_file = str(settings.token_file)
    return Controller(settings, db, token_file)


def _private(path: Path, mode: int) -> None:
    """Make ``path`` readable by its owner only, warning when it was open to the group or others."""
    current = stat.S_IMODE(path.stat().st_mode)
    if current & 0o077:
        log.warning("%s was accessible to other users (mode %o); setting it to %o", path, current, mode)
        path.chmod(mode)


def secure_data_dir(settings: Settings) -> None:
    """Create the data directory and its searches/ folder as 0700; tighten an existing one that is 0755 or wider."""
    for folder in (settings.data_dir, settings.searches_dir):
        folder.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
        _private(folder, PRIVATE_DIR)


def secure_database(settings: Settings) -> None:
    """The embedded SQLite database (and its -wal/-shm files, which SQLite creates with its mode) as 0600."""
    if settings.database_url is not None:
        return
    db_file = settings.data_dir / "nas.db"
    for path in (db_file, db_file.with_name("nas.db-wal"), db_file.with_name("nas.db-shm")):
        if path.exists():
            _private(path, PRIVATE_FILE)


def uvicorn_config(app: FastAPI, settings: Settings, **kwargs: Any) -> uvicorn.Config:
    """uvicorn's configuration: no ``server`` banner, and requests it cannot parse answered with problem+json."""
    import uvicorn

    from api.http import ProblemH11Protocol

    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_level": "warning",
        "timeout_graceful_shutdown": 5,
        "server_header": False,
        "http": ProblemH11Protocol,
        **kwargs,
    }
    return uvicorn.Config(app, **options)


def serve(settings: Settings, *, on_ready: Callable[[Controller], None] | None = None) -> None:
    """Run the controller until interrupted."""
    import uvicorn

    from api.app import create_app
    from api.scheduler import Scheduler
    from workers.ray_executor import RayExecutor

    os.umask(PRIVATE_UMASK)  # everything the controller (and its in-process Ray) creates is private to its user
    controller = prepare(settings)
    executor = RayExecutor(settings)
    try:
        scheduler = Scheduler(settings, controller.db, executor) if settings.scheduler else None
        app = create_app(settings, db=controller.db, executor=executor, scheduler=scheduler)
        if on_ready is not None:
            on_ready(controller)
        uvicorn.Server(uvicorn_config(app, settings)).run()
    finally:
        executor.shutdown()
        controller.db.dispose()
