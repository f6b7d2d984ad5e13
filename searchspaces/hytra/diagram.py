"""HyTra architectures as diagrams: the path through the fabric of blocks x layers x resolution levels
(:mod:`nas.diagram.fabric`)."""

from __future__ import annotations

from nas.arch import Architecture
from nas.diagram.fabric import FabricLayer, draw_fabric
from searchspaces.hytra.encoding import (
    LAYERS_PER_BLOCK,
    LEVEL_NAMES,
    NUM_BLOCKS,
    OP_KIND,
    OP_LEVEL,
    OP_NAMES,
    STEM_LEVEL,
)

KIND_NAMES = {"conv": "ResConv (bottleneck convolution)", "att": "ResAtt (self-attention)"}
KIND_LABELS = {"conv": "Conv", "att": "Att"}


def layers_of(arch: Architecture) -> list[FabricLayer]:
    out = []
    for k, path in enumerate(arch.choices["blocks"]):
        for j, op in enumerate(path):
            op = int(op)
            kind = OP_KIND[op]
            out.append(
                FabricLayer(
                    block=k,
                    layer=j,
                    level=OP_LEVEL[op],
                    kind=kind,
                    label=KIND_LABELS[kind],
                    detail=f"{OP_NAMES[op]} (op {op})",
                )
            )
    return out


def draw(arch: Architecture) -> str:
    """A valid HyTra architecture (validate it first) as an SVG document."""
    return draw_fabric(
        layers_of(arch),
        level_names=LEVEL_NAMES,
        num_blocks=NUM_BLOCKS,
        layers_per_block=LAYERS_PER_BLOCK,
        kind_names=KIND_NAMES,
        title=f"hytra architecture {arch.hash}",
        description="Columns are layers in 4 blocks, rows the resolution levels (sides at 224 px with the ImageNet "
        "stem); a step down a row halves the resolution.",
        stem_level=STEM_LEVEL,
    )
