"""MBConv architectures as diagrams: the chain of stem, searched stages, tail and head (:mod:`nas.diagram.chain`)."""

from __future__ import annotations

from nas.arch import Architecture
from nas.diagram.chain import ChainLayer, ChainStage, draw_chain
from searchspaces.mbconv.encoding import (
    MBCONV_FIRST_WIDTH,
    MBCONV_OP_NAMES,
    MBCONV_OPS,
    MBCONV_STAGES,
    MBCONV_STEM_WIDTH,
    MBCONV_TAIL,
    MBCONV_TAIL_OP,
)


def _label(op: int) -> str:
    expansion, kernel = MBCONV_OPS[op]
    return f"MB{expansion:g} {kernel}x{kernel}"


def stages_of(arch: Architecture) -> list[ChainStage]:
    stem = ChainStage(
        "stem",
        f"stem: {MBCONV_STEM_WIDTH}, {MBCONV_FIRST_WIDTH} ch",
        [
            ChainLayer(
                "conv 3x3",
                f"3x3 conv to {MBCONV_STEM_WIDTH} channels, BN, SiLU (stride: macro stem_stride)",
                "stem_conv",
            ),
            ChainLayer("MB1 3x3", f"depthwise-separable 3x3 (SE 0.25) to {MBCONV_FIRST_WIDTH} channels", "mb1_3x3"),
        ],
        searched=False,
    )
    stages = [stem]
    for k, ((width, stride, _), path) in enumerate(zip(MBCONV_STAGES, arch.choices["blocks"], strict=True)):
        layers = [
            ChainLayer(
                _label(int(op)),
                f"{MBCONV_OP_NAMES[int(op)]} (op {int(op)}) to {width} channels",
                str(int(op)),
                stride if j == 0 else 1,
                tone=int(op),
            )
            for j, op in enumerate(path)
        ]
        stages.append(ChainStage(f"stage{k + 1}", f"stage {k + 1}: {width} ch", layers))
    tail_width, tail_stride = MBCONV_TAIL
    stages.append(
        ChainStage(
            "tail",
            f"tail: {tail_width} ch",
            [
                ChainLayer(
                    _label(MBCONV_TAIL_OP),
                    f"{MBCONV_OP_NAMES[MBCONV_TAIL_OP]} to {tail_width} channels (fixed)",
                    "tail",
                    tail_stride,
                ),
                ChainLayer("head", "1x1 conv to head_channels, BN, SiLU, global average pool, dropout, linear", "head"),
            ],
            searched=False,
        )
    )
    return stages


def draw(arch: Architecture) -> str:
    """A valid MBConv architecture (validate it first) as an SVG document."""
    return draw_chain(
        stages_of(arch),
        title=f"bossnas-mbconv architecture {arch.hash}",
        legend=[(i, name) for i, name in enumerate(MBCONV_OP_NAMES)],
        description="Searched stages in grey bands, each layer's op by colour; /2 marks a stride-2 layer.",
    )
