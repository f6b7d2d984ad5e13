"""The HyTra encoding: 4 blocks x 4 layers, each layer one of 6 ops tied to a resolution level.

Levels count stride-2 steps after the stem: level 0 is the stem's output (56x56 at 224 px with the ImageNet
stem), level 3 the lowest resolution (7x7). The op index fixes both the level and the op type (BossNAS numbering):

    0 ResAtt@7x7   1 ResConv@7x7   2 ResAtt@14x14   3 ResConv@14x14   4 ResConv@28x28   5 ResConv@56x56

Pure Python (no torch): shared by the space, the networks and the standalone export.
"""

NUM_BLOCKS = 4
LAYERS_PER_BLOCK = 4
NUM_LAYERS = NUM_BLOCKS * LAYERS_PER_BLOCK
NUM_LEVELS = 4
STEM_LEVEL = 0
OP_NAMES = ("ResAtt@7x7", "ResConv@7x7", "ResAtt@14x14", "ResConv@14x14", "ResConv@28x28", "ResConv@56x56")
OP_LEVEL = (3, 3, 2, 2, 1, 0)
OP_KIND = ("att", "conv", "att", "conv", "conv", "conv")
NUM_OPS = len(OP_NAMES)
LEVEL_NAMES = ("56x56", "28x28", "14x14", "7x7")  # at 224 px with the ImageNet stem
ATTENTION_LEVELS = tuple(sorted({lv for lv, kind in zip(OP_LEVEL, OP_KIND, strict=True) if kind == "att"}))


def ops_at_level(level: int) -> tuple[int, ...]:
    """The op indices whose layer runs at ``level`` (ResAtt first where offered)."""
    return tuple(o for o in range(NUM_OPS) if OP_LEVEL[o] == level)


def op_of(kind: str, level: int) -> int:
    """The op index of ``kind`` ('att' or 'conv') at ``level``."""
    for o in range(NUM_OPS):
        if OP_KIND[o] == kind and OP_LEVEL[o] == level:
            return o
    raise ValueError(f"no {kind!r} op at level {level}")


def layer_levels(choices: dict) -> list[int]:
    """The level of every layer of a (valid) architecture's choices, in order."""
    return [OP_LEVEL[int(o)] for path in choices["blocks"] for o in path]
