"""The cluster the searches run on, and who the caller is."""

from __future__ import annotations

from fastapi import APIRouter

from api.auth import CurrentUser
from api.deps import API_PREFIX, DbDep, ExecutorDep
from api.problems import error_responses
from nas.client.models import ClusterOut, UserOut
from service.store import repo

router = APIRouter(prefix=API_PREFIX, tags=["cluster"], responses=error_responses(401, 500))


@router.get("/cluster", response_model=ClusterOut, summary="Cluster and queue")
def get_cluster(user: CurrentUser, db: DbDep, executor: ExecutorDep) -> ClusterOut:
    """Ray nodes, their resources and what is free, and how many searches are queued and running (all users)."""
    cluster = executor.cluster() if executor is not None else ClusterOut(mode="none")
    with db.session() as s:
        counts = repo.status_counts(s)
    return cluster.model_copy(update={"queued": counts.get("queued", 0), "running": counts.get("running", 0)})


@router.get("/me", response_model=UserOut, summary="The caller")
def me(user: CurrentUser) -> UserOut:
    return UserOut(name=user.name, is_admin=user.is_admin)
