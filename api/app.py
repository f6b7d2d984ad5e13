"""The FastAPI application of the controller: REST API under /api/v1, health and metrics at the root."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from api.deps import API_PREFIX
from api.metrics import Metrics, MetricsMiddleware
from api.problems import BodyLimitMiddleware, install_handlers, problem_media_types
from api.ratelimit import RateLimiter
from api.routers import API_ROUTERS, health
from api.security import HostCheckMiddleware, SecurityHeadersMiddleware, install_docs
from api.streams import StreamHub
from service.settings import Settings
from service.store import Database, upgrade

if TYPE_CHECKING:
    from api.scheduler import Scheduler
    from workers.executor import Executor

log = logging.getLogger(__name__)

DESCRIPTION = """\
Neural architecture search as a service: submit searches, follow their progress, read candidates and the Pareto
front, download the trained models.

Authentication: `Authorization: Bearer <token>`. Errors are `application/problem+json` (RFC 9457) with `field`
naming the offending input. See docs/api.md.
"""


def create_app(
    settings: Settings,
    *,
    db: Database | None = None,
    executor: Executor | None = None,
    scheduler: Scheduler | None = None,
) -> FastAPI:
    """The API app. Without ``db`` it opens ``settings.db_url`` and migrates it at startup.

    ``executor`` (workers.executor.Executor) describes the cluster; ``scheduler`` is started and stopped with the app.
    """
    if not settings.auth and not settings.loopback:
        raise ValueError(
            f"auth: cannot be off when the API listens on {settings.host!r}, which is not a loopback address; "
            "set NAS_AUTH=true or NAS_HOST=127.0.0.1"
        )
    own_db = db is None
    database = Database(settings.db_url) if db is None else db

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if own_db:
            await anyio.to_thread.run_sync(upgrade, database.engine)
        if scheduler is not None:
            scheduler.start()
        try:
            yield
        finally:
            await streams.close()
            if scheduler is not None:
                scheduler.stop()
            if own_db:
                database.dispose()

    app = FastAPI(
        title="nas-service",
        version="1",
        description=DESCRIPTION,
        lifespan=lifespan,
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=None,  # served from local files by api.security.install_docs (no CDN)
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.db = database
    app.state.executor = executor
    app.state.scheduler = scheduler
    app.state.metrics = Metrics(database)
    app.state.rate_limiter = (
        RateLimiter(settings.rate_limit_per_s, settings.rate_limit_burst) if settings.rate_limit_per_s > 0 else None
    )
    app.state.streams = streams = StreamHub(
        database, max_per_user=settings.max_streams_per_user, max_total=settings.max_streams
    )

    install_handlers(app)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)  # also counts 413s
    loopback_only = not settings.auth  # a DNS-rebinding page must not reach an API without tokens
    app.add_middleware(HostCheckMiddleware, allowed=settings.allowed_hosts, loopback_only=loopback_only)
    app.add_middleware(SecurityHeadersMiddleware)  # outermost: on every response, errors included

    routers = [*API_ROUTERS, health.router]
    for router in routers:  # the routers carry their full prefix (route templates in metrics)
        app.include_router(router)
    app.state.routes = [route for router in routers for route in router.routes]  # for the Allow header of 405s
    install_docs(app)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
                tags=app.openapi_tags,
                servers=app.servers,
            )
            app.openapi_schema = problem_media_types(schema)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
