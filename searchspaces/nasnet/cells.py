"""The NASNet cell: input adjustment, five two-branch blocks, and the concatenated output."""

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from nas.ops.conv import FactorizedReduce, ReLUConvBN
from nas.ops.drop import ScheduledDropPath
from searchspaces.nasnet.genotype import NUM_INPUTS, NUM_STATES, live_blocks
from searchspaces.nasnet.ops import OpConfig, make_op

PREPROCESS_MODES = ("raw", "identity", "conv", "factorized")


@dataclass(frozen=True)
class CellSpec:
    """Everything a cell needs to know about its place in the network (the network computes it).

    ``pre0`` says how input 0 (the output of cell k-2, h_{i-1}) is brought to ``filters`` channels at the size of
    input 1: "raw" (no input 0: the cell reads input 1 unprocessed, TF's ``prev_layer=None``), "identity" (already
    matching), "conv" (ReLU -> 1x1 conv -> BN) or "factorized" (ReLU -> factorized reduction, the input is twice
    as large). Input 1 (h_i) always passes ReLU -> 1x1 conv -> BN.
    """

    index: int
    total_cells: int
    reduction: bool
    filters: int
    c_prev_prev: int
    c_prev: int
    pre0: str
    kind: str = "nasnet"
    drop_path_keep: float = 1.0
    op_config: OpConfig = field(default_factory=OpConfig)
    stem: bool = False

    @property
    def drop_path_layer_scaled(self) -> bool:
        """NASNet scales the drop rate with depth ("v3"); DARTS uses one rate for every cell."""
        return self.kind != "darts"

    def input_channels(self) -> list[int]:
        """Channels of the cell's states 0..6 (after the input adjustment)."""
        c0 = self.c_prev_prev if self.pre0 == "raw" else self.filters
        return [c0, self.filters] + [self.filters] * (NUM_STATES - NUM_INPUTS)


def make_preprocess(mode: str, c_in: int, c_out: int, cfg: OpConfig) -> nn.Module:
    """The adjustment of input 0 named by ``mode`` (see :class:`CellSpec`)."""
    if mode in ("raw", "identity"):
        return nn.Identity()
    if mode == "conv":
        return ReLUConvBN(c_in, c_out, 1, 1, bn_eps=cfg.bn_eps, bn_momentum=cfg.bn_momentum)
    if mode == "factorized":
        return FactorizedReduce(c_in, c_out, True, cfg.bn_eps, cfg.bn_momentum)
    raise ValueError(f"unknown preprocess mode {mode!r}; allowed: {', '.join(PREPROCESS_MODES)}")


def make_concat_reduce(spec: CellSpec, state: int) -> nn.Module | None:
    """The adjustment of a concatenated state whose shape differs from the blocks' (TF ``_combine_unused_states``).

    Only inputs can differ: in a reduction cell they are twice as large (factorized reduction, no ReLU); a raw
    input may have other channels (1x1 conv + BN, no ReLU).
    """
    if state >= NUM_INPUTS:
        return None
    cfg = spec.op_config
    if spec.reduction:
        return FactorizedReduce(spec.input_channels()[state], spec.filters, False, cfg.bn_eps, cfg.bn_momentum)
    if spec.input_channels()[state] != spec.filters:
        return ReLUConvBN(
            spec.input_channels()[state], spec.filters, 1, 1, relu=False, bn_eps=cfg.bn_eps, bn_momentum=cfg.bn_momentum
        )
    return None


def make_concat_reducers(spec: CellSpec, states: list[int]) -> nn.ModuleDict:
    """The reductions of those ``states`` whose shape differs from the cell's output, keyed by state."""
    reducers = nn.ModuleDict()
    for j in states:
        module = make_concat_reduce(spec, j)
        if module is not None:
            reducers[str(j)] = module
    return reducers


def make_drop_path(spec: CellSpec) -> ScheduledDropPath | None:
    if spec.drop_path_keep >= 1.0:
        return None
    return ScheduledDropPath(spec.drop_path_keep, spec.index, spec.total_cells, spec.drop_path_layer_scaled)


def op_stride(spec: CellSpec, state: int) -> int:
    """Stride of an op reading ``state``: 2 in a reduction cell for the two cell inputs, else 1."""
    return 2 if spec.reduction and state < NUM_INPUTS else 1


def applies_drop_path(spec: CellSpec, op_name: str, op: nn.Module) -> bool:
    """NASNet drops every op output but ``skip_connect`` (TF: ``operation != 'none'``); DARTS drops every op that
    is not a plain identity (a strided skip, i.e. a factorized reduction, is dropped)."""
    if spec.kind == "darts":
        return not isinstance(op, nn.Identity)
    return op_name != "skip_connect"


class Cell(nn.Module):
    """A standalone cell for one genotype ``{"blocks": [...], "concat": [...]}`` (canonical index convention).

    Module names: ``pre0``, ``pre1``, ``ops["{block}_{slot}"]``, ``concat_reduce["{state}"]``. Blocks that do not
    reach the output are not built.
    """

    def __init__(self, spec: CellSpec, genotype: dict[str, Any]) -> None:
        super().__init__()
        self.spec = spec
        f = spec.filters
        cfg = spec.op_config
        blocks = [list(b) for b in genotype["blocks"]]
        self.concat = [int(j) for j in genotype["concat"]]
        self.pre0 = make_preprocess(spec.pre0, spec.c_prev_prev, f, cfg)
        self.pre1 = ReLUConvBN(spec.c_prev, f, 1, 1, bn_eps=cfg.bn_eps, bn_momentum=cfg.bn_momentum)
        channels = spec.input_channels()
        self.ops = nn.ModuleDict()
        self._blocks: list[tuple[int, int, int, bool, bool]] = []
        for b, (alive, (i1, o1, i2, o2)) in enumerate(zip(live_blocks(blocks, self.concat), blocks, strict=True)):
            if not alive:
                continue
            drops = []
            for s, (i, name) in enumerate(((int(i1), o1), (int(i2), o2))):
                op = make_op(name, channels[i], f, op_stride(spec, i), cfg)
                self.ops[f"{b}_{s}"] = op
                drops.append(applies_drop_path(spec, name, op))
            self._blocks.append((b, int(i1), int(i2), drops[0], drops[1]))
        self.concat_reduce = make_concat_reducers(spec, self.concat)
        self.drop_path = make_drop_path(spec)
        self.out_channels = len(self.concat) * f

    def _branch(self, key: str, x: Tensor, drop: bool) -> Tensor:
        y = self.ops[key](x)
        if drop and self.drop_path is not None:
            y = self.drop_path(y)
        return y

    def forward(self, s0: Tensor, s1: Tensor) -> Tensor:
        states: list[Tensor | None] = [self.pre0(s0), self.pre1(s1)] + [None] * (NUM_STATES - NUM_INPUTS)
        for b, i1, i2, d1, d2 in self._blocks:
            x1, x2 = states[i1], states[i2]
            assert x1 is not None and x2 is not None
            states[NUM_INPUTS + b] = self._branch(f"{b}_0", x1, d1) + self._branch(f"{b}_1", x2, d2)
        outs: list[Tensor] = []
        for j in self.concat:
            x = states[j]
            assert x is not None
            key = str(j)
            outs.append(self.concat_reduce[key](x) if key in self.concat_reduce else x)
        return outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)
