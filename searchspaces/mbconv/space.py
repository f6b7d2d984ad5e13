"""BossNAS's MBConv space (the space of its ranking study, spec section 5): 5 searched stages of 2/4/4/4/4 layers,
4 candidate ops per layer (MB6/MB3 x 3x3/5x5, SE 0.25, SiLU), every layer residual (see docs/hytra.md)."""

from __future__ import annotations

import importlib
import itertools
import math
import random
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from nas.arch import Architecture
from nas.errors import InvalidInput
from nas.space import BlockInfo, MacroBase, SearchSpace
from searchspaces.mbconv.encoding import MBCONV_OP_NAMES, MBCONV_OPS, MBCONV_STAGES

if TYPE_CHECKING:
    from torch import nn

    from nas.supernet import Supernet

STANDALONE_MODULES = (
    "nas.ops.se",
    "nas.ops.mbconv",
    "searchspaces.mbconv.encoding",
    "searchspaces.mbconv.network",
)
WHERE = "architecture.choices"
NUM_OPS = len(MBCONV_OPS)
BLOCK_LAYERS = tuple(layers for _, _, layers in MBCONV_STAGES)


class MBConvMacro(MacroBase):
    """ImageNet defaults (stem stride 2, 224 px); for 32x32 data use stem_stride 1 and a smaller width_mult."""

    stem_stride: Literal[1, 2] = Field(2, description="stride of the 3x3 stem conv (1 for 32x32 data)")
    width_mult: float = Field(1.0, gt=0.0, le=8.0, description="width multiplier (multiples of 8, EfficientNet rule)")
    head_channels: int = Field(1280, ge=0, le=16_384, description="1x1 conv head width before pooling (0: none)")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="drop rate before the classifier")
    image_size: int = Field(224, ge=8, le=4096, description="input side the block output shapes are reported for")


class MBConvSpace(SearchSpace):
    """Choices ``{"blocks": [[op] * 2, [op] * 4, [op] * 4, [op] * 4, [op] * 4]}`` with op in 0..3
    (0 = MB6 3x3, 1 = MB6 5x5, 2 = MB3 3x3, 3 = MB3 5x5)."""

    name = "bossnas-mbconv"
    version = "1"
    Macro = MBConvMacro

    def sample(self, rng: random.Random) -> Architecture:
        return self.make({"blocks": [[rng.randrange(NUM_OPS) for _ in range(n)] for n in BLOCK_LAYERS]})

    def mutate(self, arch: Architecture, rng: random.Random, rate: float = 0.1) -> Architecture:
        self.validate(arch)
        blocks = [list(p) for p in arch.choices["blocks"]]
        positions = [(k, j) for k, n in enumerate(BLOCK_LAYERS) for j in range(n)]
        picked = [pos for pos in positions if rng.random() < rate] or [rng.choice(positions)]
        for k, j in picked:
            blocks[k][j] = rng.choice([o for o in range(NUM_OPS) if o != blocks[k][j]])
        return self.make({"blocks": blocks})

    def crossover(self, a: Architecture, b: Architecture, rng: random.Random) -> Architecture:
        self.validate(a)
        self.validate(b)
        blocks = [
            [(a if rng.random() < 0.5 else b).choices["blocks"][k][j] for j in range(n)]
            for k, n in enumerate(BLOCK_LAYERS)
        ]
        return self.make({"blocks": blocks})

    def validate(self, arch: Architecture) -> None:
        self.check_space(arch)
        choices = arch.choices
        if set(choices) != {"blocks"}:
            raise InvalidInput(WHERE, f"must have exactly the key 'blocks', got {sorted(choices)}")
        blocks = choices["blocks"]
        sizes = ", ".join(str(n) for n in BLOCK_LAYERS)
        if not isinstance(blocks, list) or len(blocks) != len(BLOCK_LAYERS):
            raise InvalidInput(f"{WHERE}.blocks", f"must be a list of {len(BLOCK_LAYERS)} blocks of {sizes} op indices")
        for k, (path, n) in enumerate(zip(blocks, BLOCK_LAYERS, strict=True)):
            if not isinstance(path, list) or len(path) != n:
                raise InvalidInput(f"{WHERE}.blocks[{k}]", f"must be a list of {n} op indices (blocks have {sizes})")
            for j, op in enumerate(path):
                if not isinstance(op, int) or isinstance(op, bool) or not 0 <= op < NUM_OPS:
                    names = ", ".join(f"{i} = {name}" for i, name in enumerate(MBCONV_OP_NAMES))
                    raise InvalidInput(f"{WHERE}.blocks[{k}][{j}]", f"{op!r} is not an op index; allowed: {names}")

    def log10_size(self) -> float:
        return sum(BLOCK_LAYERS) * math.log10(NUM_OPS)

    def choices_schema(self) -> dict[str, Any]:
        op = {"type": "integer", "minimum": 0, "maximum": NUM_OPS - 1}
        blocks = [{"type": "array", "items": op, "minItems": n, "maxItems": n} for n in BLOCK_LAYERS]
        return {
            "type": "object",
            "additionalProperties": False,
            "required": ["blocks"],
            "properties": {
                "blocks": {
                    "type": "array",
                    "prefixItems": blocks,
                    "minItems": len(blocks),
                    "maxItems": len(blocks),
                    "description": "op indices per searched stage: "
                    + ", ".join(f"{i} = {n}" for i, n in enumerate(MBCONV_OP_NAMES)),
                }
            },
        }

    def blocks(self) -> list[BlockInfo]:
        return [
            BlockInfo(k, f"stage{k + 1}", list(itertools.product(range(NUM_OPS), repeat=n)))
            for k, n in enumerate(BLOCK_LAYERS)
        ]

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info["ops"] = {str(i): {"name": n} for i, n in enumerate(MBCONV_OP_NAMES)}
        info["block_candidates"] = [NUM_OPS**n for n in BLOCK_LAYERS]
        return info

    def build(self, arch: Architecture, macro: Any = None) -> nn.Module:
        from searchspaces.mbconv.network import build_network

        self.validate(arch)
        return build_network(arch.choices, self.macro(macro).model_dump())

    def supernet(self, macro: Any = None, mode: str = "single_path") -> Supernet:
        if mode != "single_path":
            raise InvalidInput("mode", f"unknown supernet mode {mode!r}; allowed: single_path")
        from searchspaces.mbconv.supernet import MBConvSupernet

        return MBConvSupernet(self, self.macro(macro))  # type: ignore[arg-type]

    def diagram(self, arch: Architecture) -> str:
        """The architecture as an SVG diagram (:class:`nas.diagram.Diagram`; see searchspaces.mbconv.diagram)."""
        from searchspaces.mbconv.diagram import draw

        self.validate(arch)
        return draw(arch)

    def standalone_modules(self) -> list[ModuleType]:
        return [importlib.import_module(name) for name in STANDALONE_MODULES]
