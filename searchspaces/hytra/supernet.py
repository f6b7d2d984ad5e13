"""Single-path weight-sharing supernet of the HyTra space, with the block-wise interface BossNAS trains through.

Sharing (BossNAS): layer i holds one module per op it can run (``layers.{i}.{op}``); an op holds an input branch
for every level its input can come from on some candidate path ('same': from its own level, 'down': stride 2 from
the level above) and shares its body between them. Block 0's first layer reads the stem through a stem adapter per
level (``adapters.{level}``), shared by the ops of that level. There is a classifier per level the last block can
end at (``classifier.{level}``: 14x14 or 7x7). Only the active path runs, so a step costs what the standalone subnet
costs.

It implements :class:`nas.supernet.BlockwiseSupernet` (levels as in :mod:`searchspaces.hytra.encoding`; a *start
level* is always the level of the tensor a block reads): ``block_paths(k, start_level=None)`` gives the candidates of
block k (None: all, 51 / 115 / 80 / 80) or those that run on an input at ``start_level`` (BossNAS's list for that
level, see :mod:`searchspaces.hytra.paths`); ``block_modules(0)``
includes the stem and the stem adapters; ``level_shape(level)`` is HyTra's own.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from nas.errors import InvalidInput
from nas.supernet import BlockPath, BlockwiseSupernet, Supernet, fitting, inherit_weights
from searchspaces.hytra.encoding import LAYERS_PER_BLOCK, NUM_BLOCKS, NUM_LEVELS, OP_KIND, OP_LEVEL, STEM_LEVEL
from searchspaces.hytra.network import (
    LayerSpec,
    build_stem,
    fill_hytra_macro,
    level_widths,
    make_layer,
    stem_output_size,
)
from searchspaces.hytra.ops import StemAdapter, init_weights
from searchspaces.hytra.paths import (
    block_candidates,
    completes,
    end_level,
    paths_from,
    start_levels,
)

if TYPE_CHECKING:
    from nas.arch import Architecture
    from searchspaces.hytra.space import HyTraMacro, HyTraSpace

Path = BlockPath


def _branch(i: int, level: int, prev: int) -> str:
    return "same" if i == 0 or level == prev else "down"


class HyTraSupernet(Supernet, BlockwiseSupernet):
    """The HyTra supernet over a search-form macro (see the module docstring)."""

    mode = "single_path"
    num_blocks = NUM_BLOCKS

    def __init__(self, space: HyTraSpace, macro: HyTraMacro) -> None:
        super().__init__()
        m = fill_hytra_macro(macro.model_dump())
        if m["form"] != "search":
            raise InvalidInput("macro.form", "the supernet is the search-space network; use form='search'")
        self.space = space
        self.macro = macro
        self._m = m
        self.widths, self.planes = level_widths(m)
        self.stem = build_stem(m)
        stem_c = int(m["stem_channels"])
        self.adapters = nn.ModuleDict(
            {
                str(lv): StemAdapter(stem_c, self.planes[lv], 2**lv)
                for lv in sorted({OP_LEVEL[p[0]] for p in block_candidates(0)})
            }
        )
        inputs: list[dict[int, dict[str, int]]] = [{} for _ in range(NUM_BLOCKS * LAYERS_PER_BLOCK)]
        for k in range(NUM_BLOCKS):
            for s in start_levels(k):
                for path in paths_from(k, s):
                    prev = s
                    for j, op in enumerate(path):
                        i, lv = k * LAYERS_PER_BLOCK + j, OP_LEVEL[op]
                        c_in = self.planes[lv] if i == 0 else self.widths[prev]
                        inputs[i].setdefault(op, {})[_branch(i, lv, prev)] = c_in
                        prev = lv
        rate, n = float(m["drop_path"]), len(inputs)
        self.layers = nn.ModuleList(
            [
                nn.ModuleDict(
                    {
                        str(op): make_layer(
                            LayerSpec(OP_KIND[op], 0, self.planes[OP_LEVEL[op]], self.widths[OP_LEVEL[op]], "", 0,
                                      rate * i / (n - 1)),
                            {b: branches[b] for b in sorted(branches)},
                            m,
                        )
                        for op, branches in sorted(layer.items())
                    }
                )
                for i, layer in enumerate(inputs)
            ]
        )  # fmt: skip
        self.dropout = nn.Dropout(float(m["dropout"]))
        last = NUM_BLOCKS - 1
        self.classifier = nn.ModuleDict(
            {
                str(lv): nn.Linear(self.widths[lv], int(m["num_classes"]))
                for lv in sorted({end_level(p) for p in block_candidates(last)})
            }
        )
        init_weights(self)
        self.active: Architecture | None = None
        self._paths: list[Path] = []
        self._out_level = NUM_LEVELS - 1  # the level of the last block output computed (what the head reads)
        self.set_active(space.make({"blocks": [list(p) for p in self.reference_paths()]}))

    # --- routing -----------------------------------------------------------------------------------------------
    def set_active(self, arch: Architecture) -> None:
        self.space.validate(arch)
        self._paths = self.paths_of(arch)
        self.active = arch

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem_forward(x)
        level = STEM_LEVEL
        for k, path in enumerate(self._paths):
            x = self._run_block(k, x, path, level)
            level = end_level(path)
        return self.head_forward(x, level)

    # --- block-wise interface ----------------------------------------------------------------------------------
    def stem_forward(self, x: Tensor) -> Tensor:
        """The stem's output (level 0)."""
        return self.stem(x)  # type: ignore[no-any-return]

    def block_paths(self, k: int, start_level: int | None = None) -> list[Path]:
        """Candidates of block ``k``: all (None) or those that can run on an input at ``start_level``."""
        self._check_block(k)
        if start_level is None:
            return list(block_candidates(k))
        return list(paths_from(k, int(start_level)))

    def path_start_levels(self, k: int) -> list[int]:
        """Input levels block ``k`` can read (block 0: the stem's level 0)."""
        self._check_block(k)
        return list(start_levels(k))

    def path_end_level(self, k: int, path: Sequence[int]) -> int:
        """The level of block ``k``'s output on ``path``."""
        self._check_block(k)
        return end_level(tuple(path))

    def path_completes(self, k: int, path: Sequence[int]) -> bool:
        """Whether the later blocks can follow ``path`` (False only for block 0's [5, 5, 5, 5] and block 1's
        [4, 4, 4, 4]: the next block cannot read their end level); greedy combination should pick among these."""
        self._check_block(k)
        return completes(k, tuple(int(o) for o in path))

    def forward_block(self, k: int, x: Tensor, path: Sequence[int], start_level: int) -> Tensor:
        """Run block ``k`` on ``path``; ``x`` is the previous block's output (the stem's for block 0) at
        ``start_level``."""
        self._check_block(k)
        p = tuple(int(o) for o in path)
        if p not in paths_from(k, int(start_level)):
            allowed = "; ".join(f"level {s}" for s in start_levels(k))
            raise InvalidInput(
                "path", f"{list(p)} is not a candidate of block {k} on an input at level {start_level} ({allowed})"
            )
        return self._run_block(k, x, p, int(start_level))

    def _run_block(self, k: int, x: Tensor, path: Path, level: int) -> Tensor:
        if k == 0:
            x = self.adapters[str(OP_LEVEL[path[0]])](x)
        base = k * LAYERS_PER_BLOCK
        for j, op in enumerate(path):
            lv = OP_LEVEL[op]
            ops: nn.ModuleDict = self.layers[base + j]  # type: ignore[assignment]
            x = ops[str(op)](x, _branch(base + j, lv, level))
            level = lv
        self._out_level = level
        return x

    def head_forward(self, x: Tensor, level: int | None = None) -> Tensor:
        """Logits from the last block's output at ``level`` (global average pool -> dropout -> the classifier of
        that level); None: the level of the last block output this supernet computed."""
        lv = self._out_level if level is None else int(level)
        if str(lv) not in self.classifier:
            allowed = ", ".join(self.classifier.keys())
            raise InvalidInput("level", f"the last block ends at levels {allowed}, got {lv}")
        head: nn.Module = self.classifier[str(lv)]
        return head(self.dropout(x.mean((2, 3))))  # type: ignore[no-any-return]

    def block_modules(self, k: int) -> list[nn.Module]:
        """The modules holding block ``k``'s weights (block 0 also owns the stem and the stem adapters)."""
        self._check_block(k)
        layers = list(self.layers[k * LAYERS_PER_BLOCK : (k + 1) * LAYERS_PER_BLOCK])
        return [self.stem, self.adapters, *layers] if k == 0 else layers

    def level_shape(self, level: int) -> tuple[int, int]:
        """(channels, side) of a tensor at ``level`` for the macro's ``image_size``."""
        if not 0 <= level < NUM_LEVELS:
            raise InvalidInput("level", f"must be in 0..{NUM_LEVELS - 1}, got {level}")
        size = stem_output_size(int(self._m["image_size"]), str(self._m["stem"]))
        for _ in range(level):
            size = math.ceil(size / 2)
        return self.widths[level], size

    def block_output_shape(self, k: int, path: Sequence[int]) -> tuple[int, int]:
        return self.level_shape(self.path_end_level(k, path))

    def arch_from_paths(self, paths: Sequence[Sequence[int]]) -> Architecture:
        return self.space.make({"blocks": [[int(o) for o in p] for p in paths]})

    def paths_of(self, arch: Architecture) -> list[Path]:
        return [tuple(int(o) for o in p) for p in arch.choices["blocks"]]

    def reference_paths(self) -> list[Path]:
        """A fixed all-ResConv path per block that hands block k its input at its default level 0, 1, 2, 2
        (BossNAS's lists before a path is chosen: 51 / 99 / 80 / 80 candidates, the most on any input level of
        the block). For training blocks independently."""
        return [(5, 5, 5, 4), (4, 4, 4, 3), (3, 3, 3, 3), (1, 1, 1, 1)]

    def _check_block(self, k: int) -> None:
        if not 0 <= int(k) < NUM_BLOCKS:
            raise InvalidInput("block", f"must be in 0..{NUM_BLOCKS - 1}, got {k}")

    # --- extraction --------------------------------------------------------------------------------------------
    def _source_key(self, key: str, paths: list[Path]) -> str:
        parts = key.split(".")
        if parts[0] == "adapter":
            return ".".join(["adapters", str(OP_LEVEL[paths[0][0]]), *parts[1:]])
        if parts[0] == "classifier":
            return ".".join(["classifier", str(end_level(paths[-1])), *parts[1:]])
        if parts[0] == "layers":
            i = int(parts[1])
            op = paths[i // LAYERS_PER_BLOCK][i % LAYERS_PER_BLOCK]
            return ".".join(["layers", parts[1], str(op), *parts[2:]])
        return key

    @torch.no_grad()
    def extract(self, arch: Architecture) -> nn.Module:
        """``space.build(arch, macro)`` carrying this supernet's weights for the path ``arch``."""
        net = self.space.build(arch, self.macro)
        paths = self.paths_of(arch)
        source = self.state_dict()
        return inherit_weights(net, self, lambda key, t: fitting(source, self._source_key(key, paths), key, t))
