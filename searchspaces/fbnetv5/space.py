"""The FBNetV5 space (Wu et al., 2021; spec ../shared/specs/fbnetv5.md, docs/fbnetv5.md): an HRNet-like supernet
extended from FBNetV3-A whose searched choices are binary masks: which residual blocks are kept and, optionally,
which fusion edges. One head per task (classification, segmentation, detection); a hybrid option lets a block of the
H/16 and H/32 paths be a transformer block instead."""

from __future__ import annotations

import importlib
import math
import random
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator

from nas.arch import Architecture
from nas.errors import InvalidInput
from nas.space import MacroBase, OptionsBase, Preset, SearchSpace
from searchspaces.fbnetv5.encoding import (
    HYBRID_PATHS,
    IRF_BLOCK,
    NUM_PATHS,
    SKIP,
    TASK_NAMES,
    TRANSFORMER,
    fusion_edges,
    mask_shape,
)

if TYPE_CHECKING:
    from torch import nn

    from nas.supernet import Supernet

STANDALONE_MODULES = (
    "nas.ops.se",
    "nas.ops.mbconv",
    "nas.ops.conv",
    "nas.ops.attention",
    "searchspaces.fbnetv5.encoding",
    "searchspaces.fbnetv5.network",
)
WHERE = "architecture.choices"
STRUCTURE = ("stages", "extra_blocks", "depth_mult", "hybrid")
TaskName = Literal["classification", "segmentation", "detection"]


class FBNetV5Options(OptionsBase):
    """What is in the space. ``stages``, ``extra_blocks`` and ``depth_mult`` set how many blocks there are (so the
    length of the masks); the macro carries them too, filled from here."""

    stages: int = Field(4, ge=4, le=8, description="stages; path p starts at stage p, stages after 3 run all four")
    extra_blocks: int = Field(2, ge=0, le=8, description="blocks of a path in each stage after its own [assumed]")
    depth_mult: float = Field(1.0, gt=0.0, le=4.0, description="scales FBNetV3-A's repeats per group (ceil, >= 1)")
    search_fusion: bool = Field(True, description="fusion edges are searched masks (else all kept) [assumed]")
    hybrid: bool = Field(False, description="a block at H/16 or H/32 may be a transformer block (value 2)")


class FBNetV5Macro(MacroBase):
    """ImageNet defaults (224 px, stem stride 2: paths at H/4..H/32); for 32-64 px data use a small width_mult and
    stem_stride 1 (paths at H/2..H/16)."""

    tasks: list[TaskName] = Field(
        default_factory=lambda: list[TaskName](["classification"]), min_length=1, description="heads, in output order"
    )
    width_mult: float = Field(1.0, gt=0.0, le=8.0, description="width multiplier (multiples of 8)")
    stem_stride: Literal[1, 2] = Field(2, description="stride of the 3x3 stem conv")
    head_channels: int = Field(1984, ge=8, le=16_384, description="classification: width before the classifier")
    head_expansion: float = Field(6.0, gt=0.0, le=16.0, description="classification: per-path 1x1 expansion")
    cls_paths: list[int] = Field(default_factory=lambda: [0, 1, 2, 3], min_length=1, description="paths pooled")
    seg_channels: int = Field(128, ge=8, le=4096, description="segmentation: width of the fused features")
    det_path: int = Field(1, ge=0, le=3, description="detection: the path the head reads (1 = H/8) [assumed]")
    det_channels: int = Field(64, ge=8, le=4096, description="detection: width of the head's 3x3 conv")
    dropout: float = Field(0.2, ge=0.0, lt=1.0, description="classification: drop rate before the classifier")
    attn_heads: int = Field(4, ge=1, le=64, description="hybrid: attention heads of a transformer block")
    mlp_ratio: float = Field(2.0, gt=0.0, le=8.0, description="hybrid: MLP width of a transformer block")
    native_padding: bool = Field(False, description="FBNetV3-A's own paddings of two stride-2 blocks (the preset)")
    stages: int | None = Field(None, description="filled from space.options.stages")
    extra_blocks: int | None = Field(None, description="filled from space.options.extra_blocks")
    depth_mult: float | None = Field(None, description="filled from space.options.depth_mult")
    hybrid: bool | None = Field(None, description="filled from space.options.hybrid")

    @field_validator("tasks")
    @classmethod
    def _unique_tasks(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError(f"names a task twice: {v}")
        return v

    @field_validator("cls_paths")
    @classmethod
    def _paths(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v) or any(not 0 <= p < NUM_PATHS for p in v):
            raise ValueError(f"must be distinct path indices in 0..{NUM_PATHS - 1}, got {v}")
        return v


Position = tuple[str, int, int, int]
"""A searched mask entry: ("blocks", stage, path, index) or ("fusion", boundary, edge, 0)."""


class FBNetV5Space(SearchSpace):
    """Choices ``{"blocks": [[[0|1] * n_sp for each path p of stage s] for each stage s], "fusion": [[0|1] * edges
    of boundary b]}`` (see :mod:`searchspaces.fbnetv5.encoding`); with ``hybrid``, 2 = a transformer block on the
    H/16 and H/32 paths."""

    name = "fbnetv5"
    version = "1"
    Options = FBNetV5Options
    Macro = FBNetV5Macro
    tasks = TASK_NAMES

    @property
    def opts(self) -> FBNetV5Options:
        return self.options  # type: ignore[no-any-return]

    def structure(self) -> dict[str, Any]:
        o = self.opts
        return {"stages": o.stages, "extra_blocks": o.extra_blocks, "depth_mult": o.depth_mult}

    def shape(self) -> list[list[int]]:
        """Searched blocks per stage and path."""
        return mask_shape(self.structure())

    def positions(self) -> list[Position]:
        """Every searched entry of an architecture, in a fixed order (blocks, then fusion edges if searched)."""
        out: list[Position] = [
            ("blocks", s, p, j) for s, row in enumerate(self.shape()) for p, n in enumerate(row) for j in range(n)
        ]
        if self.opts.search_fusion:
            out += [("fusion", b, e, 0) for b in range(self.opts.stages - 1) for e in range(len(fusion_edges(b)))]
        return out

    def values(self, pos: Position) -> tuple[int, ...]:
        """The values a position may take."""
        if pos[0] == "blocks" and self.opts.hybrid and pos[2] in HYBRID_PATHS:
            return (SKIP, IRF_BLOCK, TRANSFORMER)
        return (0, 1)

    @staticmethod
    def _get(choices: dict[str, Any], pos: Position) -> int:
        kind, a, b, c = pos
        return int(choices["blocks"][a][b][c]) if kind == "blocks" else int(choices["fusion"][a][b])

    @staticmethod
    def _set(choices: dict[str, Any], pos: Position, value: int) -> None:
        kind, a, b, c = pos
        if kind == "blocks":
            choices["blocks"][a][b][c] = value
        else:
            choices["fusion"][a][b] = value

    def _filled(self, value: int, fusion: int) -> dict[str, Any]:
        return {
            "blocks": [[[value] * n for n in row] for row in self.shape()],
            "fusion": [[fusion] * len(fusion_edges(b)) for b in range(self.opts.stages - 1)],
        }

    def _from(self, pick: Any) -> Architecture:
        choices = self._filled(IRF_BLOCK, 1)
        for pos in self.positions():
            self._set(choices, pos, pick(pos))
        return self.make(choices)

    # --- architectures -------------------------------------------------------------------------------------
    def sample(self, rng: random.Random) -> Architecture:
        """Each searched entry uniformly from its values (an independent Bernoulli(0.5) per binary mask)."""
        return self._from(lambda pos: rng.choice(self.values(pos)))

    def mutate(self, arch: Architecture, rng: random.Random, rate: float = 0.1) -> Architecture:
        self.validate(arch)
        positions = self.positions()
        picked = {pos for pos in positions if rng.random() < rate} or {rng.choice(positions)}
        old = arch.choices
        return self._from(
            lambda pos: (
                rng.choice([v for v in self.values(pos) if v != self._get(old, pos)])
                if pos in picked
                else self._get(old, pos)
            )
        )

    def crossover(self, a: Architecture, b: Architecture, rng: random.Random) -> Architecture:
        self.validate(a)
        self.validate(b)
        return self._from(lambda pos: self._get((a if rng.random() < 0.5 else b).choices, pos))

    def validate(self, arch: Architecture) -> None:
        self.check_space(arch)
        choices = arch.choices
        if set(choices) != {"blocks", "fusion"}:
            raise InvalidInput(WHERE, f"must have exactly the keys 'blocks' and 'fusion', got {sorted(choices)}")
        self._validate_blocks(choices["blocks"])
        self._validate_fusion(choices["fusion"])

    def _validate_blocks(self, blocks: Any) -> None:
        shape = self.shape()
        where = f"{WHERE}.blocks"
        if not isinstance(blocks, list) or len(blocks) != len(shape):
            raise InvalidInput(where, f"must be a list of {len(shape)} stages (blocks per path: {shape})")
        for s, (row, want) in enumerate(zip(blocks, shape, strict=True)):
            if not isinstance(row, list) or len(row) != len(want):
                raise InvalidInput(f"{where}[{s}]", f"must be a list of {len(want)} paths (blocks per path: {want})")
            for p, (masks, n) in enumerate(zip(row, want, strict=True)):
                if not isinstance(masks, list) or len(masks) != n:
                    raise InvalidInput(f"{where}[{s}][{p}]", f"must be a list of {n} block masks")
                allowed = self.values(("blocks", s, p, 0))
                for j, v in enumerate(masks):
                    if not isinstance(v, int) or isinstance(v, bool) or v not in allowed:
                        extra = (
                            "" if len(allowed) == 3 else " (2, a transformer block, needs options.hybrid on H/16, H/32)"
                        )
                        raise InvalidInput(
                            f"{where}[{s}][{p}][{j}]", f"{v!r} is not allowed; allowed: {list(allowed)}{extra}"
                        )

    def _validate_fusion(self, fusion: Any) -> None:
        where = f"{WHERE}.fusion"
        n = self.opts.stages - 1
        if not isinstance(fusion, list) or len(fusion) != n:
            raise InvalidInput(where, f"must be a list of {n} boundaries between stages")
        for b, edges in enumerate(fusion):
            want = fusion_edges(b)
            if not isinstance(edges, list) or len(edges) != len(want):
                names = ", ".join(f"{s}->{d}" for s, d in want) or "none"
                raise InvalidInput(f"{where}[{b}]", f"must be a list of {len(want)} edge masks ({names})")
            for e, v in enumerate(edges):
                if not isinstance(v, int) or isinstance(v, bool) or v not in (0, 1):
                    raise InvalidInput(f"{where}[{b}][{e}]", f"{v!r} is not allowed; allowed: [0, 1]")
                if v == 0 and not self.opts.search_fusion:
                    raise InvalidInput(
                        f"{where}[{b}][{e}]", "fusion edges are not searched here (options.search_fusion is off): 1"
                    )

    def log10_size(self) -> float:
        return sum(math.log10(len(self.values(pos))) for pos in self.positions())

    def choices_schema(self) -> dict[str, Any]:
        block_values = [0, 1, 2] if self.opts.hybrid else [0, 1]
        stages = [
            {
                "type": "array",
                "minItems": len(row),
                "maxItems": len(row),
                "prefixItems": [
                    {"type": "array", "minItems": n, "maxItems": n, "items": {"enum": block_values}} for n in row
                ],
            }
            for row in self.shape()
        ]
        fusion_values = [0, 1] if self.opts.search_fusion else [1]
        fusion = [
            {"type": "array", "minItems": len(fusion_edges(b)), "maxItems": len(fusion_edges(b)),
             "items": {"enum": fusion_values}}
            for b in range(self.opts.stages - 1)
        ]  # fmt: skip
        return {
            "type": "object",
            "additionalProperties": False,
            "required": ["blocks", "fusion"],
            "properties": {
                "blocks": {
                    "type": "array",
                    "prefixItems": stages,
                    "minItems": len(stages),
                    "maxItems": len(stages),
                    "description": "per stage, per path: 1 keeps a residual block, 0 skips it (2: transformer block, "
                    "hybrid only, H/16 and H/32)",
                },
                "fusion": {
                    "type": "array",
                    "prefixItems": fusion,
                    "minItems": len(fusion),
                    "maxItems": len(fusion),
                    "description": "per boundary between stages: 1 keeps a fusion edge (source -> target path, "
                    "target-major order), 0 drops it",
                },
            },
        }

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info["paths"] = ["H/4", "H/8", "H/16", "H/32"]
        info["searched_blocks"] = self.shape()
        info["fusion_edges"] = [[f"{s}->{d}" for s, d in fusion_edges(b)] for b in range(self.opts.stages - 1)]
        info["num_masks"] = len(self.positions())
        return info

    # --- networks ------------------------------------------------------------------------------------------
    def macro(self, macro: Any = None, **overrides: Any) -> FBNetV5Macro:
        """The macro with ``stages``, ``extra_blocks``, ``depth_mult`` and ``hybrid`` taken from the space's options
        (a macro giving another value is refused: they shape the architecture, so they are space options)."""
        m = super().macro(macro, **overrides)
        for key in STRUCTURE:
            have, want = getattr(m, key), getattr(self.opts, key)
            if have is not None and have != want:
                raise InvalidInput(f"macro.{key}", f"is {have!r} but space.options.{key} is {want!r}; set it there")
        return m.model_copy(update={key: getattr(self.opts, key) for key in STRUCTURE})  # type: ignore[return-value]

    def build(self, arch: Architecture, macro: Any = None) -> nn.Module:
        from searchspaces.fbnetv5.network import build_network

        self.validate(arch)
        return build_network(arch.choices, self.macro(macro).model_dump())

    def supernet(self, macro: Any = None, mode: str = "single_path") -> Supernet:
        if mode != "single_path":
            raise InvalidInput("mode", f"unknown supernet mode {mode!r}; allowed: single_path")
        from searchspaces.fbnetv5.supernet import FBNetV5Supernet

        return FBNetV5Supernet(self, self.macro(macro))

    def diagram(self, arch: Architecture) -> str:
        """The architecture as an SVG diagram (:class:`nas.diagram.Diagram`; see searchspaces.fbnetv5.diagram)."""
        from searchspaces.fbnetv5.diagram import draw

        self.validate(arch)
        return draw(arch, self.structure())

    def standalone_modules(self) -> list[ModuleType]:
        return [importlib.import_module(name) for name in STANDALONE_MODULES]

    def presets(self) -> dict[str, Preset]:
        from searchspaces.fbnetv5.presets import fbnetv5_presets

        return fbnetv5_presets(self)
