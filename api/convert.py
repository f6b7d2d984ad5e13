"""Rows of the store as the API's response models (nas.client.models)."""

from __future__ import annotations

import logging

from pydantic import ValidationError

from nas.client.models import ArtifactOut, CandidateOut, EventOut, Progress, ResultOut, SearchOut
from nas.spec import SearchSpec
from service.store.models import Artifact, CandidateRow, Search, SearchEvent

log = logging.getLogger(__name__)


def progress_out(row: Search) -> Progress | None:
    if row.phase is None and row.progress_step is None and row.progress_total is None:
        return None
    fraction = None
    if row.progress_step is not None and row.progress_total:
        fraction = min(max(row.progress_step / row.progress_total, 0.0), 1.0)
    return Progress(phase=row.phase, step=row.progress_step, total=row.progress_total, fraction=fraction)


def result_out(row: Search) -> ResultOut | None:
    if not row.result:
        return None
    try:
        return ResultOut.model_validate(row.result)
    except ValidationError as exc:  # a runner wrote another shape: show the search, log the mismatch
        log.warning("search %s: stored result does not match ResultOut: %s", row.id, exc)
        return None


def search_out(row: Search) -> SearchOut:
    return SearchOut(
        id=row.id,
        name=row.name,
        owner=row.owner.name,
        status=row.status,  # type: ignore[arg-type]
        priority=row.priority,
        attempts=row.attempts,
        max_attempts=row.max_attempts,
        cancel_requested=row.cancel_requested,
        resources={"cpus": row.cpus, "gpus": row.gpus},
        progress=progress_out(row),
        error=row.error,
        result=result_out(row),
        spec=SearchSpec.model_validate(row.spec),
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        updated_at=row.updated_at,
    )


def event_out(row: SearchEvent) -> EventOut:
    return EventOut.model_validate(row)


def candidate_out(row: CandidateRow) -> CandidateOut:
    return CandidateOut.model_validate(row)


def artifact_out(row: Artifact) -> ArtifactOut:
    return ArtifactOut.model_validate(row)
