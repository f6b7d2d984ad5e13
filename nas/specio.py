"""Reading search specs from YAML or JSON files, with errors that name the offending field."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from nas.errors import InvalidInput
from nas.spec import SearchSpec


class _Loader(yaml.SafeLoader):
    """YAML 1.1 reads ``1e6`` and ``3.0e6`` (an exponent without a sign) as strings, and strict specs refuse strings
    for numbers; this loader reads them as the floats they look like (as YAML 1.2 and JSON do)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def load_yaml(text: str) -> Any:
    """Parse YAML like ``yaml.safe_load``, with exponent floats (``1e6``) read as floats."""
    return yaml.load(text, Loader=_Loader)


def _loc(err: Mapping[str, Any]) -> str:
    return ".".join(str(p) for p in err["loc"] if not str(p).startswith("function-after"))


def parse_spec(data: Any) -> SearchSpec:
    if not isinstance(data, dict):
        raise InvalidInput("spec", "must be a mapping with at least 'space' and 'dataset'")
    try:
        return SearchSpec.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc, msg = _loc(err), err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        elif (m := re.match(r"^(\w+): (.*)$", msg)) and err["type"] == "value_error":
            loc, msg = ".".join(p for p in (loc, m.group(1)) if p), m.group(2)  # model validators name their field
        raise InvalidInput(loc or "spec", msg) from exc


def load_spec(path: str | Path) -> SearchSpec:
    """Read a spec file (.yaml, .yml or .json)."""
    p = Path(path)
    if not p.is_file():
        raise InvalidInput("spec", f"file {str(p)!r} does not exist")
    try:
        text = p.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput("spec", f"cannot read {str(p)!r}: {exc}") from exc
    try:
        data = json.loads(text) if p.suffix == ".json" else load_yaml(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InvalidInput(
            "spec", f"{p.name} is not valid {'JSON' if p.suffix == '.json' else 'YAML'}: {first}"
        ) from exc
    return parse_spec(data)
