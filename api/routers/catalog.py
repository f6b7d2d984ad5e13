"""What the service offers: search spaces, strategies and datasets."""

from __future__ import annotations

from functools import cache
from typing import Any

from fastapi import APIRouter, Response

from api.auth import CurrentUser
from api.deps import API_PREFIX
from api.diagrams import SVG_RESPONSES, render_svg
from api.problems import error_responses
from nas.client.models import DatasetOut, DiagramRequest, SpaceOut, StrategyOut
from nas.data import describe_datasets
from nas.errors import InvalidInput
from nas.space import get_space, space_class, space_names
from nas.strategies.base import StrategyOptions, strategy_class, strategy_names
from service.store import repo

router = APIRouter(prefix=API_PREFIX, tags=["catalog"], responses=error_responses(401, 500))


def _first_line(doc: str | None) -> str | None:
    lines = [line.strip() for line in (doc or "").strip().splitlines()]
    text = " ".join(lines[: lines.index("")] if "" in lines else lines)
    return text or None


@cache
def _space(name: str) -> SpaceOut:
    """A space with its default options (spaces are registered once per process, so this is cached)."""
    described: dict[str, Any] = get_space(name).describe()
    return SpaceOut.model_validate({**described, "description": _first_line(space_class(name).__doc__)})


@router.get("/spaces", response_model=list[SpaceOut], summary="Search spaces")
def list_spaces(user: CurrentUser) -> list[SpaceOut]:
    """Each space's option, macro and choice schemas, the log10 of its size and its presets."""
    return [_space(name) for name in space_names()]


@router.get("/spaces/{name}", response_model=SpaceOut, summary="One search space", responses=error_responses(404))
def get_space_info(name: str, user: CurrentUser) -> SpaceOut:
    if name not in space_names():
        raise repo.NotFound(f"unknown space {name!r}; allowed: {', '.join(space_names()) or 'none'}", field="name")
    try:
        return _space(name)
    except InvalidInput as exc:  # a space whose defaults do not build is broken, not missing
        raise RuntimeError(f"space {name!r} cannot be described: {exc}") from exc


@router.post(
    "/spaces/{name}/architecture.svg",
    response_class=Response,
    summary="Draw an architecture (SVG)",
    responses={**SVG_RESPONSES, **error_responses(400, 404, 413)},
)
def draw_architecture(name: str, body: DiagramRequest, user: CurrentUser) -> Response:
    """Any architecture of the space as a diagram, the same drawing as a candidate's ``architecture.svg``. The body
    is the architecture as candidates and exports hold it (``space``, ``version``, ``choices``) plus the
    ``space_options`` it was searched with; it is validated first (422 naming the field, e.g.
    ``architecture.choices.normal.blocks[0]``)."""
    if name not in space_names():
        raise repo.NotFound(f"unknown space {name!r}; allowed: {', '.join(space_names()) or 'none'}", field="name")
    if body.space is not None and body.space != name:
        raise InvalidInput("architecture.space", f"is {body.space!r}, but the URL names space {name!r}")
    arch = {"space": name, "version": body.version or space_class(name).version, "choices": body.choices}
    try:
        return render_svg(arch, name, body.space_options)
    except InvalidInput as exc:
        if exc.field == "space.options" or exc.field.startswith("space.options."):
            raise InvalidInput("space_options" + exc.field.removeprefix("space.options"), exc.message) from None
        raise


@router.get("/strategies", response_model=list[StrategyOut], summary="Search strategies")
def list_strategies(user: CurrentUser) -> list[StrategyOut]:
    """Each strategy with the JSON schema of its ``strategy.options``."""
    out = []
    for name in strategy_names():
        cls = strategy_class(name)
        options = cls.Options
        schema = options.model_json_schema() if options is not StrategyOptions else {}
        out.append(
            StrategyOut(name=name, description=_first_line(cls.__doc__), tasks=list(cls.tasks), options_schema=schema)
        )
    return out


@router.get("/datasets", response_model=list[DatasetOut], summary="Datasets")
def list_datasets(user: CurrentUser) -> list[DatasetOut]:
    """Built-in datasets and those read from a path (inside the server's dataset roots)."""
    out = []
    for info in describe_datasets():
        details = {k: v for k, v in info.items() if k not in ("name", "description", "needs_path")}
        out.append(DatasetOut(name=info["name"], description=info["description"], needs_path=info["needs_path"],
                              details=details))  # fmt: skip
    return out
