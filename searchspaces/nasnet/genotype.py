"""The NASNet cell encoding: op names, index convention, reference genotypes and conversions. Pure Python.

A cell is ``{"blocks": [[in1, op1, in2, op2] x 5], "concat": [...]}`` in the DARTS/NNI index convention:
0 = output of cell k-2 (h_{i-1}), 1 = output of cell k-1 (h_i), 2..6 = outputs of blocks 0..4. Block b reads
indices < 2 + b. ``concat`` is the sorted list of states concatenated as the cell output. A block combines its two
op outputs by element-wise addition.
"""

from typing import Any

NUM_BLOCKS = 5
NUM_INPUTS = 2
NUM_STATES = NUM_INPUTS + NUM_BLOCKS
CELL_TYPES = ("normal", "reduce")

OP_NAMES: tuple[str, ...] = (
    "skip_connect",
    "conv_3x1_1x3",
    "conv_7x1_1x7",
    "dil_conv_3x3",
    "avg_pool_3x3",
    "max_pool_3x3",
    "max_pool_5x5",
    "max_pool_7x7",
    "conv_1x1",
    "conv_3x3",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "sep_conv_7x7",
)
ATTENTION_OP = "self_attention"
# ops outside the default 13 that a space may list: DARTS's 5x5 dilated conv and its zero op
EXTRA_OPS: tuple[str, ...] = ("dil_conv_5x5", "none")
# named op sets for the space's ``ops`` option
DARTS_OPS: tuple[str, ...] = (  # DARTS's PRIMITIVES, in its order (quark0/darts genotypes.py)
    "none",
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
)
OP_SETS: dict[str, tuple[str, ...]] = {"nasnet": OP_NAMES, "darts": DARTS_OPS}

# op names of the TF reference code (research/slim/nets/nasnet) -> common names
TF_OP_NAMES: dict[str, str] = {
    "none": "skip_connect",
    "separable_3x3_2": "sep_conv_3x3",
    "separable_5x5_2": "sep_conv_5x5",
    "separable_7x7_2": "sep_conv_7x7",
    "avg_pool_3x3": "avg_pool_3x3",
    "max_pool_3x3": "max_pool_3x3",
    "max_pool_5x5": "max_pool_5x5",
    "max_pool_7x7": "max_pool_7x7",
}


def unused_states(blocks: list[list[Any]]) -> list[int]:
    """Block outputs (indices 2..6) that no block of the cell reads: the paper's "unused hidden states"."""
    used = {int(blk[0]) for blk in blocks} | {int(blk[2]) for blk in blocks}
    return [NUM_INPUTS + b for b in range(len(blocks)) if NUM_INPUTS + b not in used]


def live_blocks(blocks: list[list[Any]], concat: list[int]) -> list[bool]:
    """Which blocks contribute to the cell output (reach ``concat`` directly or through later blocks).

    Dead blocks are not built: they would hold weights that never receive a gradient.
    """
    live = [False] * len(blocks)
    need = {int(j) for j in concat}
    for b in range(len(blocks) - 1, -1, -1):
        if NUM_INPUTS + b in need:
            live[b] = True
            need.add(int(blocks[b][0]))
            need.add(int(blocks[b][2]))
    return live


def from_tf(ops: list[str], indices: list[int], used: list[int]) -> dict[str, Any]:
    """Convert a TF-convention cell (index 0 = h_i, 1 = h_{i-1}; ``used[j] = 1`` = state j NOT concatenated).

    Swaps indices 0 and 1; the concat list is the states with ``used == 0``.
    """

    def swap(i: int) -> int:
        return {0: 1, 1: 0}.get(int(i), int(i))

    names = [TF_OP_NAMES.get(o, o) for o in ops]
    blocks = [
        [swap(indices[2 * b]), names[2 * b], swap(indices[2 * b + 1]), names[2 * b + 1]] for b in range(len(ops) // 2)
    ]
    concat = sorted(swap(j) for j, u in enumerate(used) if not u)
    return {"blocks": blocks, "concat": concat}


def from_darts(pairs: list[tuple[str, int]], concat: list[int], pad_to: int = NUM_BLOCKS) -> dict[str, Any]:
    """Convert a DARTS genotype half (``[(op, input), ...]``, two per node, DARTS convention) to a cell.

    DARTS cells have 4 nodes; the encoding has 5 blocks, so missing blocks are filled with a placeholder block
    ``[0, "skip_connect", 0, "skip_connect"]`` that is left out of ``concat`` (dead, hence not built).
    """
    blocks: list[list[Any]] = []
    for b in range(len(pairs) // 2):
        (op1, in1), (op2, in2) = pairs[2 * b], pairs[2 * b + 1]
        blocks.append([int(in1), op1, int(in2), op2])
    while len(blocks) < pad_to:
        blocks.append([0, "skip_connect", 0, "skip_connect"])
    return {"blocks": blocks, "concat": sorted(int(j) for j in concat)}


# --- reference genotypes (spec section 4) ------------------------------------------------------------------------
NASNET_A_TF = {
    "normal": {
        "ops": ["separable_5x5_2", "separable_3x3_2", "separable_5x5_2", "separable_3x3_2", "avg_pool_3x3", "none",
                "avg_pool_3x3", "avg_pool_3x3", "separable_3x3_2", "none"],
        "indices": [0, 1, 1, 1, 0, 1, 1, 1, 0, 0],
        "used": [1, 0, 0, 0, 0, 0, 0],
    },
    "reduce": {
        "ops": ["separable_5x5_2", "separable_7x7_2", "max_pool_3x3", "separable_7x7_2", "avg_pool_3x3",
                "separable_5x5_2", "none", "avg_pool_3x3", "separable_3x3_2", "max_pool_3x3"],
        "indices": [0, 1, 0, 1, 0, 1, 3, 2, 2, 0],
        "used": [1, 1, 1, 0, 0, 0, 0],
    },
}  # fmt: skip

PNASNET_5_TF = {
    "ops": ["separable_5x5_2", "max_pool_3x3", "separable_7x7_2", "max_pool_3x3", "separable_5x5_2",
            "separable_3x3_2", "separable_3x3_2", "max_pool_3x3", "separable_3x3_2", "none"],
    "indices": [1, 1, 0, 0, 0, 0, 4, 0, 1, 0],
    "used": [1, 1, 0, 0, 0, 0, 0],
}  # fmt: skip

DARTS_V2 = {
    "normal": [("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
               ("sep_conv_3x3", 1), ("skip_connect", 0), ("skip_connect", 0), ("dil_conv_3x3", 2)],
    "normal_concat": [2, 3, 4, 5],
    "reduce": [("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 1),
               ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("max_pool_3x3", 1)],
    "reduce_concat": [2, 3, 4, 5],
}  # fmt: skip


def nasnet_a() -> dict[str, Any]:
    return {t: from_tf(**NASNET_A_TF[t]) for t in CELL_TYPES}


def pnasnet_5() -> dict[str, Any]:
    cell = from_tf(**PNASNET_5_TF)
    return {"normal": cell, "reduce": from_tf(**PNASNET_5_TF)}


def darts_v2() -> dict[str, Any]:
    return {
        "normal": from_darts(DARTS_V2["normal"], DARTS_V2["normal_concat"]),
        "reduce": from_darts(DARTS_V2["reduce"], DARTS_V2["reduce_concat"]),
    }
