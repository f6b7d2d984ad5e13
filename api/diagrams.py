"""Architecture diagrams as HTTP responses: drawn by the architecture's space (nas.diagram), cached per process."""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from fastapi import Response

from nas.arch import Architecture, canonical_json
from nas.diagram import MEDIA_TYPE, draw
from nas.space import get_space

CACHE_SIZE = 512
SVG_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": 'An SVG document (valid XML); its root `<svg>` carries `data-testid="arch-diagram"`, every '
        "node and edge a `<title>` tooltip and `data-*` attributes",
        "content": {MEDIA_TYPE: {"schema": {"type": "string"}}},
    }
}


def render_svg(arch: dict[str, Any], space_name: str, options: dict[str, Any]) -> Response:
    """The diagram of ``arch`` (an Architecture as a dict; a ``hash`` key is ignored) drawn by ``space_name``
    configured with ``options``. InvalidInput (422 naming the field) when the space, its options or the
    architecture are wrong, or the space draws no diagrams."""
    data = {k: v for k, v in arch.items() if k != "hash"}
    svg = _render(space_name, canonical_json(options), canonical_json(data))
    return Response(svg, media_type=MEDIA_TYPE, headers={"Cache-Control": "private, max-age=3600"})


@lru_cache(maxsize=CACHE_SIZE)
def _render(space_name: str, options_json: str, arch_json: str) -> str:
    """Diagrams are deterministic, so equal inputs (canonical JSON) give the same document: cached."""
    space = get_space(space_name, **json.loads(options_json))
    return draw(space, Architecture.from_dict(json.loads(arch_json)))
