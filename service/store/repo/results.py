"""What a search produces: events, candidates (upserted by architecture hash) and artifacts."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from nas.arch import Architecture
from nas.events import Event
from service.store.models import Artifact, CandidateRow, SearchEvent, utcnow
from service.store.repo.errors import Ambiguous, NotFound
from service.store.repo.searches import AMBIGUOUS_LISTED, HEX, Page

MIN_HASH_PREFIX = 6

CANDIDATE_SORTS = ("accuracy", "params", "macs", "latency_ms", "created_at")


def add_events(s: Session, search_id: str, attempt: int, events: Sequence[Event]) -> None:
    s.add_all(
        SearchEvent(
            search_id=search_id,
            attempt=attempt,
            type=str(e.type),
            phase=e.phase,
            step=e.step,
            total=e.total,
            message=e.message,
            metrics=e.metrics,
            data=e.data,
            time=e.time,
        )
        for e in events
    )


def list_events(
    s: Session,
    search_id: str,
    *,
    after_id: int = 0,
    limit: int = 500,
    types: Sequence[str] = (),
    phases: Sequence[str] = (),
) -> list[SearchEvent]:
    """Events after ``after_id`` in order; ``types``/``phases`` (when given) keep only events of those types/phases."""
    q = select(SearchEvent).where(SearchEvent.search_id == search_id, SearchEvent.id > after_id)
    if types:
        q = q.where(SearchEvent.type.in_(list(types)))
    if phases:
        q = q.where(SearchEvent.phase.in_(list(phases)))
    return list(s.scalars(q.order_by(SearchEvent.id).limit(limit)))


COST_COLUMNS = {"accuracy": "accuracy", "params": "params", "macs": "macs", "latency_ms": "latency_ms"}


def candidate_hash(candidate: dict[str, Any]) -> str:
    """The architecture hash of a candidate item (given, inside ``arch``, or computed from it)."""
    if candidate.get("arch_hash"):
        return str(candidate["arch_hash"])
    arch = candidate["arch"]
    if isinstance(arch, dict) and arch.get("hash"):
        return str(arch["hash"])
    return Architecture.model_validate(arch).hash


def upsert_candidates(s: Session, search_id: str, candidates: Sequence[dict[str, Any]]) -> None:
    """Insert or refresh candidates, keyed by (search, architecture hash).

    Each item: ``arch`` (an Architecture as a dict), ``metrics``, optional ``arch_hash``, ``feasible``,
    ``pareto``, ``phase``.
    """
    if not candidates:
        return
    rows = []
    for c in candidates:
        metrics = {k: float(v) for k, v in c.get("metrics", {}).items()}
        rows.append(
            {
                "search_id": search_id,
                "arch_hash": candidate_hash(c),
                "arch": c["arch"],
                "metrics": metrics,
                "feasible": bool(c.get("feasible", True)),
                "pareto": bool(c.get("pareto", False)),
                "phase": c.get("phase"),
                "created_at": utcnow(),
                **{col: metrics.get(key) for key, col in COST_COLUMNS.items()},
            }
        )
    dialect = s.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = insert(CandidateRow)
    refreshed = ("metrics", "feasible", "pareto", *COST_COLUMNS.values())
    stmt = stmt.on_conflict_do_update(
        index_elements=["search_id", "arch_hash"], set_={k: stmt.excluded[k] for k in refreshed}
    )
    s.execute(stmt, rows)


@dataclass(frozen=True)
class CandidateFilter:
    """Which candidates a listing keeps (None: no bound). Bounds are inclusive; a candidate without the bounded
    metric is left out."""

    min_accuracy: float | None = None
    max_params: float | None = None
    max_macs: float | None = None
    max_latency_ms: float | None = None
    feasible: bool | None = None
    phase: str | None = None
    arch_hash: str | None = None  # a prefix of the architecture hash


def list_candidates(
    s: Session,
    search_id: str,
    *,
    sort: str = "accuracy",
    descending: bool = True,
    pareto_only: bool = False,
    limit: int = 50,
    offset: int = 0,
    where: CandidateFilter | None = None,
) -> Page:
    q = select(CandidateRow).where(CandidateRow.search_id == search_id)
    if pareto_only:
        q = q.where(CandidateRow.pareto.is_(True))
    f = where or CandidateFilter()
    if f.min_accuracy is not None:
        q = q.where(CandidateRow.accuracy >= f.min_accuracy)
    if f.max_params is not None:
        q = q.where(CandidateRow.params <= f.max_params)
    if f.max_macs is not None:
        q = q.where(CandidateRow.macs <= f.max_macs)
    if f.max_latency_ms is not None:
        q = q.where(CandidateRow.latency_ms <= f.max_latency_ms)
    if f.feasible is not None:
        q = q.where(CandidateRow.feasible.is_(f.feasible))
    if f.phase is not None:
        q = q.where(CandidateRow.phase == f.phase)
    if f.arch_hash:
        q = q.where(CandidateRow.arch_hash.startswith(f.arch_hash, autoescape=True))
    total = int(s.scalar(select(func.count()).select_from(q.subquery())) or 0)
    column = getattr(CandidateRow, sort)
    order = column.desc() if descending else column.asc()
    rows = list(s.scalars(q.order_by(order.nulls_last(), CandidateRow.id.asc()).limit(limit).offset(offset)))
    return Page(rows, total, limit, offset)


def get_candidate(s: Session, search_id: str, ref: str) -> CandidateRow:
    """A candidate of the search by its architecture hash, or a unique prefix of it (at least 6 characters; hex
    prefixes in any case); NotFound, or Ambiguous naming the matches."""
    key = ref.strip()
    row = s.scalar(select(CandidateRow).where(CandidateRow.search_id == search_id, CandidateRow.arch_hash == key))
    if row is not None:
        return row
    prefix = key.lower() if set(key.lower()) <= HEX else key
    if len(prefix) >= MIN_HASH_PREFIX:
        q = select(CandidateRow).where(
            CandidateRow.search_id == search_id, CandidateRow.arch_hash.startswith(prefix, autoescape=True)
        )
        rows = list(s.scalars(q.order_by(CandidateRow.arch_hash).limit(AMBIGUOUS_LISTED + 1)))
        if len(rows) == 1:
            return rows[0]
        if rows:
            listed = ", ".join(r.arch_hash for r in rows[:AMBIGUOUS_LISTED])
            more = " and more" if len(rows) > AMBIGUOUS_LISTED else ""
            raise Ambiguous(f"candidate prefix {ref!r} is ambiguous: it matches {listed}{more}", field="arch_hash")
    raise NotFound(f"no candidate {ref!r} in search {search_id}", field="arch_hash")


def register_artifacts(s: Session, search_id: str, root: Path, files: Iterable[Path], kind: str) -> list[Artifact]:
    """Record files (below ``root``, the search's directory) as downloadable artifacts."""
    out = []
    for path in files:
        name = path.relative_to(root).as_posix()
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        row = s.scalar(select(Artifact).where(Artifact.search_id == search_id, Artifact.name == name))
        if row is None:
            row = Artifact(search_id=search_id, name=name, kind=kind, size=path.stat().st_size, sha256=digest)
            s.add(row)
        else:
            row.size, row.sha256, row.kind = path.stat().st_size, digest, kind
        out.append(row)
    s.flush()
    return out


def list_artifacts(s: Session, search_id: str) -> list[Artifact]:
    return list(s.scalars(select(Artifact).where(Artifact.search_id == search_id).order_by(Artifact.id)))


def get_artifact(s: Session, search_id: str, artifact_id: int) -> Artifact:
    row = s.scalar(select(Artifact).where(Artifact.search_id == search_id, Artifact.id == artifact_id))
    if row is None:
        raise NotFound(f"no artifact {artifact_id} in search {search_id}", field="artifact_id")
    return row
