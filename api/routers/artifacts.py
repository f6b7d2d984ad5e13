"""A search's artifacts (exported models, results, logs): the list and the files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter
from fastapi import Path as PathParam
from fastapi.responses import FileResponse

from api.auth import CurrentUser
from api.convert import artifact_out
from api.deps import API_PREFIX, DbDep, find_search
from api.problems import error_responses
from nas.client.models import ArtifactOut
from service.store import repo

router = APIRouter(prefix=f"{API_PREFIX}/searches", tags=["artifacts"], responses=error_responses(401, 404, 422, 500))


@router.get("/{search_id}/artifacts", response_model=list[ArtifactOut], summary="Artifacts of a search")
def list_artifacts(search_id: str, user: CurrentUser, db: DbDep) -> list[ArtifactOut]:
    with db.session() as s:
        row = find_search(s, search_id, user)
        return [artifact_out(a) for a in repo.list_artifacts(s, row.id)]


@router.get(
    "/{search_id}/artifacts/{artifact_id}",
    summary="Download an artifact",
    response_class=FileResponse,
    responses={
        200: {
            "description": "The file's bytes",
            "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
        }
    },
)
def download_artifact(
    search_id: str, artifact_id: Annotated[int, PathParam(ge=1, le=2**31 - 1)], user: CurrentUser, db: DbDep
) -> FileResponse:
    """The file, as an attachment named after it. Only files inside the search's folder are served."""
    with db.session() as s:
        search = find_search(s, search_id, user)
        artifact = repo.get_artifact(s, search.id, artifact_id)
        output_dir = search.output_dir
    if not output_dir:
        raise repo.NotFound(f"search {search.id} has no output folder yet", field="artifact_id")
    root = Path(output_dir).resolve()
    path = (root / artifact.name).resolve()
    if not path.is_relative_to(root) or path == root:
        raise repo.NotFound(f"artifact {artifact_id} lies outside the search's folder; it is not served", "artifact_id")
    if not path.is_file():
        raise repo.NotFound(f"the file of artifact {artifact_id} ({artifact.name}) is gone", field="artifact_id")
    return FileResponse(path, media_type="application/octet-stream", filename=path.name)
