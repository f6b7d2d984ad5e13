"""The Python SDK: a typed client of the nas-service REST API (httpx + pydantic only; no torch, no ray).

>>> from nas.client import Client
>>> with Client() as client:                       # NAS_URL / NAS_TOKEN, or the local service and its admin token
...     search = client.submit("examples/digits-spos.yaml")
...     search.wait(progress=True)
...     folder = search.download("runs/digits")    # then: nas.load(folder)

This module holds :class:`Client` (the service's resources); HTTP, retries and errors are in
:mod:`nas.client.transport`, the handle on one search in :mod:`nas.client.search`.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from nas.client.errors import APIError, ConnectionFailed, InvalidRequest
from nas.client.models import (
    ClusterOut,
    DatasetOut,
    Order,
    Problem,
    SearchCreate,
    SearchOut,
    SearchSort,
    SearchSummary,
    SpaceOut,
    StrategyOut,
    TokenCreate,
    TokenCreated,
    TokenOut,
    UserCreate,
    UserDisabled,
    UserInfo,
    UserOut,
)
from nas.client.search import Search, segment, svg_text
from nas.client.transport import Transport
from nas.spec import SearchSpec

SpecLike = SearchSpec | Mapping[str, Any] | str | os.PathLike[str]

__all__ = ["Client", "Search", "SpecLike", "load_search_spec"]


def load_search_spec(spec: SpecLike) -> SearchSpec:
    """A SearchSpec from a SearchSpec, a dict, or a YAML/JSON file; errors become InvalidRequest (``spec.<field>``)."""
    if isinstance(spec, SearchSpec):
        return spec
    from nas.errors import InvalidInput
    from nas.specio import load_spec, parse_spec  # imports yaml, not torch

    try:
        if isinstance(spec, Mapping):
            return parse_spec(dict(spec))
        if isinstance(spec, str | os.PathLike):
            return load_spec(Path(spec))
    except InvalidInput as exc:
        field = exc.field if exc.field == "spec" or exc.field.startswith("spec.") else f"spec.{exc.field}"
        problem = Problem(title="Invalid search spec", status=422, field=field, detail=exc.message)
        raise InvalidRequest(problem) from None
    raise TypeError(f"spec: expected a SearchSpec, a dict or a path to a YAML/JSON file, not {type(spec).__name__}")


B = TypeVar("B", bound=BaseModel)


def request_body(model: type[B], **values: Any) -> B:
    """A request body checked here first: InvalidRequest naming the field, and nothing is sent, when it is wrong."""
    try:
        return model(**values)
    except ValidationError as exc:
        e = exc.errors()[0]
        field = ".".join(str(p) for p in e["loc"])
        raise InvalidRequest(Problem(title="Invalid request", status=422, field=field, detail=e["msg"])) from None


class Client:
    """A client of one nas service.

    ``url`` defaults to ``NAS_URL`` (else the embedded service on this machine), ``token`` to ``NAS_TOKEN`` (else the
    admin token the embedded service wrote into its data directory). Every request is retried with exponential
    back-off on connection errors, 5xx and 429 (``retries`` times, first pause ``backoff`` seconds, honouring
    ``Retry-After``). ``http`` is an httpx.Client to send requests with (tests, proxies, custom TLS); when given, its
    own timeout applies and it is not closed by :meth:`close`. ``transport`` is an httpx transport for the client's
    own httpx.Client instead (e.g. ``httpx.MockTransport(handler)``, or ``httpx.HTTPTransport(retries=..., uds=...)``);
    pass one of ``http`` and ``transport``, not both.
    """

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        retries: int = 5,
        backoff: float = 0.5,
        http: httpx.Client | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.transport = Transport(
            url, token, timeout=timeout, retries=retries, backoff=backoff, http=http, transport=transport
        )

    @property
    def url(self) -> str:
        """The service's base URL (without ``/api/v1``)."""
        return self.transport.url

    @property
    def token(self) -> str | None:
        return self.transport.token

    @property
    def timeout(self) -> float:
        return self.transport.timeout

    @property
    def retries(self) -> int:
        return self.transport.retries

    @property
    def backoff(self) -> float:
        return self.transport.backoff

    # ------------------------------------------------------------ lifecycle

    def close(self) -> None:
        self.transport.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client(url={self.url!r}, token={'***' if self.token else None})"

    # ------------------------------------------------------------ searches

    def submit(
        self,
        spec: SpecLike,
        *,
        priority: int = 0,
        max_attempts: int | None = None,
        idempotency_key: str | None = None,
    ) -> Search:
        """Queue a search; ``spec`` is a SearchSpec, a dict, or a path to a YAML/JSON spec file.

        The spec is validated here first (InvalidRequest names the field, nothing is sent). The request carries an
        ``Idempotency-Key`` (a new uuid4 unless given) that stays the same across retries, so a retried submission
        never creates a second search.
        """
        body = request_body(SearchCreate, spec=load_search_spec(spec), priority=priority, max_attempts=max_attempts)
        payload: dict[str, Any] = {
            "spec": body.spec.model_dump(mode="json", exclude_unset=True),
            "priority": body.priority,
        }
        if body.max_attempts is not None:
            payload["max_attempts"] = body.max_attempts
        key = idempotency_key or uuid.uuid4().hex
        response = self.transport.request("POST", "/searches", json=payload, headers={"Idempotency-Key": key})
        return Search(self, self.transport.parse(response, SearchOut))

    def search(self, search_id: str) -> Search:
        """A handle on an existing search, by its id or a unique prefix of it (6+ characters, like git), among the
        searches the token's user may see. Fetched now: a wrong id fails here with NotFound, a prefix that matches
        several searches with Conflict (its message lists them). The handle holds the full id."""
        return Search(self, self.transport.get(f"/searches/{segment(search_id.strip())}", SearchOut))

    def searches(
        self,
        status: str | Sequence[str] | None = None,
        name: str | None = None,
        *,
        owner: str | None = None,
        sort: SearchSort = "created_at",
        order: Order = "desc",
        limit: int | None = 50,
    ) -> list[SearchSummary]:
        """Searches visible to the token's user, newest first; ``limit=None`` pages through all of them.

        Summaries: no spec and no result (``client.search(id).info`` has them), but the space, strategy and dataset
        names, the progress, the best accuracy so far and the number of candidates.
        """
        statuses = [status] if isinstance(status, str) else list(status or [])
        params = {"status": statuses, "name": name, "owner": owner, "sort": sort, "order": order}
        return self.transport.get_pages("/searches", params, SearchSummary, limit)

    # ------------------------------------------------------------ catalogue and service

    def spaces(self) -> list[SpaceOut]:
        return self.transport.get("/spaces", list[SpaceOut])

    def space(self, name: str) -> SpaceOut:
        return self.transport.get(f"/spaces/{segment(name)}", SpaceOut)

    def strategies(self) -> list[StrategyOut]:
        return self.transport.get("/strategies", list[StrategyOut])

    def datasets(self) -> list[DatasetOut]:
        return self.transport.get("/datasets", list[DatasetOut])

    def architecture_svg(
        self,
        arch: Mapping[str, Any] | BaseModel,
        *,
        space_options: Mapping[str, Any] | None = None,
        path: str | os.PathLike[str] | None = None,
    ) -> str:
        """The SVG diagram of any architecture (a dict or an Architecture with ``space``, ``version`` and
        ``choices``, e.g. a candidate's ``arch`` or an exported ``arch.json``), drawn by the service. ``space_options``:
        the options of the space it belongs to (NASNet's ``attention``, ...). Written to ``path`` too when given."""
        data = dict(arch.model_dump(mode="json") if isinstance(arch, BaseModel) else arch)
        if isinstance(data.get("architecture"), dict):  # an exported arch.json
            space_options = space_options if space_options is not None else data.get("space_options")
            data = dict(data["architecture"])
        space = data.get("space")
        if not isinstance(space, str) or not space:
            problem = Problem(title="Invalid request", status=422, field="architecture.space", detail="missing")
            raise InvalidRequest(problem)
        body = {k: v for k, v in data.items() if k in ("space", "version", "choices")}
        body["space_options"] = dict(space_options or {})
        response = self.transport.request("POST", f"/spaces/{segment(space)}/architecture.svg", json=body)
        return svg_text(response, path)

    def cluster(self) -> ClusterOut:
        return self.transport.get("/cluster", ClusterOut)

    def me(self) -> UserOut:
        """The user the token belongs to (AuthError if the token is missing or wrong)."""
        return self.transport.get("/me", UserOut)

    # ------------------------------------------------------------ users and tokens (admins only: others get AuthError)

    def users(self) -> list[UserInfo]:
        """Every user, with whether they are disabled and how many live tokens they have."""
        return self.transport.get("/users", list[UserInfo])

    def create_user(self, name: str, *, admin: bool = False) -> UserInfo:
        body = request_body(UserCreate, name=name, is_admin=admin).model_dump(mode="json")
        return self.transport.parse(self.transport.request("POST", "/users", json=body, retries=0), UserInfo)

    def disable_user(self, name: str) -> UserDisabled:
        """The user's tokens stop working; their queued searches are cancelled and running ones asked to stop."""
        path = f"/users/{segment(name)}/disable"
        return self.transport.parse(self.transport.request("POST", path), UserDisabled)

    def enable_user(self, name: str) -> UserInfo:
        return self.transport.parse(self.transport.request("POST", f"/users/{segment(name)}/enable"), UserInfo)

    def tokens(self, user: str) -> list[TokenOut]:
        """The user's tokens (never the tokens themselves): name, prefix, created, last used, expiry, revocation."""
        return self.transport.get(f"/users/{segment(user)}/tokens", list[TokenOut])

    def create_token(self, user: str, name: str = "default", *, expires_in_days: int | None = None) -> TokenCreated:
        """A new token for ``user``; ``.token`` holds it, shown this once (only its hash is stored)."""
        body = request_body(TokenCreate, name=name, expires_in_days=expires_in_days)
        payload = body.model_dump(mode="json", exclude_none=True)
        response = self.transport.request("POST", f"/users/{segment(user)}/tokens", json=payload, retries=0)
        return self.transport.parse(response, TokenCreated)

    def revoke_token(self, user: str, token_id: int) -> TokenOut:
        path = f"/users/{segment(user)}/tokens/{int(token_id)}"
        return self.transport.parse(self.transport.request("DELETE", path), TokenOut)

    def health(self) -> bool:
        """Whether the service answers ``/healthz`` with 200 (one attempt, never raises)."""
        try:
            return self.transport.request("GET", "/healthz", api=False, retries=0).status_code == 200
        except (APIError, ConnectionFailed):
            return False
