"""The HyTra hybrid CNN-Transformer space of BossNAS (Li et al., ICCV 2021): macro settings, sampling, mutation,
crossover, validation, blocks (see docs/hytra.md)."""

from __future__ import annotations

import importlib
import random
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator

from nas.arch import Architecture
from nas.errors import InvalidInput
from nas.space import BlockInfo, MacroBase, Preset, SearchSpace
from searchspaces.hytra.encoding import (
    LAYERS_PER_BLOCK,
    LEVEL_NAMES,
    NUM_BLOCKS,
    NUM_LEVELS,
    NUM_OPS,
    OP_LEVEL,
    OP_NAMES,
    STEM_LEVEL,
)
from searchspaces.hytra.paths import (
    Path,
    block_candidates,
    check_paths,
    completes,
    end_level,
    log10_num_architectures,
    num_architectures,
    paths_from,
    sample_paths,
    well_formed,
)

if TYPE_CHECKING:
    from torch import nn

    from nas.supernet import Supernet

# modules whose concatenated source defines build_network(choices, macro) (torch only), in dependency order
STANDALONE_MODULES = (
    "nas.ops.drop",
    "nas.ops.se",
    "searchspaces.hytra.encoding",
    "searchspaces.hytra.ops",
    "searchspaces.hytra.network",
)
WHERE = "architecture.choices"


def _four(values: list[int], what: str) -> list[int]:
    if len(values) != NUM_LEVELS:
        raise ValueError(f"must list {NUM_LEVELS} {what}, one per resolution level (highest resolution first)")
    return values


class HyTraMacro(MacroBase):
    """How a HyTra network looks around the searched choices (see docs/hytra.md)."""

    form: Literal["search", "retrain"] = Field(
        "search", description="search: the search-space network of the path; retrain: BossNet's retraining network"
    )
    stem: Literal["imagenet", "small"] = Field(
        "imagenet", description="imagenet: 7x7/2 conv + 3x3/2 max pool; small: 3x3/1 conv (32x32 or smaller data)"
    )
    stem_channels: int = Field(64, ge=1, le=4096)
    widths: list[int] = Field(
        default_factory=lambda: [256, 512, 1024, 2048], description="output width per level (retrain: per stage)"
    )
    bottlenecks: list[int] | None = Field(None, description="bottleneck width per level; None: widths // 4")
    head_dim: int = Field(64, ge=1, le=4096, description="attention head dim; heads = bottleneck // head_dim")
    activation: Literal["relu", "silu"] = "relu"
    se: bool = Field(False, description="squeeze-excitation (reduction 16, min 8) in ResConv (BossNet-T0/T1)")
    drop_path: float = Field(0.0, ge=0.0, lt=1.0, description="ResConv drop-path rate of the last layer (linear)")
    stage_strides: list[int] = Field(
        default_factory=lambda: [1, 2, 2, 2], description="retrain: stride of each stage's first layer (T1: 1,2,2,1)"
    )
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="drop rate before the classifier")
    image_size: int = Field(224, ge=8, le=4096, description="input side the level shapes are reported for")

    @field_validator("widths")
    @classmethod
    def _check_widths(cls, v: list[int]) -> list[int]:
        if any(not 1 <= w <= 65_536 for w in v):
            raise ValueError("widths must be between 1 and 65536")
        return _four(v, "widths")

    @field_validator("bottlenecks")
    @classmethod
    def _check_bottlenecks(cls, v: list[int] | None) -> list[int] | None:
        if v is None:
            return v
        if any(not 1 <= w <= 65_536 for w in v):
            raise ValueError("bottlenecks must be between 1 and 65536")
        return _four(v, "bottlenecks")

    @field_validator("stage_strides")
    @classmethod
    def _check_strides(cls, v: list[int]) -> list[int]:
        if any(s not in (1, 2) for s in v):
            raise ValueError(f"each stride must be 1 or 2, got {v}")
        return _four(v, "strides")

    def planes(self) -> list[int]:
        return list(self.bottlenecks) if self.bottlenecks else [max(1, w // 4) for w in self.widths]


class HyTraSpace(SearchSpace):
    """HyTra: 4 blocks x 4 layers, 6 ops (ResConv at 4 levels, ResAtt at the 2 lowest), searchable down-sampling."""

    name = "hytra"
    version = "1"
    Macro = HyTraMacro

    # --- architectures -----------------------------------------------------------------------------------------
    def sample(self, rng: random.Random) -> Architecture:
        """Uniform over all valid architectures."""
        return self.make({"blocks": [list(p) for p in sample_paths(rng)]})

    def mutate(self, arch: Architecture, rng: random.Random, rate: float = 0.1) -> Architecture:
        """Each of the 16 ops is resampled with probability ``rate`` to a different op that keeps the architecture
        valid (ops are visited in order, so a change of level can enable the next one); at least one changes."""
        self.validate(arch)
        blocks = [list(p) for p in arch.choices["blocks"]]
        positions = [(k, j) for k in range(NUM_BLOCKS) for j in range(LAYERS_PER_BLOCK)]
        changed = False
        for k, j in positions:
            if rng.random() < rate:
                changed |= self._resample(blocks, k, j, rng)
        if not changed:
            for k, j in rng.sample(positions, len(positions)):
                if self._resample(blocks, k, j, rng):
                    break
        return self.make({"blocks": blocks})

    @staticmethod
    def _resample(blocks: list[list[int]], k: int, j: int, rng: random.Random) -> bool:
        current = blocks[k][j]
        options = []
        for op in range(NUM_OPS):
            if op == current:
                continue
            blocks[k][j] = op
            if check_paths([tuple(p) for p in blocks]) is None:
                options.append(op)
        blocks[k][j] = rng.choice(options) if options else current
        return bool(options)

    def crossover(self, a: Architecture, b: Architecture, rng: random.Random) -> Architecture:
        """Each block's path from ``a`` or ``b``, among those that can follow the blocks taken so far and be
        completed (one of the parents always qualifies)."""
        self.validate(a)
        self.validate(b)
        pa, pb = self.paths_of(a), self.paths_of(b)
        level, child = STEM_LEVEL, []
        for k in range(NUM_BLOCKS):
            options = [p[k] for p in (pa, pb) if p[k] in paths_from(k, level) and completes(k, p[k])]
            path = rng.choice(options)
            child.append(list(path))
            level = end_level(path)
        return self.make({"blocks": child})

    def validate(self, arch: Architecture) -> None:
        self.check_space(arch)
        choices = arch.choices
        if set(choices) != {"blocks"}:
            raise InvalidInput(WHERE, f"must have exactly the key 'blocks', got {sorted(choices)}")
        error = well_formed(choices["blocks"])
        if error is None:
            error = check_paths([tuple(p) for p in choices["blocks"]])
        if error is not None:
            raise InvalidInput(f"{WHERE}.blocks{error[0]}", error[1])

    def paths_of(self, arch: Architecture) -> list[Path]:
        return [tuple(int(o) for o in p) for p in arch.choices["blocks"]]

    def log10_size(self) -> float:
        """Exact count of valid architectures (dynamic programming over the blocks' end levels)."""
        return log10_num_architectures()

    def choices_schema(self) -> dict[str, Any]:
        ops = ", ".join(f"{i} = {n}" for i, n in enumerate(OP_NAMES))
        layer = {"type": "integer", "minimum": 0, "maximum": NUM_OPS - 1}
        block = {"type": "array", "items": layer, "minItems": LAYERS_PER_BLOCK, "maxItems": LAYERS_PER_BLOCK}
        return {
            "type": "object",
            "additionalProperties": False,
            "required": ["blocks"],
            "properties": {
                "blocks": {
                    "type": "array",
                    "items": block,
                    "minItems": NUM_BLOCKS,
                    "maxItems": NUM_BLOCKS,
                    "description": f"{NUM_BLOCKS} blocks x {LAYERS_PER_BLOCK} op indices ({ops}); resolution never "
                    "rises and halves at most once per layer; blocks 1-3 read inputs at levels >= 1, 2, 2 (BossNAS's "
                    "restricted path sets)",
                }
            },
        }

    def blocks(self) -> list[BlockInfo]:
        return [BlockInfo(k, f"block{k}", list(block_candidates(k))) for k in range(NUM_BLOCKS)]

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info["ops"] = {str(i): {"name": n, "level": OP_LEVEL[i]} for i, n in enumerate(OP_NAMES)}
        info["levels"] = list(LEVEL_NAMES)
        info["block_candidates"] = [len(block_candidates(k)) for k in range(NUM_BLOCKS)]
        info["num_architectures"] = num_architectures()
        return info

    # --- networks ----------------------------------------------------------------------------------------------
    def macro(self, macro: Any = None, **overrides: Any) -> HyTraMacro:
        from searchspaces.hytra.ops import attention_heads

        m: HyTraMacro = super().macro(macro, **overrides)  # type: ignore[assignment]
        for level, p in enumerate(m.planes()):
            try:
                attention_heads(p, m.head_dim)
            except ValueError as exc:
                raise InvalidInput(
                    "macro.head_dim", f"{exc} (level {level}); pick a divisor of every bottleneck"
                ) from exc
        return m

    def build(self, arch: Architecture, macro: Any = None) -> nn.Module:
        from searchspaces.hytra.network import build_network

        self.validate(arch)
        return build_network(arch.choices, self.macro(macro).model_dump())

    def supernet(self, macro: Any = None, mode: str = "single_path") -> Supernet:
        if mode != "single_path":
            raise InvalidInput("mode", f"unknown supernet mode {mode!r}; allowed: single_path")
        from searchspaces.hytra.supernet import HyTraSupernet

        return HyTraSupernet(self, self.macro(macro))

    def diagram(self, arch: Architecture) -> str:
        """The architecture as an SVG diagram (:class:`nas.diagram.Diagram`; see searchspaces.hytra.diagram)."""
        from searchspaces.hytra.diagram import draw

        self.validate(arch)
        return draw(arch)

    def standalone_modules(self) -> list[ModuleType]:
        return [importlib.import_module(name) for name in STANDALONE_MODULES]

    # --- presets -----------------------------------------------------------------------------------------------
    def presets(self) -> dict[str, Preset]:
        from searchspaces.hytra.presets import hytra_presets

        return hytra_presets(self)
