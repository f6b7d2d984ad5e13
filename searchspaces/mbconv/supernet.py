"""Single-path supernet of BossNAS's MBConv space; it implements :class:`nas.supernet.BlockwiseSupernet`.

Layer i holds its 4 candidate ops (``layers.{i}.ops.{op}``) and one residual shortcut shared by them (as in the
public code, where the candidates of a layer share one down-sampling module). The 5 searched stages are the blocks;
the fixed [320,1,1] layer belongs to the head. There is no resolution choice: every block reads and writes "level
0", ``path_start_levels(k) == [0]``; per-block shapes come from ``block_output_shape(k, path)``.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from nas.errors import InvalidInput
from nas.ops.mbconv import ResidualShortcut
from nas.supernet import BlockPath, BlockwiseSupernet, Supernet, fitting, inherit_weights
from searchspaces.mbconv.encoding import MBCONV_OPS, MBCONV_STAGES
from searchspaces.mbconv.network import (
    MBConvHead,
    build_mbconv_stem,
    fill_mbconv_macro,
    make_mbconv_op,
    mbconv_layer_plan,
    mbconv_sizes,
)

if TYPE_CHECKING:
    from nas.arch import Architecture
    from searchspaces.mbconv.space import MBConvMacro, MBConvSpace

Path = BlockPath


class SuperMBLayer(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.ops = nn.ModuleDict({str(o): make_mbconv_op(o, c_in, c_out, stride) for o in range(len(MBCONV_OPS))})
        self.shortcut = ResidualShortcut(c_in, c_out, stride)

    def forward(self, x: Tensor, op: int) -> Tensor:
        return self.ops[str(op)](x) + self.shortcut(x)  # type: ignore[no-any-return]


class MBConvSupernet(Supernet, BlockwiseSupernet):
    mode = "single_path"
    num_blocks = len(MBCONV_STAGES)

    def __init__(self, space: MBConvSpace, macro: MBConvMacro) -> None:
        super().__init__()
        m = fill_mbconv_macro(macro.model_dump())
        self.space = space
        self.macro = macro
        self._m = m
        self.plan = mbconv_layer_plan(m)
        self.offsets = [0, *itertools.accumulate(len(stage) for stage in self.plan)]
        self.stem = build_mbconv_stem(m)
        self.layers = nn.ModuleList([SuperMBLayer(*spec) for stage in self.plan for spec in stage])
        self.head = MBConvHead(m)
        self.active: Architecture | None = None
        self._paths: list[Path] = []
        self.set_active(space.sample(random.Random(0)))

    def set_active(self, arch: Architecture) -> None:
        self.space.validate(arch)
        self._paths = self.paths_of(arch)
        self.active = arch

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem_forward(x)
        for k, path in enumerate(self._paths):
            x = self._run_block(k, x, path)
        return self.head_forward(x)

    # --- block-wise interface ----------------------------------------------------------------------------------
    def stem_forward(self, x: Tensor) -> Tensor:
        return self.stem(x)  # type: ignore[no-any-return]

    def block_paths(self, k: int, start_level: int | None = None) -> list[Path]:
        """All 4^layers op sequences of block ``k`` (the start level is always 0)."""
        self._check_block(k)
        if start_level not in (None, 0):
            return []
        return list(itertools.product(range(len(MBCONV_OPS)), repeat=len(self.plan[k])))

    def path_start_levels(self, k: int) -> list[int]:
        self._check_block(k)
        return [0]

    def path_end_level(self, k: int, path: Sequence[int]) -> int:
        self._check_block(k)
        return 0

    def path_completes(self, k: int, path: Sequence[int]) -> bool:
        """Always True: any path of a block can be followed by any path of the next."""
        self._check_block(k)
        return True

    def forward_block(self, k: int, x: Tensor, path: Sequence[int], start_level: int = 0) -> Tensor:
        self._check_block(k)
        p = tuple(int(o) for o in path)
        if start_level != 0:
            raise InvalidInput("start_level", f"the MBConv space has one level (0), got {start_level}")
        if len(p) != len(self.plan[k]) or any(not 0 <= o < len(MBCONV_OPS) for o in p):
            raise InvalidInput("path", f"block {k} needs {len(self.plan[k])} op indices in 0..3, got {list(p)}")
        return self._run_block(k, x, p)

    def _run_block(self, k: int, x: Tensor, path: Path) -> Tensor:
        for j, op in enumerate(path):
            x = self.layers[self.offsets[k] + j](x, op)
        return x

    def head_forward(self, x: Tensor) -> Tensor:
        """Logits from the last searched block's output (the fixed 320 layer, 1x1 conv head, pool, linear)."""
        return self.head(x)  # type: ignore[no-any-return]

    def block_modules(self, k: int) -> list[nn.Module]:
        """Block ``k``'s layers (block 0 also owns the fixed stem)."""
        self._check_block(k)
        layers = list(self.layers[self.offsets[k] : self.offsets[k + 1]])
        return [self.stem, *layers] if k == 0 else layers

    def level_shape(self, level: int) -> tuple[int, int]:
        """The only level (0): (channels, side) of the last searched block's output."""
        if level != 0:
            raise InvalidInput("level", f"the MBConv space has one level (0), got {level}")
        return self.block_output_shape(self.num_blocks - 1, ())

    def block_output_shape(self, k: int, path: Sequence[int] = ()) -> tuple[int, int]:
        """(channels, side) of block ``k``'s output for the macro's ``image_size`` (the same for every path)."""
        self._check_block(k)
        return self.plan[k][-1][1], mbconv_sizes(self._m)[k + 1]

    def reference_paths(self) -> list[Path]:
        """Op 0 (MB6 3x3) in every layer: with one level, every candidate of a block runs on any input."""
        return [(0,) * len(stage) for stage in self.plan]

    def arch_from_paths(self, paths: Sequence[Sequence[int]]) -> Architecture:
        return self.space.make({"blocks": [[int(o) for o in p] for p in paths]})

    def paths_of(self, arch: Architecture) -> list[Path]:
        return [tuple(int(o) for o in p) for p in arch.choices["blocks"]]

    def _check_block(self, k: int) -> None:
        if not 0 <= int(k) < self.num_blocks:
            raise InvalidInput("block", f"must be in 0..{self.num_blocks - 1}, got {k}")

    # --- extraction --------------------------------------------------------------------------------------------
    @torch.no_grad()
    def extract(self, arch: Architecture) -> nn.Module:
        net = self.space.build(arch, self.macro)
        ops = [o for p in self.paths_of(arch) for o in p]
        source = self.state_dict()

        def source_key(key: str) -> str:
            parts = key.split(".")
            if parts[0] == "layers" and parts[2] == "op":
                return ".".join(["layers", parts[1], "ops", str(ops[int(parts[1])]), *parts[3:]])
            return key

        return inherit_weights(net, self, lambda key, t: fitting(source, source_key(key), key, t))
