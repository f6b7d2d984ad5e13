"""What the service offers: search spaces, strategies and datasets."""

from __future__ import annotations

from functools import cache
from typing import Any

from fastapi import APIRouter

from api.auth import CurrentUser
from api.deps import API_PREFIX
from api.problems import error_responses
from nas.client.models import DatasetOut, SpaceOut, StrategyOut
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
