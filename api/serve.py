"""The controller process: API + scheduler + Ray connection, as started by ``nas up``."""

from __future__ import annotations

import errno
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass

from nas.errors import InvalidInput
from service.settings import Settings
from service.store import Database, upgrade
from service.store.repo import ensure_local_admin

log = logging.getLogger(__name__)


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
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(settings.db_url)
    upgrade(db.engine)
    token_file = None
    if settings.loopback and settings.auth:
        ensure_local_admin(db, settings.token_file)
        token_file = str(settings.token_file)
    return Controller(settings, db, token_file)


def serve(settings: Settings, *, on_ready: Callable[[Controller], None] | None = None) -> None:
    """Run the controller until interrupted."""
    import uvicorn

    from api.app import create_app
    from api.scheduler import Scheduler
    from workers.ray_executor import RayExecutor

    controller = prepare(settings)
    executor = RayExecutor(settings)
    try:
        scheduler = Scheduler(settings, controller.db, executor) if settings.scheduler else None
        app = create_app(settings, db=controller.db, executor=executor, scheduler=scheduler)
        if on_ready is not None:
            on_ready(controller)
        uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning", timeout_graceful_shutdown=5)
    finally:
        executor.shutdown()
        controller.db.dispose()
