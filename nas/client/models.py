"""Resources of the REST API, shared by the server (response models, OpenAPI) and the SDK. Pydantic only."""

from __future__ import annotations

import datetime as dt
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from nas.spec import SearchSpec, Strict

SearchStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
FINAL_STATUSES: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})
SearchSort = Literal["created_at", "priority", "updated_at", "name", "status"]
CandidateSort = Literal["accuracy", "params", "macs", "latency_ms", "created_at"]
SEARCH_ID_MIN_PREFIX = 6  # a search id may be given by a unique prefix of at least this many characters
Order = Literal["asc", "desc"]

T = TypeVar("T")


class Model(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class SearchCreate(Strict):
    """Body of ``POST /api/v1/searches`` (strict, as the spec: no ``true`` or ``"5"`` for a number)."""

    spec: SearchSpec
    priority: int = Field(0, ge=-100, le=100, description="higher runs first")
    max_attempts: int | None = Field(None, ge=1, le=20, description="attempts before the search fails (retries)")


class Progress(Model):
    phase: str | None = None
    step: int | None = None
    total: int | None = None
    fraction: float | None = Field(None, description="step/total of the current phase, 0..1")


class FinalOut(Model):
    arch: dict[str, Any]
    metrics: dict[str, float]
    path: str = Field(description="folder of the exported model among the artifacts")


class ResultOut(Model):
    elapsed_s: float
    best: dict[str, Any] | None = Field(None, description="architecture of the winner")
    final: list[FinalOut] = Field(default_factory=list)


class SearchOut(Model):
    id: str
    name: str
    owner: str
    status: SearchStatus
    priority: int
    attempts: int
    max_attempts: int
    cancel_requested: bool
    resources: dict[str, float]
    progress: Progress | None = None
    error: str | None = None
    result: ResultOut | None = None
    spec: SearchSpec
    created_at: dt.datetime
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    updated_at: dt.datetime

    @property
    def done(self) -> bool:
        return self.status in FINAL_STATUSES


class SearchSummary(Model):
    """A search as lists show it (``GET /api/v1/searches``): no spec and no result, but what a table needs."""

    id: str
    name: str
    owner: str
    status: SearchStatus
    priority: int
    attempts: int
    max_attempts: int
    cancel_requested: bool
    progress: Progress | None = None
    error: str | None = Field(None, description="the first line of the error (at most 200 characters)")
    space: str | None = Field(None, description="spec.space.name")
    strategy: str | None = Field(None, description="spec.strategy.name")
    dataset: str | None = Field(None, description="spec.dataset.name")
    best_accuracy: float | None = Field(None, description="highest accuracy among its feasible candidates so far")
    candidates: int = Field(0, description="how many candidates it has evaluated so far")
    created_at: dt.datetime
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    updated_at: dt.datetime

    @property
    def done(self) -> bool:
        return self.status in FINAL_STATUSES


class Page(Model, Generic[T]):
    items: list[T]
    total: int
    limit: int
    offset: int


class EventOut(Model):
    id: int
    search_id: str
    attempt: int
    type: str
    phase: str | None = None
    step: int | None = None
    total: int | None = None
    message: str | None = None
    metrics: dict[str, float] = Field(default_factory=dict)
    data: dict[str, Any] = Field(default_factory=dict)
    time: float


class CandidateOut(Model):
    arch_hash: str
    arch: dict[str, Any]
    accuracy: float | None = None
    params: float | None = None
    macs: float | None = None
    latency_ms: float | None = None
    metrics: dict[str, float] = Field(default_factory=dict)
    feasible: bool
    pareto: bool
    phase: str | None = None


class DiagramRequest(Strict):
    """Body of ``POST /api/v1/spaces/{space}/architecture.svg``: an architecture as candidates and exports hold it
    (``space`` and ``version`` optional, they default to the path's space and its version), with the space options
    it was searched with (e.g. NASNet's ``attention``)."""

    space: str | None = Field(None, min_length=1, max_length=100)
    version: str | None = Field(None, min_length=1, max_length=50)
    hash: str | None = Field(None, max_length=64, description="ignored (the hash follows from the rest)")
    choices: dict[str, Any]
    space_options: dict[str, Any] = Field(default_factory=dict)


class ArtifactOut(Model):
    id: int
    name: str = Field(description="path inside the search's folder, e.g. final/1-<hash>/model.safetensors")
    kind: str = Field(description="model, result or log")
    size: int
    sha256: str


class SpaceOut(Model):
    name: str
    version: str | int
    description: str | None = None
    log10_size: float
    options_schema: dict[str, Any]
    macro_schema: dict[str, Any]
    choices_schema: dict[str, Any]
    tasks: list[str] = Field(default_factory=list)
    differentiable: bool = False
    block_wise: bool = False
    presets: dict[str, dict[str, Any]] = Field(default_factory=dict)


class StrategyOut(Model):
    name: str
    description: str | None = None
    tasks: list[str] = Field(default_factory=lambda: ["classification"], description="the tasks it can search for")
    options_schema: dict[str, Any] = Field(default_factory=dict)


class DatasetOut(Model):
    name: str
    description: str | None = None
    needs_path: bool = False
    details: dict[str, Any] = Field(default_factory=dict)


class NodeOut(Model):
    node_id: str
    address: str
    alive: bool
    resources: dict[str, float] = Field(default_factory=dict)


class ClusterOut(Model):
    mode: Literal["local", "cluster", "none"]
    address: str | None = None
    nodes: list[NodeOut] = Field(default_factory=list)
    total: dict[str, float] = Field(default_factory=dict, description="CPU, GPU, memory of all nodes")
    available: dict[str, float] = Field(default_factory=dict, description="what is free now")
    queued: int = 0
    running: int = 0


class UserOut(Model):
    name: str
    is_admin: bool


USER_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"


class UserInfo(UserOut):
    """A user as admins see it (``GET /api/v1/users``)."""

    created_at: dt.datetime
    disabled_at: dt.datetime | None = None
    active_tokens: int = Field(0, description="tokens not revoked (expired ones included)")


class UserCreate(Strict):
    """Body of ``POST /api/v1/users``."""

    name: str = Field(pattern=USER_NAME_PATTERN, description="1-100 letters, digits, '.', '_' or '-'")
    is_admin: bool = False


class UserDisabled(UserInfo):
    """Answer of ``POST /api/v1/users/{name}/disable``: the searches it cancelled or asked to stop."""

    cancelled: list[str] = Field(default_factory=list, description="queued searches now cancelled")
    cancel_requested: list[str] = Field(default_factory=list, description="running searches asked to stop")


class TokenOut(Model):
    """An API token's record (never the token itself)."""

    id: int
    name: str
    prefix: str = Field(description="the token's first characters, to recognise it")
    created_at: dt.datetime
    last_used_at: dt.datetime | None = None
    expires_at: dt.datetime | None = None
    revoked_at: dt.datetime | None = None


class TokenCreate(Strict):
    """Body of ``POST /api/v1/users/{name}/tokens``."""

    name: str = Field("default", min_length=1, max_length=100, pattern=r"^[^\x00]*$")
    expires_in_days: int | None = Field(None, ge=1, le=3650, description="none: valid until revoked")


class TokenCreated(TokenOut):
    token: str = Field(description="the token: shown this once, only its hash is stored")


class ProblemField(BaseModel):
    field: str
    message: str


class Problem(BaseModel):
    """RFC 9457 problem details; ``field`` names the offending input when there is one."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    field: str | None = None
    errors: list[ProblemField] = Field(default_factory=list)
