"""Single-path weight-sharing supernet of the NASNet cell space (SPOS / ENAS style).

Sharing scheme: every (cell, block, input slot, candidate input, op) has its own op weights (spec section 7), so a
path's ops are exactly the standalone network's. A cell's output is the concatenation of its active concat set,
like the standalone cell; the modules that read a cell output (the next cells' input adjustments, the auxiliary
head and the classifier) hold weights for the widest possible output (all 7 states) and use the input-channel
columns of the active states. :meth:`NASNetSupernet.extract` copies those columns, so the extracted network
computes the same function as the supernet with that path active. Only the active ops run.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from nas.ops.conv import ReLUConvBN
from nas.supernet import Supernet, fitting, inherit_weights
from searchspaces.nasnet.cells import (
    CellSpec,
    applies_drop_path,
    make_concat_reducers,
    make_drop_path,
    make_preprocess,
    op_stride,
)
from searchspaces.nasnet.genotype import NUM_BLOCKS, NUM_INPUTS, NUM_STATES, live_blocks
from searchspaces.nasnet.network import AuxHead, CellNetwork
from searchspaces.nasnet.ops import make_op

if TYPE_CHECKING:
    from nas.arch import Architecture
    from searchspaces.nasnet.space import NASNetMacro, NASNetSpace


def _columns(concat: list[int], filters: int) -> list[int]:
    """Input columns, in a 7-state-wide layout, of a cell output holding the states ``concat``."""
    return [j * filters + c for j in concat for c in range(filters)]


class _Columns:
    """A column selection with a per-device tensor cache."""

    def __init__(self, cols: list[int]) -> None:
        self.cols = cols
        self._cache: dict[torch.device, Tensor] = {}

    def on(self, device: torch.device) -> Tensor:
        t = self._cache.get(device)
        if t is None:
            t = self._cache[device] = torch.tensor(self.cols, dtype=torch.long, device=device)
        return t


class SlicedLinear(nn.Linear):
    """A linear layer for the widest input; reads the columns set in ``cols`` (all when None)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__(c_in, c_out)
        self.cols: _Columns | None = None

    def forward(self, x: Tensor) -> Tensor:
        if self.cols is None:
            return super().forward(x)
        return F.linear(x, self.weight.index_select(1, self.cols.on(x.device)), self.bias)


class SlicedAuxHead(AuxHead):
    """The auxiliary head whose first 1x1 conv reads the columns set in ``cols``."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.cols: _Columns | None = None

    def first_conv(self, x: Tensor) -> Tensor:
        if self.cols is None:
            return self.conv1(x)
        return F.conv2d(x, self.conv1.weight.index_select(1, self.cols.on(x.device)))


class SuperCell(nn.Module):
    """All candidate ops of one cell: ``choices["{block}_{slot}"]["{input}"]["{op}"]``."""

    def __init__(self, spec: CellSpec, op_names: tuple[str, ...]) -> None:
        super().__init__()
        self.spec = spec
        f, cfg = spec.filters, spec.op_config
        self.pre0 = make_preprocess(spec.pre0, spec.c_prev_prev, f, cfg)
        self.pre1 = ReLUConvBN(spec.c_prev, f, 1, 1, bn_eps=cfg.bn_eps, bn_momentum=cfg.bn_momentum)
        channels = spec.input_channels()
        self.choices = nn.ModuleDict()
        for b in range(NUM_BLOCKS):
            for s in range(2):
                self.choices[f"{b}_{s}"] = nn.ModuleDict(
                    {
                        str(j): nn.ModuleDict(
                            {o: make_op(o, channels[j], f, op_stride(spec, j), cfg) for o in op_names}
                        )
                        for j in range(NUM_INPUTS + b)
                    }
                )
        self.concat_reduce = make_concat_reducers(spec, list(range(NUM_INPUTS)))
        self.drop_path = make_drop_path(spec)
        self.out_channels = NUM_STATES * f  # widest output; the active one is len(concat) * f
        self.concat: list[int] = []
        self._blocks: list[tuple[int, int, str, int, str, bool, bool]] = []
        self.cols0: _Columns | None = None
        self.cols1: _Columns | None = None
        self.pre0_identity = False

    def activate(self, genotype: dict[str, Any], cols0: list[int] | None, cols1: list[int] | None) -> None:
        """Route through ``genotype``; ``cols0``/``cols1`` are the columns of the inputs (None: fixed width)."""
        blocks = genotype["blocks"]
        self.concat = [int(j) for j in genotype["concat"]]
        self._blocks = []
        for b, (alive, (i1, o1, i2, o2)) in enumerate(zip(live_blocks(blocks, self.concat), blocks, strict=True)):
            if alive:
                d1 = applies_drop_path(self.spec, o1, self.choices[f"{b}_0"][str(i1)][o1])
                d2 = applies_drop_path(self.spec, o2, self.choices[f"{b}_1"][str(i2)][o2])
                self._blocks.append((b, int(i1), o1, int(i2), o2, d1, d2))
        self.cols0 = _Columns(cols0) if cols0 is not None else None
        self.cols1 = _Columns(cols1) if cols1 is not None else None
        # the standalone network skips the 1x1 adjustment of input 0 when it already has F channels (NASNet rule)
        self.pre0_identity = (
            self.spec.kind != "darts"
            and self.spec.pre0 == "conv"
            and cols0 is not None
            and len(cols0) == self.spec.filters
        )

    def _pre(self, module: nn.Module, x: Tensor, cols: _Columns | None) -> Tensor:
        if cols is None or isinstance(module, nn.Identity):
            return module(x)  # type: ignore[no-any-return]
        return module.forward_sliced(x, cols.on(x.device))  # type: ignore[operator,no-any-return]

    def _branch(self, b: int, s: int, i: int, op: str, x: Tensor, drop: bool) -> Tensor:
        y = self.choices[f"{b}_{s}"][str(i)][op](x)
        if drop and self.drop_path is not None:
            y = self.drop_path(y)
        return y  # type: ignore[no-any-return]

    def forward(self, s0: Tensor, s1: Tensor) -> Tensor:
        p = s0 if self.pre0_identity else self._pre(self.pre0, s0, self.cols0)
        states: list[Tensor | None] = [p, self._pre(self.pre1, s1, self.cols1)]
        states += [None] * (NUM_STATES - NUM_INPUTS)
        for b, i1, o1, i2, o2, d1, d2 in self._blocks:
            x1, x2 = states[i1], states[i2]
            assert x1 is not None and x2 is not None
            states[NUM_INPUTS + b] = self._branch(b, 0, i1, o1, x1, d1) + self._branch(b, 1, i2, o2, x2, d2)
        outs: list[Tensor] = []
        for j in self.concat:
            x = states[j]
            assert x is not None
            key = str(j)
            outs.append(self.concat_reduce[key](x) if key in self.concat_reduce else x)
        return outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)


class NASNetSupernet(Supernet):
    """Single-path supernet over a NASNet macro; ``forward`` follows the path set by :meth:`set_active`."""

    mode = "single_path"

    def __init__(self, space: NASNetSpace, macro: NASNetMacro) -> None:
        super().__init__()
        self.space = space
        self.macro = macro
        op_names = space.op_names
        self.net = CellNetwork(
            macro.model_dump(),
            lambda spec: SuperCell(spec, op_names),
            make_classifier=SlicedLinear,
            make_aux=SlicedAuxHead,
        )
        self.active: Architecture | None = None
        self.set_active(space.sample(random.Random(0)))

    # --- routing -----------------------------------------------------------------------------------------------
    def _layout(self, arch: Architecture) -> dict[str, list[int] | None]:
        """Columns read by every consumer of a cell output ("cells.i.pre0", "cells.i.pre1", "aux", "classifier")."""
        n_stems = len(self.net.stems)
        specs = self.net.specs

        def cols_of(output: int) -> list[int] | None:
            cell = output - n_stems
            if output < 0 or cell < 0:
                return None  # a stem output or the raw input: fixed width
            genotype = arch.choices["reduce" if specs[cell].reduction else "normal"]
            return _columns(genotype["concat"], specs[cell].filters)

        layout: dict[str, list[int] | None] = {}
        for i in range(len(specs)):
            pp = self.net._prev_prev[i]
            layout[f"cells.{i}.pre1"] = cols_of(n_stems + i - 1)
            layout[f"cells.{i}.pre0"] = cols_of(pp) if pp >= 0 else None
        layout["classifier"] = cols_of(n_stems + len(specs) - 1)
        layout["aux"] = cols_of(n_stems + self.net.aux_index) if self.net.aux is not None else None
        return layout

    def set_active(self, arch: Architecture) -> None:
        self.space.validate(arch)
        layout = self._layout(arch)
        for i, (cell, spec) in enumerate(zip(self.net.cells, self.net.specs, strict=True)):
            genotype = arch.choices["reduce" if spec.reduction else "normal"]
            cell.activate(genotype, layout[f"cells.{i}.pre0"], layout[f"cells.{i}.pre1"])  # type: ignore[operator]
        classifier_cols = layout["classifier"]
        self.net.classifier.cols = _Columns(classifier_cols) if classifier_cols is not None else None
        if self.net.aux is not None:
            aux_cols = layout["aux"]
            self.net.aux.cols = _Columns(aux_cols) if aux_cols is not None else None
        self.active = arch

    def set_progress(self, fraction: float) -> None:
        self.net.set_progress(fraction)

    def forward(self, x: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        return self.net(x)  # type: ignore[no-any-return]

    # --- extraction --------------------------------------------------------------------------------------------
    def _source_key(self, key: str, arch: Architecture) -> tuple[str, str | None]:
        """The supernet key holding standalone ``key``, and the consumer whose columns to take (or None)."""
        parts = key.split(".")
        if parts[0] == "cells" and parts[2] == "ops":
            i, (b, s) = int(parts[1]), (int(v) for v in parts[3].split("_"))
            genotype = arch.choices["reduce" if self.net.specs[i].reduction else "normal"]
            block = genotype["blocks"][b]
            j, op = block[2 * s], block[2 * s + 1]
            return ".".join(["cells", parts[1], "choices", parts[3], str(j), op, *parts[4:]]), None
        if parts[0] == "cells" and parts[2] in ("pre0", "pre1"):
            return key, ".".join(parts[:3])
        if parts[0] in ("aux", "classifier"):
            return key, parts[0]
        return key, None

    @torch.no_grad()
    def extract(self, arch: Architecture) -> nn.Module:
        """``space.build(arch, macro)`` carrying this supernet's weights for the path ``arch``."""
        net = self.space.build(arch, self.macro)
        layout = self._layout(arch)
        source = self.net.state_dict()

        def tensor_for(key: str, target: Tensor) -> Tensor:
            skey, consumer = self._source_key(key, arch)
            tensor = source[skey]
            cols = layout.get(consumer) if consumer is not None else None
            if tensor.shape != target.shape and cols is not None and tensor.dim() >= 2:
                # a layer reading a cell output holds weights for the widest concat set: keep this path's columns
                tensor = tensor.index_select(1, torch.tensor(cols, dtype=torch.long, device=tensor.device))
            return fitting({skey: tensor}, skey, key, target)

        return inherit_weights(net, self, tensor_for)
