"""FBNetV5 architectures as diagrams (:mod:`nas.diagram.chain`): one column per stage and path with its blocks (kept
IRF, transformer or skipped; fixed blocks white), one per boundary with its kept fusion edges, then the heads."""

from __future__ import annotations

from nas.arch import Architecture
from nas.diagram.chain import ChainLayer, ChainStage, draw_chain
from searchspaces.fbnetv5.encoding import FBNETV3A_STEM_WIDTH, SKIP, TRANSFORMER, block_plan, fusion_edges

PATH_NAMES = ("H/4", "H/8", "H/16", "H/32")
LEGEND = [(0, "IRF block kept"), (1, "transformer block (hybrid)"), (2, "skipped"), (3, "fusion edge kept")]


def _block(b: dict, op: int) -> ChainLayer:
    name = f"ir_k{b['kernel']}{'_sehsig' if b['se'] else ''}_hs e{b['expansion']:g} -> {b['c_out']}"
    if b["slot"] is None:
        return ChainLayer(f"k{b['kernel']} e{b['expansion']:g}", f"{name} (always kept)", "fixed", b["stride"])
    if op == SKIP:
        return ChainLayer("skip", f"{name}: skipped (mask 0)", "0", b["stride"], tone=2)
    if op == TRANSFORMER:
        return ChainLayer("attn", f"transformer block at {b['c_out']} channels (value 2)", "2", b["stride"], tone=1)
    return ChainLayer(f"k{b['kernel']} e{b['expansion']:g}", f"{name} (mask 1)", "1", b["stride"], tone=0)


def stages_of(arch: Architecture, structure: dict) -> list[ChainStage]:
    choices = arch.choices
    out = [
        ChainStage(
            "stem",
            f"stem: {FBNETV3A_STEM_WIDTH} ch",
            [ChainLayer("conv 3x3", "conv_k3_hs 16, then ir_k3_hs 16 e1 x2", "stem", 2)],
            searched=False,
        )
    ]
    for s, row in enumerate(block_plan(structure)):
        for p, blocks in enumerate(row):
            layers = [_block(b, 1 if b["slot"] is None else int(choices["blocks"][s][p][b["slot"]])) for b in blocks]
            out.append(ChainStage(f"s{s}p{p}", f"stage {s}, {PATH_NAMES[p]}", layers))
        if s < len(choices["fusion"]):
            kept = [
                ChainLayer(f"{src}->{dst}", f"fusion edge {PATH_NAMES[src]} -> {PATH_NAMES[dst]}", "edge", tone=3)
                for (src, dst), bit in zip(fusion_edges(s), choices["fusion"][s], strict=True)
                if bit
            ]
            if kept:
                out.append(ChainStage(f"f{s}", f"fusion after stage {s}", kept))
    out.append(
        ChainStage(
            "heads",
            "task heads",
            [ChainLayer("heads", "classification / segmentation / detection heads (macro.tasks)", "heads")],
            searched=False,
        )
    )
    return out


def draw(arch: Architecture, structure: dict) -> str:
    """A valid FBNetV5 architecture (validate it first) as an SVG document."""
    return draw_chain(
        stages_of(arch, structure),
        title=f"fbnetv5 architecture {arch.hash}",
        legend=LEGEND,
        description="Columns are the blocks of each stage on each path (H/4..H/32) and the kept fusion edges between "
        "stages; /2 marks a stride-2 block.",
    )
