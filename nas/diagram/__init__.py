"""Architecture diagrams as SVG (pure Python, deterministic, valid XML).

Renderers per kind of space, each taking plain data (no space imported here):

- :mod:`nas.diagram.cell`: cells as graphs (NASNet-style: two inputs, blocks with op-labelled edges, the concat);
- :mod:`nas.diagram.fabric`: a path on a multi-resolution fabric (HyTra: blocks x layers across resolution levels);
- :mod:`nas.diagram.chain`: a chain of layers in stages (MBConv).

A space draws its architectures by implementing :class:`Diagram` (``diagram(arch) -> str``); :func:`draw` is what
the API, the CLI and the SDK's local rendering call. A new space (FBNetV5's task masks, say) adds a ``diagram``
method, using these renderers or its own, and nothing else changes.

Every document's root ``<svg>`` carries ``data-testid="arch-diagram"`` and ``data-kind``; every node and edge is a
``<g>`` with a ``<title>`` tooltip and ``data-*`` attributes (see the renderers).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

from nas.errors import InvalidInput

if TYPE_CHECKING:
    from nas.arch import Architecture
    from nas.space import SearchSpace

MEDIA_TYPE = "image/svg+xml"


@runtime_checkable
class Diagram(Protocol):
    """A space that draws its architectures: ``diagram(arch)`` validates ``arch`` (InvalidInput naming the field)
    and returns an SVG document."""

    def diagram(self, arch: Architecture) -> str: ...


def can_draw(space: SearchSpace) -> bool:
    return isinstance(space, Diagram)


def draw(space: SearchSpace, arch: Architecture) -> str:
    """The SVG diagram of ``arch``; InvalidInput when it is not an architecture of ``space`` or the space draws none."""
    if not isinstance(space, Diagram):
        raise InvalidInput("architecture.space", f"space {space.name!r} does not draw architecture diagrams")
    space.check_space(arch)
    return space.diagram(arch)


__all__ = ["MEDIA_TYPE", "Diagram", "can_draw", "draw"]
