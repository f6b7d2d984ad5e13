"""Rows of the store as the API's response models (nas.client.models)."""

from __future__ import annotations

import logging
from typing import Any

from pydantic import ValidationError

from nas.client.models import ArtifactOut, CandidateOut, EventOut, Progress, ResultOut, SearchOut
from nas.spec import SearchSpec
from service.store.models import Artifact, CandidateRow, Search, SearchEvent

log = logging.getLogger(__name__)


def progress_out(row: Search) -> Progress | None:
    fields = progress_fields(row.phase, row.progress_step, row.progress_total)
    return None if fields is None else Progress(**fields)


def progress_fields(phase: str | None, step: int | None, total: int | None) -> dict[str, Any] | None:
    """A Progress as a dict (None when nothing is known yet); ``fraction`` is step/total clamped to 0..1."""
    if phase is None and step is None and total is None:
        return None
    fraction = min(max(step / total, 0.0), 1.0) if step is not None and total else None
    return {"phase": phase, "step": step, "total": total, "fraction": fraction}


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


def summary_out(item: dict[str, Any]) -> dict[str, Any]:
    """An item of repo.list_search_summaries as the JSON object of a SearchSummary (its fields, ``progress``
    nested). Lists serialize these dicts directly (pydantic_core.to_json): validating a model per row would cost
    more than reading it; tests check the answers against SearchSummary."""
    values = dict(item)
    values["progress"] = progress_fields(values.pop("phase"), values.pop("progress_step"), values.pop("progress_total"))
    return values


def event_out(row: SearchEvent) -> EventOut:
    return EventOut.model_validate(row)


def candidate_out(row: CandidateRow) -> CandidateOut:
    return CandidateOut.model_validate(row)


def artifact_out(row: Artifact) -> ArtifactOut:
    return ArtifactOut.model_validate(row)
