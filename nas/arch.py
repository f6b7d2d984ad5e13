"""Architecture: a space name, its version and the choices, with a canonical JSON form and a stable hash."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from nas.errors import InvalidInput


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace: equal values give equal strings."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


class Architecture(BaseModel):
    """One point of a search space.

    ``choices`` is plain JSON (dicts, lists, strings, numbers); its layout belongs to the space, which validates it.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    space: str = Field(min_length=1, description="registered search-space name, e.g. 'nasnet'")
    version: str = Field(min_length=1, description="version of the space's encoding")
    choices: dict[str, Any]

    def to_json(self) -> str:
        return canonical_json(self.model_dump(mode="json"))

    @property
    def hash(self) -> str:
        """First 16 hex digits of the SHA-256 of the canonical JSON: stable across processes and machines."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]

    def __hash__(self) -> int:
        return hash(self.to_json())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Architecture) and self.to_json() == other.to_json()

    @classmethod
    def from_json(cls, text: str) -> Architecture:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidInput("architecture", f"not valid JSON ({exc.msg} at line {exc.lineno})") from exc
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: Any) -> Architecture:
        if not isinstance(data, dict):
            raise InvalidInput("architecture", "must be a JSON object with 'space', 'version' and 'choices'")
        if "architecture" in data and isinstance(data["architecture"], dict):
            data = data["architecture"]  # an exported arch.json wraps it with the macro settings
        from pydantic import ValidationError

        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(p) for p in err["loc"]) or "architecture"
            raise InvalidInput(f"architecture.{loc}", err["msg"]) from exc

    @classmethod
    def load(cls, path: str | Path) -> Architecture:
        p = Path(path)
        if not p.is_file():
            raise InvalidInput("architecture", f"file {str(p)!r} does not exist")
        return cls.from_json(p.read_text())
