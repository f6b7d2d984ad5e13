"""The NASNet cell search space (Zoph et al. 2018): options, macro settings, sampling, mutation, validation."""

from __future__ import annotations

import math
import random
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, ValidationInfo, field_validator

from nas.arch import Architecture
from nas.errors import InvalidInput
from nas.space import FairPaths, MacroBase, OptionsBase, Preset, SearchSpace, Suggest
from nas.spec import Strict
from searchspaces.nasnet.genotype import (
    ATTENTION_OP,
    CELL_TYPES,
    EXTRA_OPS,
    NUM_BLOCKS,
    NUM_INPUTS,
    NUM_STATES,
    OP_NAMES,
    OP_SETS,
)
from searchspaces.nasnet.genotype import unused_states as _unused

if TYPE_CHECKING:
    from torch import nn

    from nas.supernet import Supernet

ALLOWED_OPS = (*OP_NAMES, *EXTRA_OPS, ATTENTION_OP)
# modules whose concatenated source defines build_network(choices, macro) (torch only), in dependency order
STANDALONE_MODULES = (
    "nas.ops.drop",
    "nas.ops.conv",
    "nas.ops.attention",
    "searchspaces.nasnet.genotype",
    "searchspaces.nasnet.ops",
    "searchspaces.nasnet.cells",
    "searchspaces.nasnet.network",
)


class SupernetSettings(Strict):
    """How the single-path supernet (SPOS, FairNAS) starts and reads its last cell; a path's network is the same
    either way (see docs/nasnet.md, "Why the single-path supernet learns")."""

    init: Literal["identity", "random"] = Field(
        "identity",
        description="identity: candidate convs start as the identity on channels and readers of a cell output "
        "with one weight block per state; random: PyTorch's default initialisation (the supernet then stays near "
        "chance at small budgets)",
    )
    head_norm: bool = Field(
        True, description="normalise the classifier's pooled input (folded into the classifier on extraction)"
    )


class NASNetOptions(OptionsBase):
    """What is in the space: the candidate ops, and the hybrid self-attention op."""

    ops: list[str] = Field(
        default_factory=lambda: list(OP_NAMES),
        description="candidate ops: a list (of the 13, dil_conv_5x5 and none) or a named set: 'nasnet' (the 13), "
        "'darts' (DARTS's 8: none, max_pool_3x3, avg_pool_3x3, skip_connect, sep_conv_3x3, sep_conv_5x5, "
        "dil_conv_3x3, dil_conv_5x5)",
    )
    attention: bool = Field(False, description="add the 'self_attention' op (multi-head attention over H*W tokens)")
    attention_heads: int = Field(2, ge=1, le=64, description="heads of the self_attention op")
    supernet: SupernetSettings = Field(
        default_factory=SupernetSettings, description="single-path supernet settings (no effect on a path's network)"
    )

    @field_validator("ops", mode="before")
    @classmethod
    def _expand_op_set(cls, ops: Any) -> Any:
        if isinstance(ops, str):
            if ops not in OP_SETS:
                raise ValueError(f"unknown op set {ops!r}; allowed: {', '.join(OP_SETS)} (or a list of ops)")
            return list(OP_SETS[ops])
        return ops

    @field_validator("ops")
    @classmethod
    def _check_ops(cls, ops: list[str]) -> list[str]:
        if not ops:
            raise ValueError(f"must name at least one op; allowed: {', '.join(ALLOWED_OPS)}")
        for op in ops:
            if op not in ALLOWED_OPS:
                raise ValueError(f"unknown op {op!r}; allowed: {', '.join(ALLOWED_OPS)}")
        if len(set(ops)) != len(ops):
            raise ValueError("lists an op twice")
        return ops


class NASNetMacro(MacroBase):
    """How the network around the cells looks (see docs/nasnet.md)."""

    kind: Literal["nasnet", "pnasnet", "darts"] = Field(
        "nasnet", description="macro-architecture: NASNet (reduction cells between stacks), PNASNet, DARTS"
    )
    stem: Literal["cifar", "imagenet"] = "cifar"
    cells_per_stack: int = Field(2, ge=1, le=64, description="N: normal cells per stack (nasnet, pnasnet)")
    filters: int = Field(16, ge=2, le=8192, description="F: filters of the first stack's cells (nasnet, pnasnet)")
    stem_multiplier: float = Field(3.0, gt=0, le=64)
    skip_reduction_layer_input: bool = Field(
        False, description="nasnet: the normal cell after a reduction reads the output before the previous cell"
    )
    layers: int = Field(8, ge=3, le=256, description="darts: total cells, reductions at layers//3, 2*layers//3")
    channels: int = Field(16, ge=2, le=8192, description="darts: C, channels of the first cells")
    drop_path_keep: float = Field(1.0, gt=0, le=1, description="ScheduledDropPath keep probability (1 = off)")
    dropout: float = Field(0.0, ge=0, lt=1, description="drop rate before the classifier")
    aux_head: bool = False
    image_size: int = Field(32, ge=8, le=4096, description="training image side; sets the aux head's kernel")
    bn_eps: float = Field(1e-3, gt=0, le=1)
    bn_momentum: float = Field(0.1, gt=0, le=1)
    attention_heads: int | None = Field(None, ge=1, le=64, description="None: the space option")

    @field_validator("filters")
    @classmethod
    def _check_filters(cls, f: int, info: ValidationInfo) -> int:
        if info.data.get("stem") == "imagenet" and f < 8:
            raise ValueError("must be at least 8 with the ImageNet stem (its stem cells use F/4 >= 2 filters)")
        return f

    def for_inference(self) -> NASNetMacro:
        """Without the auxiliary head, which only serves training (the papers count params without it)."""
        return self.model_copy(update={"aux_head": False})


class NASNetSpace(SearchSpace, FairPaths, Suggest):
    """NASNet cell space: a normal and a reduction cell of 5 blocks each (see docs/nasnet.md), with FairNAS groups
    (:class:`nas.space.FairPaths`) and Optuna define-by-run proposals (:class:`nas.space.Suggest`)."""

    name = "nasnet"
    version = "1"
    Options = NASNetOptions
    Macro = NASNetMacro
    supports_differentiable = True

    options: NASNetOptions

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        ops = list(self.options.ops)
        if self.options.attention and ATTENTION_OP not in ops:
            ops.append(ATTENTION_OP)
        self.op_names: tuple[str, ...] = tuple(ops)

    # --- architectures -----------------------------------------------------------------------------------------
    def _sample_cell(self, rng: random.Random) -> dict[str, Any]:
        blocks = []
        for b in range(NUM_BLOCKS):
            n = NUM_INPUTS + b
            blocks.append([rng.randrange(n), rng.choice(self.op_names), rng.randrange(n), rng.choice(self.op_names)])
        return {"blocks": blocks, "concat": _unused(blocks)}

    def sample(self, rng: random.Random) -> Architecture:
        return self.make({t: self._sample_cell(rng) for t in CELL_TYPES})

    def fair_paths(self, rng: random.Random) -> list[Architecture]:
        """FairNAS strict fairness, extended to the cells' inputs: a group of :meth:`fair_group_size` paths in which
        every op slot takes every op equally often (``group / len(ops)`` times) and every input slot takes every input
        choice at least once, all equally often up to one. Each path's concat is its unused states."""
        size = self.fair_group_size()
        paths: list[dict[str, Any]] = [{} for _ in range(size)]
        for cell in CELL_TYPES:
            columns = [
                [_balanced(self._options_for(b, slot), size, rng) for slot in range(4)] for b in range(NUM_BLOCKS)
            ]
            for k in range(size):
                blocks = [[columns[b][slot][k] for slot in range(4)] for b in range(NUM_BLOCKS)]
                paths[k][cell] = {"blocks": blocks, "concat": _unused(blocks)}
        return [self.make(c) for c in paths]

    def fair_group_size(self) -> int:
        """The smallest multiple of the number of ops that is at least the most input choices of a block (6): every
        op then appears equally often in a group, and every input choice at least once."""
        n, most_inputs = len(self.op_names), NUM_INPUTS + NUM_BLOCKS - 1
        return n * math.ceil(most_inputs / n)

    def _options_for(self, b: int, slot: int) -> list[Any]:
        return list(range(NUM_INPUTS + b)) if slot % 2 == 0 else list(self.op_names)

    def mutate(self, arch: Architecture, rng: random.Random, rate: float = 0.1) -> Architecture:
        self.validate(arch)
        choices = {t: {"blocks": [list(b) for b in arch.choices[t]["blocks"]]} for t in CELL_TYPES}
        positions = [
            (t, b, k)
            for t in CELL_TYPES
            for b in range(NUM_BLOCKS)
            for k in range(4)
            if len(self._options_for(b, k)) > 1
        ]
        changed = False
        for t, b, k in positions:
            if rng.random() < rate:
                changed |= self._resample(choices[t]["blocks"][b], b, k, rng)
        if not changed and positions:
            t, b, k = rng.choice(positions)
            self._resample(choices[t]["blocks"][b], b, k, rng)
        for t in CELL_TYPES:
            old = arch.choices[t]
            keep_custom = list(old["concat"]) != _unused(old["blocks"])
            choices[t]["concat"] = list(old["concat"]) if keep_custom else _unused(choices[t]["blocks"])
        return self.make(choices)

    def _resample(self, block: list[Any], b: int, k: int, rng: random.Random) -> bool:
        alternatives = [v for v in self._options_for(b, k) if v != block[k]]
        if not alternatives:
            return False
        block[k] = rng.choice(alternatives)
        return True

    def crossover(self, a: Architecture, b: Architecture, rng: random.Random) -> Architecture:
        self.validate(a)
        self.validate(b)
        child: dict[str, Any] = {}
        for t in CELL_TYPES:
            blocks = [list((a if rng.random() < 0.5 else b).choices[t]["blocks"][i]) for i in range(NUM_BLOCKS)]
            child[t] = {"blocks": blocks, "concat": _unused(blocks)}
        return self.make(child)

    def validate(self, arch: Architecture) -> None:
        self.check_space(arch)
        choices = arch.choices
        where = "architecture.choices"
        if set(choices) != set(CELL_TYPES):
            raise InvalidInput(where, f"must have exactly the keys 'normal' and 'reduce', got {sorted(choices)}")
        for t in CELL_TYPES:
            self._validate_cell(choices[t], f"{where}.{t}")

    def _validate_cell(self, cell: Any, where: str) -> None:
        if not isinstance(cell, dict) or set(cell) != {"blocks", "concat"}:
            got = sorted(cell) if isinstance(cell, dict) else type(cell).__name__
            raise InvalidInput(where, f"must be an object with exactly 'blocks' and 'concat', got {got}")
        blocks = cell["blocks"]
        if not isinstance(blocks, list) or len(blocks) != NUM_BLOCKS:
            raise InvalidInput(f"{where}.blocks", f"must be a list of {NUM_BLOCKS} blocks [in1, op1, in2, op2]")
        for b, block in enumerate(blocks):
            bw = f"{where}.blocks[{b}]"
            if not isinstance(block, list) or len(block) != 4:
                raise InvalidInput(bw, "must be a list [in1, op1, in2, op2]")
            for k in (0, 2):
                v = block[k]
                if not _is_int(v) or not 0 <= v < NUM_INPUTS + b:
                    raise InvalidInput(
                        f"{bw}[{k}]", f"input index {v!r} out of range; block {b} may read 0..{NUM_INPUTS + b - 1}"
                    )
            for k in (1, 3):
                if block[k] not in self.op_names:
                    raise InvalidInput(f"{bw}[{k}]", f"unknown op {block[k]!r}; allowed: {', '.join(self.op_names)}")
        concat = cell["concat"]
        cw = f"{where}.concat"
        if not isinstance(concat, list) or not concat:
            raise InvalidInput(cw, "must be a non-empty list of state indices 0..6")
        for k, j in enumerate(concat):
            if not _is_int(j) or not 0 <= j < NUM_STATES:
                raise InvalidInput(f"{cw}[{k}]", f"state index {j!r} out of range 0..{NUM_STATES - 1}")
        if concat != sorted(set(concat)):
            raise InvalidInput(cw, f"must be sorted and without duplicates, got {concat}")

    def log10_size(self) -> float:
        """Ordered (in, op) pairs per block, normal and reduction cells independent; concat is implied."""
        k = len(self.op_names)
        per_cell = sum(2 * math.log10((NUM_INPUTS + b) * k) for b in range(NUM_BLOCKS))
        return 2 * per_cell

    def choices_schema(self) -> dict[str, Any]:
        def block(b: int) -> dict[str, Any]:
            idx = {"type": "integer", "minimum": 0, "maximum": NUM_INPUTS + b - 1}
            op = {"type": "string", "enum": list(self.op_names)}
            return {"type": "array", "prefixItems": [idx, op, idx, op], "minItems": 4, "maxItems": 4}

        cell = {
            "type": "object",
            "additionalProperties": False,
            "required": ["blocks", "concat"],
            "properties": {
                "blocks": {
                    "type": "array",
                    "prefixItems": [block(b) for b in range(NUM_BLOCKS)],
                    "minItems": NUM_BLOCKS,
                    "maxItems": NUM_BLOCKS,
                    "description": "[in1, op1, in2, op2]; 0 = h_{i-1} (cell k-2), 1 = h_i (cell k-1), 2+ = blocks",
                },
                "concat": {
                    "type": "array",
                    "items": {"type": "integer", "minimum": 0, "maximum": NUM_STATES - 1},
                    "minItems": 1,
                    "uniqueItems": True,
                    "description": "sorted states concatenated as the cell output",
                },
            },
        }
        return {
            "type": "object",
            "additionalProperties": False,
            "required": list(CELL_TYPES),
            "properties": {t: cell for t in CELL_TYPES},
        }

    # --- networks ----------------------------------------------------------------------------------------------
    def macro(self, macro: Any = None, **overrides: Any) -> NASNetMacro:
        m: NASNetMacro = super().macro(macro, **overrides)  # type: ignore[assignment]
        if m.attention_heads is None:
            m = m.model_copy(update={"attention_heads": self.options.attention_heads})
        if m.kind != "darts":
            if int(m.filters * m.stem_multiplier if m.stem == "cifar" else 32 * m.stem_multiplier) < 1:
                raise InvalidInput("macro.stem_multiplier", "gives a stem with no filters")
        elif m.stem == "cifar" and int(m.channels * m.stem_multiplier) < 1:
            raise InvalidInput("macro.stem_multiplier", "gives a stem with no filters")
        return m

    def build(self, arch: Architecture, macro: Any = None) -> nn.Module:
        from searchspaces.nasnet.network import build_network

        self.validate(arch)
        return build_network(arch.choices, self.macro(macro).model_dump())

    def supernet(self, macro: Any = None, mode: str = "single_path") -> Supernet:
        if mode == "single_path":
            from searchspaces.nasnet.supernet import NASNetSupernet

            return NASNetSupernet(self, self.macro(macro))
        if mode == "differentiable":
            from searchspaces.nasnet.darts_supernet import DartsSupernet

            return DartsSupernet(self, self.macro(macro))
        raise InvalidInput("mode", f"unknown supernet mode {mode!r}; allowed: single_path, differentiable")

    def suggest(self, trial: Any) -> Architecture:
        """Define-by-run sampling for Optuna (one categorical parameter per input and op)."""
        from searchspaces.nasnet.suggest import suggest_nasnet

        return suggest_nasnet(self, trial)

    def diagram(self, arch: Architecture) -> str:
        """The architecture as an SVG diagram (:class:`nas.diagram.Diagram`; see searchspaces.nasnet.diagram)."""
        from searchspaces.nasnet.diagram import draw

        self.validate(arch)
        return draw(arch)

    def standalone_modules(self) -> list[ModuleType]:
        import importlib

        return [importlib.import_module(name) for name in STANDALONE_MODULES]

    # --- presets -----------------------------------------------------------------------------------------------
    def presets(self) -> dict[str, Preset]:
        from searchspaces.nasnet.presets import nasnet_presets

        return nasnet_presets(self)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _balanced(options: list[Any], size: int, rng: random.Random) -> list[Any]:
    """``size`` draws of ``options`` in random order in which each option appears ``size // len(options)`` or one
    more times (consecutive random permutations, cut at ``size``)."""
    out: list[Any] = []
    while len(out) < size:
        out.extend(rng.sample(options, len(options)))
    return out[:size]
