"""NASNet architectures as diagrams: the normal and the reduction cell side by side (:mod:`nas.diagram.cell`)."""

from __future__ import annotations

from typing import Any

from nas.arch import Architecture
from nas.diagram.cell import Cell, CellBlock, draw_cells
from searchspaces.nasnet.genotype import CELL_TYPES, live_blocks

CELL_TITLES = {"normal": "normal cell", "reduce": "reduction cell (stride 2 on its inputs)"}


def cell_of(name: str, choices: dict[str, Any]) -> Cell:
    blocks = [CellBlock((int(b[0]), int(b[2])), (str(b[1]), str(b[3]))) for b in choices["blocks"]]
    concat = [int(j) for j in choices["concat"]]
    return Cell(
        name=name,
        title=CELL_TITLES.get(name, name),
        blocks=blocks,
        concat=concat,
        live=live_blocks(choices["blocks"], concat),
    )


def draw(arch: Architecture) -> str:
    """A valid NASNet architecture (validate it first) as an SVG document."""
    cells = [cell_of(t, arch.choices[t]) for t in CELL_TYPES]
    return draw_cells(
        cells,
        title=f"nasnet architecture {arch.hash}",
        description="Each block adds two op outputs; c[k-2] and c[k-1] are the outputs of the two previous cells; "
        "the concat of the listed states is the cell's output. Dashed blocks do not reach it and are not built.",
        kind="nasnet-cells",
    )
