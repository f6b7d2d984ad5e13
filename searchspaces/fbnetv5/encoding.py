"""The FBNetV5 space's structure: FBNetV3-A's blocks, the HRNet-like plan of paths, stages, blocks and fusion
edges, and which of them an architecture's masks cover.

Pure Python (no torch): shared by the space, the networks and the standalone export.

An architecture is ``{"blocks": [[[bit] * searchable blocks of path p in stage s] for p in paths of s] for s in
stages], "fusion": [[bit] * edges of boundary b] for b in boundaries]}``. A bit is 1 (keep) or 0 (skip); with the
hybrid extension a block of the H/16 or H/32 path may also be 2 (a transformer block instead of the IRF block).
"""

import math

# FBNetV3-A in mobile-vision notation, one group per entry: (kernel, expansion, se, width, stride, repeats[, pad]).
# pad: FBNetV3-A's public definition pads the depthwise conv of two stride-2 blocks differently from k // 2
# (28 -> 13 -> 6 at 224 px); the networks use it when the macro's ``native_padding`` is on (the preset).
FBNETV3A_STEM_WIDTH = 16  # [conv_k3_hs 16 s2]
FBNETV3A_STEM_BLOCKS = ((3, 1.0, False, 16, 1, 2),)  # [ir_k3_hs 16 s1 n2 e1]
FBNETV3A_PATHS = (
    ((5, 4.0, False, 24, 2, 1), (5, 2.0, False, 24, 1, 3)),  # H/4
    ((5, 5.0, True, 40, 2, 1), (5, 3.0, True, 40, 1, 4)),  # H/8
    (  # H/16
        (5, 5.0, False, 72, 2, 1, 1),
        (3, 3.0, False, 72, 1, 4),
        (3, 5.0, True, 120, 1, 1),
        (5, 3.0, True, 120, 1, 5),
    ),
    ((3, 6.0, True, 184, 2, 1, 0), (5, 4.0, True, 184, 1, 5), (5, 6.0, True, 224, 1, 1)),  # H/32
)
FBNETV3A_HEAD = (1984, 6.0)  # [ir_pool_hs 1984 e6]: width, expansion
# [assumed] the block a path repeats in the stages after its own: its last residual FBNetV3-A block, at the path's
# final width (H/32: FBNetV3-A has no residual block at 224, so its 184-wide one: k5 e4 SE).
EXTRA_BLOCKS = ((5, 2.0, False), (5, 3.0, True), (5, 3.0, True), (5, 4.0, True))  # (kernel, expansion, se)
NUM_PATHS = 4
HYBRID_PATHS = (2, 3)  # H/16 and H/32: where a block may be a transformer block
TASK_NAMES = ("classification", "segmentation", "detection")
SKIP, IRF_BLOCK, TRANSFORMER = 0, 1, 2


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round to a multiple of ``divisor`` (at least ``divisor``), never more than 10% below (the timm rule)."""
    new = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * value else new


def scaled(width: int, mult: float) -> int:
    return width if mult == 1.0 else make_divisible(width * mult)


def repeats(n: int, depth_mult: float) -> int:
    return n if depth_mult == 1.0 else max(1, math.ceil(n * depth_mult))


def paths_in_stage(stage: int) -> int:
    """Paths stage ``stage`` runs: HRNet style, path p starts at stage p."""
    return min(stage + 1, NUM_PATHS)


def fusion_edges(boundary: int) -> list[tuple[int, int]]:
    """(source, target) paths of the fusion between stage ``boundary`` and the next, target-major."""
    n = paths_in_stage(boundary)
    return [(src, dst) for dst in range(n) for src in range(n) if src != dst]


def block_plan(structure: dict, width_mult: float = 1.0, native_padding: bool = False) -> list[list[list[dict]]]:
    """Every block: ``plan[stage][path]`` lists dicts with ``c_in, c_out, kernel, expansion, se, stride``,
    ``padding`` (None: k // 2), ``searchable`` (a residual block: stride 1 and width kept; the others are always
    kept), ``main`` (one of FBNetV3-A's blocks), ``key`` (module name) and ``slot`` (its index among the stage-path's
    searchable blocks, or None). ``structure`` holds ``stages``, ``extra_blocks`` and ``depth_mult``."""
    stages, extra, depth = int(structure["stages"]), int(structure["extra_blocks"]), float(structure["depth_mult"])
    width = [scaled(FBNETV3A_PATHS[p][-1][3], width_mult) for p in range(NUM_PATHS)]
    stem_out = scaled(FBNETV3A_STEM_BLOCKS[-1][3], width_mult)
    plan: list[list[list[dict]]] = []
    for s in range(stages):
        row: list[list[dict]] = []
        for p in range(paths_in_stage(s)):
            groups: list[tuple[int, float, bool, int, int, int, bool, int | None]] = []
            if s == p:
                c_in = stem_out if p == 0 else width[p - 1]
                for g in FBNETV3A_PATHS[p]:
                    k, e, se, c, st, n = g[:6]
                    pad = g[6] if native_padding and len(g) > 6 else None
                    groups.append((k, e, se, scaled(c, width_mult), st, repeats(n, depth), True, pad))
            else:
                c_in = width[p]
                k, e, se = EXTRA_BLOCKS[p]
                groups = [(k, e, se, width[p], 1, extra, False, None)]
            blocks: list[dict] = []
            slot = 0
            for k, e, se, c_out, stride, n, main, pad in groups:
                for i in range(n):
                    st = stride if i == 0 else 1
                    searchable = st == 1 and c_in == c_out
                    blocks.append(
                        {
                            "key": f"s{s}_p{p}_b{len(blocks)}",
                            "c_in": c_in,
                            "c_out": c_out,
                            "kernel": k,
                            "expansion": e,
                            "se": se,
                            "stride": st,
                            "padding": pad if i == 0 else None,
                            "searchable": searchable,
                            "main": main,
                            "slot": slot if searchable else None,
                        }
                    )
                    slot += int(searchable)
                    c_in = c_out
            row.append(blocks)
        plan.append(row)
    return plan


def path_widths(width_mult: float = 1.0) -> list[int]:
    """Output width of each path (24, 40, 120, 224 scaled)."""
    return [scaled(FBNETV3A_PATHS[p][-1][3], width_mult) for p in range(NUM_PATHS)]


def mask_shape(structure: dict) -> list[list[int]]:
    """Searchable blocks per stage and path: ``shape[stage][path]``."""
    return [[sum(b["searchable"] for b in blocks) for blocks in row] for row in block_plan(structure)]


def head_paths(macro: dict) -> dict[str, list[int]]:
    """The paths each requested task's head reads (classification: ``cls_paths``; segmentation: all four;
    detection: ``det_path``)."""
    out: dict[str, list[int]] = {}
    for task in macro["tasks"]:
        if task == "classification":
            out[task] = sorted({int(p) for p in macro["cls_paths"]})
        elif task == "segmentation":
            out[task] = list(range(NUM_PATHS))
        else:
            out[task] = [int(macro["det_path"])]
    return out


def live_paths(choices: dict, structure: dict, outputs: list[int]) -> list[set[int]]:
    """``live[s]``: the paths whose output at the end of stage ``s`` reaches a head reading ``outputs`` (the paths
    of the last stage the heads read) through the kept fusion edges and the transitions to new paths. The networks
    build and run only these."""
    stages = int(structure["stages"])
    live: list[set[int]] = [set() for _ in range(stages)]
    live[-1] = {p for p in outputs if p < paths_in_stage(stages - 1)}
    for b in range(stages - 2, -1, -1):
        n = paths_in_stage(b)
        needed = {q for q in live[b + 1] if q < n}
        if n < paths_in_stage(b + 1) and n in live[b + 1]:
            needed.add(n - 1)  # the new path starts from the last path's fused output
        have = set(needed)
        for (src, dst), bit in zip(fusion_edges(b), choices["fusion"][b], strict=True):
            if bit and dst in needed:
                have.add(src)
        live[b] = have
    return live


def fused_targets(choices: dict, structure: dict, outputs: list[int]) -> list[set[int]]:
    """``targets[b]``: the paths whose fused output after boundary ``b`` is needed (see :func:`live_paths`)."""
    stages = int(structure["stages"])
    live = live_paths(choices, structure, outputs)
    out: list[set[int]] = []
    for b in range(stages - 1):
        n = paths_in_stage(b)
        needed = {q for q in live[b + 1] if q < n}
        if n < paths_in_stage(b + 1) and n in live[b + 1]:
            needed.add(n - 1)
        out.append(needed)
    return out
