"""Liveness, readiness and Prometheus metrics (no token needed)."""

from __future__ import annotations

import hmac
import logging
from functools import cache

from alembic.script import ScriptDirectory
from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from sqlalchemy import text

from api.deps import DbDep
from api.problems import ProblemError, error_responses
from service.store.migrate import alembic_config, current

log = logging.getLogger(__name__)

router = APIRouter(tags=["health"], responses=error_responses(500))


class Health(BaseModel):
    status: str


class Ready(BaseModel):
    status: str
    database: str
    revision: str | None


@cache
def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


@router.get("/healthz", response_model=Health, summary="Liveness")
def healthz() -> Health:
    """The process answers."""
    return Health(status="ok")


@router.get("/readyz", response_model=Ready, summary="Readiness", responses=error_responses(503))
def readyz(db: DbDep) -> Ready:
    """The database answers and its schema is at the newest migration."""
    try:
        with db.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        revision = current(db.engine)
    except Exception as exc:  # any failure to reach the database means: not ready
        log.warning("readyz: database unreachable: %s", exc)
        raise ProblemError(503, f"the database does not answer ({type(exc).__name__})", field="database") from exc
    head = head_revision()
    if revision != head:
        raise ProblemError(
            503, f"the database schema is at {revision!r}, not {head!r}; run 'nas db upgrade'", field="database"
        )
    return Ready(status="ready", database=db.engine.dialect.name, revision=revision)


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={
        200: {"description": "Prometheus text format", "content": {"text/plain": {"schema": {"type": "string"}}}},
        **error_responses(401),
    },
)
def metrics(request: Request) -> Response:
    """Open unless NAS_METRICS_TOKEN is set; then it needs ``Authorization: Bearer <that token>``."""
    check_metrics_token(request)
    registry = request.app.state.metrics.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


def check_metrics_token(request: Request) -> None:
    expected: str | None = request.app.state.settings.metrics_token
    if not expected:
        return
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected.encode()):
        raise ProblemError(
            401,
            "/metrics needs the metrics token (NAS_METRICS_TOKEN) as 'Authorization: Bearer <token>'",
            field="Authorization",
            headers={"WWW-Authenticate": 'Bearer realm="nas-metrics"'},
        )
